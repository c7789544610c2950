"""decode.py's constraint files, read as text: `--constraints` (the phrases each translation must
contain) and `--terminology` (a source term -> target term dictionary), and the matching of
dictionary terms in source lines. Every mistake in a file is a DataError naming FILE:LINE."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence

from s2s_jax.data.text import read_lines
from s2s_jax.errors import DataError

# A line's words for term matching: runs of word characters, and every other non-space character alone.
_WORD = re.compile(r"\w+|[^\w\s]")


def read_constraints(path: str, num_lines: int) -> list[list[str]]:
    """Line i's tab-separated phrases (none on an empty line) for each of the input's `num_lines` lines."""
    lines = read_lines(path, allow_empty=True)
    if len(lines) != num_lines:
        where = num_lines + 1 if len(lines) > num_lines else max(len(lines), 1)
        raise DataError(
            f"{path}:{where}: {len(lines)} lines of constraints for an input of {num_lines} lines "
            "(one line per input line, empty for none)"
        )
    rows = []
    for number, line in enumerate(lines, 1):
        phrases = line.split("\t") if line.strip() else []
        for k, phrase in enumerate(phrases, 1):
            if not phrase.strip():
                raise DataError(f"{path}:{number}: phrase {k} is empty (phrases are separated by single tabs)")
        rows.append([phrase.strip() for phrase in phrases])
    return rows


@dataclasses.dataclass(frozen=True)
class Term:
    source: str
    target: str
    line: int  # in the dictionary file, counted from 1


def read_terminology(path: str) -> list[Term]:
    """The dictionary's `source term<TAB>target term` lines (blank lines skipped); a source term
    given twice is an error naming both lines."""
    terms: dict[str, Term] = {}
    for number, line in enumerate(read_lines(path, allow_empty=True), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            raise DataError(f"{path}:{number}: expected 'source term<TAB>target term', got {len(fields)} fields")
        source = fields[0].strip()
        if source in terms:
            raise DataError(f"{path}:{number}: the source term {source!r} is already on line {terms[source].line}")
        terms[source] = Term(source, fields[1].strip(), number)
    return list(terms.values())


class TermMatcher:
    """Finds dictionary terms in source lines: whole words, after `normalize` (the model's source
    normalisation) of both; at each place the longest term, matches not overlapping."""

    def __init__(self, terms: Sequence[Term], normalize: Callable[[list[str]], list[str]]):
        self.normalize = normalize
        self.by_words: dict[tuple[str, ...], Term] = {}
        for term, text in zip(terms, normalize([t.source for t in terms])):
            words = tuple(_WORD.findall(text))
            if words:
                self.by_words.setdefault(words, term)
        self.longest = max(map(len, self.by_words), default=0)

    def __call__(self, lines: list[str]) -> list[list[Term]]:
        """The terms found in each line, in order of appearance."""
        found = []
        for text in self.normalize(lines):
            words, terms, i = _WORD.findall(text), [], 0
            while i < len(words):
                for n in range(min(self.longest, len(words) - i), 0, -1):
                    term = self.by_words.get(tuple(words[i : i + n]))
                    if term is not None:
                        terms.append(term)
                        i += n - 1
                        break
                i += 1
            found.append(terms)
        return found
