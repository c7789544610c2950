"""Word alignments from attention weights: sentencepiece pieces merged into whitespace words.

A piece that starts with sentencepiece's word marker U+2581 starts a new word (the
first piece always does), so the words are the whitespace-separated words of the
normalised source line and of the output text. Merging: a source word's weight is
the sum of its pieces' columns (the attention mass it got); an output word's row is
the mean of its pieces' rows. The EOS row and column are dropped, so a row sums to
at most 1.

- hard: Pharaoh format, `i-j` for source word i and output word j, one pair per
  output word (its source word of largest weight), as fairseq and Marian print it;
- soft: one comma-separated row of source-word weights per output word, rows
  separated by spaces.
"""

from __future__ import annotations

import numpy as np

WORD_START = "\u2581"
MODES = ("hard", "soft")


def word_index(pieces: list[str]) -> list[int]:
    """The word number of each piece."""
    index, word = [], -1
    for piece in pieces:
        if piece.startswith(WORD_START) or word < 0:
            word += 1
        index.append(word)
    return index


def word_weights(weights: np.ndarray, src_pieces: list[str], out_pieces: list[str]) -> np.ndarray:
    """[output words, source words] from piece weights [>= len(out_pieces), >= len(src_pieces)]."""
    if not src_pieces or not out_pieces:
        return np.zeros((len(set(word_index(out_pieces))), len(set(word_index(src_pieces)))))
    src_word, out_word = np.array(word_index(src_pieces)), np.array(word_index(out_pieces))
    pieces = np.asarray(weights, np.float64)[: len(out_pieces), : len(src_pieces)]
    by_src_word = np.zeros((len(out_pieces), src_word[-1] + 1))
    np.add.at(by_src_word.T, src_word, pieces.T)
    merged = np.zeros((out_word[-1] + 1, src_word[-1] + 1))
    np.add.at(merged, out_word, by_src_word)
    return merged / np.bincount(out_word)[:, None]


def format_alignment(words: np.ndarray, mode: str) -> str:
    """The text after ` ||| ` for one output line; empty when the source or the output is."""
    if mode not in MODES:
        raise ValueError(f"alignment mode must be one of {', '.join(MODES)}, got {mode!r}")
    if words.size == 0:
        return ""
    if mode == "hard":
        return " ".join(f"{int(np.argmax(row))}-{j}" for j, row in enumerate(words))
    return " ".join(",".join(f"{w:.3f}" for w in row) for row in words)
