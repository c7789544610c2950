"""Paragraphs into sentences and back, the text around them kept: `--split_sentences` and the server's `split`.

A text is cut at its line breaks first (each line is segmented on its own, so line breaks and
blank lines survive whatever the segmenter does), then each line into sentences by sentencex
(Wikimedia's rule-based segmenter, ~300 languages; benchmarks/README.md says why this one).
What lies between the sentences (spaces, line breaks, blank lines) and around them (leading and
trailing whitespace) is kept verbatim in `Segmented.gaps`, so `Segmented.join` puts translations
back where their sentences were: `segment(t, lang).join(segment(t, lang).sentences) == t`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence, TypeVar

import sentencex

T = TypeVar("T")

# What str.splitlines() breaks on: a paragraph's line breaks are never inside a sentence.
_LINE_BREAK = re.compile(r"(\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029])")
_SPACE = re.compile(r"\s+")
_LANGUAGE = re.compile(r"[a-z]{2,3}")
DEFAULT_LANGUAGE = "en"  # sentencex's own fallback for languages it has no rules for


@dataclasses.dataclass(frozen=True)
class Segmented:
    """A text as its sentences and what surrounds them: gaps[0] + sentences[0] + gaps[1] + ...
    + sentences[-1] + gaps[-1] is the text. Sentences carry no leading or trailing whitespace;
    a text with none (empty, or whitespace only) has no sentences and one gap, itself."""

    sentences: tuple[str, ...]
    gaps: tuple[str, ...]

    def join(self, translations: Sequence[str]) -> str:
        """The text with each sentence replaced by its translation (in order), the gaps kept."""
        if len(translations) != len(self.sentences):
            raise ValueError(f"{len(translations)} translations for {len(self.sentences)} sentences")
        return "".join(gap + text for gap, text in zip(self.gaps, [*translations, ""]))


def segment(text: str, language: str = DEFAULT_LANGUAGE, max_chars: int | None = None) -> Segmented:
    """`text` cut into sentences, line by line; a sentence over `max_chars` characters is cut
    further at whitespace (or, a word longer than that, every `max_chars` characters)."""
    sentences: list[str] = []
    gaps: list[str] = [""]
    for part in _LINE_BREAK.split(text):
        if _LINE_BREAK.fullmatch(part):
            gaps[-1] += part
            continue
        pairs, trailing = _line_sentences(part, language or DEFAULT_LANGUAGE)
        for gap, sentence in pairs:
            gaps[-1] += gap
            for piece_gap, piece in _pieces(sentence, max_chars) if max_chars else [("", sentence)]:
                gaps[-1] += piece_gap
                sentences.append(piece)
                gaps.append("")
        gaps[-1] += trailing
    return Segmented(tuple(sentences), tuple(gaps))


def unsplit(text: str) -> Segmented:
    """`text` as one sentence, its surrounding whitespace the gaps: a text to translate whole
    among split ones (no sentences when it is blank)."""
    core = text.strip()
    if not core:
        return Segmented((), (text,))
    start = text.index(core)
    return Segmented((core,), (text[:start], text[start + len(core) :]))


def _line_sentences(line: str, language: str) -> tuple[list[tuple[str, str]], str]:
    """([(whitespace before, sentence), ...], trailing whitespace) of one line. The segmenter's
    sentences are found in the line by position, so its own whitespace handling does not matter;
    from where its output stops matching the line (it changed the text), the rest is one sentence."""
    pairs: list[tuple[str, str]] = []
    position = 0
    for piece in sentencex.segment(language, line) if line.strip() else ():
        piece = piece.strip()
        start = line.find(piece, position) if piece else position
        if start < 0 or line[position:start].strip():
            break
        if piece:
            pairs.append((line[position:start], piece))
            position = start + len(piece)
    rest = line[position:]
    body = rest.strip()
    if body:
        lead = rest[: len(rest) - len(rest.lstrip())]
        pairs.append((lead, body))
        rest = rest[len(lead) + len(body) :]
    return pairs, rest


def _pieces(sentence: str, max_chars: int) -> list[tuple[str, str]]:
    """(whitespace before, piece) pieces of at most `max_chars` characters: whole words where they fit."""
    if len(sentence) <= max_chars:
        return [("", sentence)]
    out: list[tuple[str, str]] = []
    gap, current = "", ""
    for word_gap, word in _words(sentence):
        if current and len(current) + len(word_gap) + len(word) <= max_chars:
            current += word_gap + word
            continue
        if current:
            out.append((gap, current))
            gap = word_gap
        while len(word) > max_chars:
            out.append((gap, word[:max_chars]))
            gap, word = "", word[max_chars:]
        current = word
    out.append((gap, current))
    return out


def _words(sentence: str) -> list[tuple[str, str]]:
    """(whitespace before, word) for each whitespace-separated word of a stripped sentence."""
    words = _SPACE.split(sentence)
    spaces = [""] + _SPACE.findall(sentence)
    return list(zip(spaces, words))


def flatten(documents: Sequence[Segmented]) -> list[str]:
    """Every sentence of every document, in order: what one translation call takes."""
    return [sentence for document in documents for sentence in document.sentences]


def regroup(documents: Sequence[Segmented], items: Sequence[T]) -> list[list[T]]:
    """`flatten`'s order undone: the items (one per sentence) of each document."""
    if len(items) != sum(len(d.sentences) for d in documents):
        raise ValueError(f"{len(items)} items for {sum(len(d.sentences) for d in documents)} sentences")
    out, start = [], 0
    for document in documents:
        out.append(list(items[start : start + len(document.sentences)]))
        start += len(document.sentences)
    return out


def language_code(filename: str) -> str:
    """A language code guessed from a training file's extension (train.de -> de), else ''."""
    name = (filename or "").split(",")[0]
    suffix = name.rsplit(".", 1)[-1] if "." in name else ""
    return suffix if _LANGUAGE.fullmatch(suffix) and suffix not in ("src", "tgt", "txt", "tsv") else ""
