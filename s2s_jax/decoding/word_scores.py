"""Word-level confidence: the search's per-token log-probabilities merged into whitespace words.

A word's pieces are those `alignment.word_index` gives it (a piece with the word marker U+2581
starts a word), the same merge the word alignments use. A word's log-probability is the sum of
its pieces' (chain rule: the probability of the whole word given the source and the words
before it), its `prob` that exponentiated. The EOS term is no word's, so the words' log-
probabilities and the EOS term add up to the sequence score before length normalisation.
A piece that renders as nothing (a lone word marker) adds its term to the next word, or at
the end to the last one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Protocol

from s2s_jax.decoding.alignment import word_index


@dataclasses.dataclass(frozen=True)
class WordScore:
    """One output word and the model's log-probability of it."""

    text: str
    log_prob: float

    @property
    def prob(self) -> float:
        return math.exp(self.log_prob)


class PieceTokenizer(Protocol):
    """What merging needs of a tokenizer (s2s_jax.data.tokenizer.Tokenizer has it)."""

    def pieces(self, ids: Sequence[int]) -> list[str]: ...

    def detokenize(self, ids: Sequence[Sequence[int]]) -> list[str]: ...


def word_groups(pieces: Sequence[str]) -> list[list[int]]:
    """The piece positions of each word, in order."""
    groups: list[list[int]] = []
    for position, word in enumerate(word_index(list(pieces))):
        if word == len(groups):
            groups.append([])
        groups[word].append(position)
    return groups


def merge(texts: Sequence[str], groups: Sequence[Sequence[int]], log_probs: Sequence[float]) -> list[WordScore]:
    """Words with the summed log-probabilities of their pieces; `texts[i]` is group i's text, and a
    group whose text is blank gives its sum to the next word (at the end, to the last)."""
    words: list[WordScore] = []
    carried = 0.0
    for text, group in zip(texts, groups):
        total = carried + sum(float(log_probs[i]) for i in group)
        if text.strip():
            words.append(WordScore(text, total))
            carried = 0.0
        else:
            carried = total
    if carried and words:
        words[-1] = WordScore(words[-1].text, words[-1].log_prob + carried)
    return words


def words(tokenizer: PieceTokenizer, ids: Sequence[int], log_probs: Sequence[float]) -> list[WordScore]:
    """The words of output `ids` with their log-probabilities; `log_probs` holds one per id at
    least (a further EOS term is left out)."""
    ids = [int(i) for i in ids]
    if not ids:
        return []
    groups = word_groups(tokenizer.pieces(ids))
    texts = tokenizer.detokenize([[ids[i] for i in group] for group in groups])
    return merge(texts, groups, log_probs)


def format_probs(scores: Sequence[WordScore]) -> str:
    """decode.py's --word_scores column: each word's probability, space-separated."""
    return " ".join(f"{w.prob:.3f}" for w in scores)
