"""Corpus readers, text normalisation and counted filtering.

Everything here works on plain strings: text files -> (source, target) pairs ->
cleaned pairs. Each format has one reader, a generator, so a corpus larger than
memory streams through it (the prepared corpus, s2s_jax/data/corpus_cache.py, reads
this way); `read_lines` and `load_corpus` are those readers listed. Errors
about the user's files are `DataError`s that name the file and line, because
"UnicodeDecodeError at byte 81234" does not tell anyone which of their files
is broken.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from s2s_jax.errors import DataError

Pair = tuple[str, str]


# ---------------------------------------------------------------------------
# Readers: one per format, streaming (file and line in every error)
# ---------------------------------------------------------------------------


def stream_lines(path: str, allow_empty: bool = False) -> Iterator[str]:
    """The lines of a strict UTF-8 file, one at a time, without their '\\n' / '\\r\\n' endings.

    An empty file is an error for corpora (`allow_empty=False`), not for text to translate.

    Splits on '\\n' only: `str.splitlines` would also split on U+2028, form
    feeds and other separators that can occur inside a sentence, which would
    silently misalign parallel files. A leading byte-order mark is dropped.
    A bad line deep in a large file is reported without reading the file whole.
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a text file") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    with f:
        yield from _decoded_lines(f, path, allow_empty)


def _decoded_lines(raw_lines: Iterable[bytes], name: str, allow_empty: bool) -> Iterator[str]:
    """The rules of `stream_lines` over lines of bytes split after '\\n'; `name` is used in error messages."""
    number = 0
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            bad = raw[err.start : err.end].hex(" ")
            raise DataError(
                f"{name}:{number}: not valid UTF-8 (byte(s) {bad}); re-encode the file as UTF-8, "
                f"e.g. `iconv -f latin1 -t utf-8`"
            ) from None
        if number == 1:
            line = line.removeprefix("\ufeff")
            if not line:  # only a byte-order mark
                number = 0
                break
        line = line[:-1] if line.endswith("\n") else line
        yield line[:-1] if line.endswith("\r") else line
    if number == 0 and not allow_empty:
        raise DataError(f"{name}: file is empty")


def read_lines(path: str, allow_empty: bool = False) -> list[str]:
    """All the lines of a file (`stream_lines`)."""
    return list(stream_lines(path, allow_empty))


def lines_from_bytes(raw: bytes, name: str, allow_empty: bool = False) -> list[str]:
    """`read_lines` for bytes already read (e.g. stdin); `name` is used in error messages."""
    return list(_decoded_lines(io.BytesIO(raw), name, allow_empty))


def stream_parallel(src_path: str, tgt_path: str) -> Iterator[Pair]:
    """Pairs from two line-aligned files (line i of one translates line i of the other).

    Unequal line counts are an error naming both counts, found once the shorter file ends.
    """
    n_src = n_tgt = 0
    for s, t in itertools.zip_longest(stream_lines(src_path), stream_lines(tgt_path)):
        n_src, n_tgt = n_src + (s is not None), n_tgt + (t is not None)
        if s is not None and t is not None:
            yield s, t
    if n_src != n_tgt:
        raise DataError(
            f"line counts differ: {src_path} has {n_src} lines but {tgt_path} has {n_tgt}; aligned files "
            "need one sentence a line, line i of one translating line i of the other"
        )


def stream_tsv(path: str, src_col: int = 0, tgt_col: int = 1) -> Iterator[Pair]:
    """Pairs from the two given columns of a tab-separated file.

    Extra columns (Tatoeba's attribution) are ignored. No quoting is applied:
    quotes are part of the sentences. Fully empty lines (e.g. a trailing blank
    line) are skipped; any other line with too few columns is an error.
    """
    if src_col < 0 or tgt_col < 0:
        raise DataError(f"{path}: TSV column numbers must be >= 0, got {src_col} and {tgt_col}")
    needed, found = max(src_col, tgt_col) + 1, False
    for number, line in enumerate(stream_lines(path), start=1):
        if not line:
            continue
        columns = line.split("\t")
        if len(columns) < needed:
            raise DataError(
                f"{path}:{number}: expected at least {needed} tab-separated columns (source in column "
                f"{src_col}, target in column {tgt_col}, counting from 0), found {len(columns)}"
            )
        found = True
        yield columns[src_col], columns[tgt_col]
    if not found:
        raise DataError(f"{path}: no sentence pairs found")


# ---------------------------------------------------------------------------
# The data config's splits
# ---------------------------------------------------------------------------


def data_path(cfg_data: Any, path: str) -> str:
    """`path` as the data config means it: a relative path is joined to `data.dir`.

    An absolute path, an empty path or an empty `data.dir` leaves it as is;
    `~` is expanded in both.
    """
    if not path:
        return path
    path = os.path.expanduser(path)
    directory = os.path.expanduser(cfg_data.dir)
    if directory and not os.path.isabs(path):
        return os.path.join(directory, path)
    return path


def has_split(cfg_data: Any, split: str) -> bool:
    """Whether the data config names files for `split` ('train', 'valid', 'test')."""
    return bool(getattr(cfg_data, f"{split}_tsv", "") or getattr(cfg_data, f"{split}_src", ""))


def split_files(cfg_data: Any, split: str) -> tuple[str, list[str]]:
    """Which files make a split, as the data config names them: ('tsv', the TSV files) or
    ('parallel', [source, target, source, target, ...]); a clear DataError when it names none or half.

    `{split}_tsv` wins when set; otherwise `{split}_src` and `{split}_tgt` are
    aligned files. Each may list several files, comma-separated (the i-th
    source file aligned with the i-th target file). Relative paths are resolved
    against `data.dir` (`data_path`), so error messages name the file actually read.
    """

    def paths(key: str) -> list[str]:
        value = getattr(cfg_data, f"{split}_{key}", "") or ""
        return [data_path(cfg_data, p.strip()) for p in value.split(",") if p.strip()]

    tsv, src, tgt = paths("tsv"), paths("src"), paths("tgt")
    if tsv:
        return "tsv", tsv
    if src and tgt:
        if len(src) != len(tgt):
            raise DataError(
                f"data.{split}_src lists {len(src)} files but data.{split}_tgt {len(tgt)}; "
                "give one target file per source file"
            )
        return "parallel", [p for pair in zip(src, tgt) for p in pair]
    if src or tgt:
        given, missing = ("src", "tgt") if src else ("tgt", "src")
        raise DataError(
            f"data.{split}_{given} is set but data.{split}_{missing} is not; aligned corpora need both files"
        )
    raise DataError(
        f"no {split} data: set data.{split}_src and data.{split}_tgt (line-aligned files) "
        f"or data.{split}_tsv (one tab-separated file)"
    )


def stream_split(cfg_data: Any, split: str) -> Iterator[Pair]:
    """The raw pairs of one split, file after file (`split_files`), streamed."""
    kind, paths = split_files(cfg_data, split)
    if kind == "tsv":
        for path in paths:
            yield from stream_tsv(path, int(cfg_data.tsv_src_col), int(cfg_data.tsv_tgt_col))
    else:
        for src, tgt in zip(paths[::2], paths[1::2]):
            yield from stream_parallel(src, tgt)


def load_corpus(cfg_data: Any, split: str) -> list[Pair]:
    """All the raw pairs of one split (`stream_split`)."""
    return list(stream_split(cfg_data, split))


# ---------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------

# Control characters that are not whitespace (whitespace ones become spaces via
# str.split below), plus invisible marks that only confuse the tokenizer.
# (Unicode's Cc category is exactly U+0000..U+001F and U+007F..U+009F.)
_DELETE: dict[int, None] = {c: None for c in [*range(0x20), *range(0x7F, 0xA0)] if not chr(c).isspace()}
_DELETE.update({0xFEFF: None, 0x200B: None})  # byte-order mark / zero-width no-break space, zero-width space


_D2L_PUNCTUATION = re.compile(r"(?<=\S)([,.!?])")


def normalize(text: str, lowercase: bool = False, d2l: bool = False) -> str:
    """NFKC, unicode whitespace -> one ASCII space, control characters removed, stripped.

    NFKC turns U+00A0 / U+202F (the no-break spaces French puts before '!?:;')
    into plain spaces and unifies full-width forms, so the same word always
    gets the same subwords; sentencepiece then runs with the identity rule and
    detokenize(tokenize(s)) == s. `d2l` adds d2l.ai's preprocessing (a space before
    every , . ! ? that follows a non-space: "i lost." -> "i lost .") and makes
    typographic apostrophes ASCII, since Tatoeba mixes "j’ai" and "j'ai".
    """
    text = unicodedata.normalize("NFKC", text)
    text = " ".join(text.translate(_DELETE).split())  # str.split() knows all unicode whitespace
    if d2l:
        text = _D2L_PUNCTUATION.sub(r" \1", text.replace("\u2019", "'"))
    return text.lower() if lowercase else text


# ---------------------------------------------------------------------------
# Filtering with counts
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class FilterStats:
    """How many pairs survived cleaning and length filtering, and why the others did not."""

    total: int
    kept: int
    empty: int
    too_long: int
    max_len: int | None = None  # set by filter_by_length, for the summary

    def summary(self) -> str:
        """One line for the log, e.g. 'kept 28990 of 29000 pairs (3 empty, 7 longer than 64 tokens)'."""
        reasons = [f"{self.empty} empty"]
        if self.max_len is not None:
            reasons.append(f"{self.too_long} longer than {self.max_len} tokens")
        return f"kept {self.kept} of {self.total} pairs ({', '.join(reasons)})"


def clean_pairs(pairs: Sequence[Pair], lowercase: bool = False, d2l: bool = False) -> tuple[list[Pair], FilterStats]:
    """Normalises both sides and drops (and counts) pairs with an empty side."""
    kept = []
    for src, tgt in pairs:
        src, tgt = normalize(src, lowercase, d2l), normalize(tgt, lowercase, d2l)
        if src and tgt:
            kept.append((src, tgt))
    return kept, FilterStats(total=len(pairs), kept=len(kept), empty=len(pairs) - len(kept), too_long=0)


def filter_by_length(
    src_ids: Sequence[Sequence[int]],
    tgt_ids: Sequence[Sequence[int]],
    max_len: int,
    stats: FilterStats | None = None,
) -> list[int]:
    """Indices of the pairs whose sides both have at most `max_len` tokens (BOS/EOS not counted).

    Updates `stats` in place: `too_long` grows by the pairs dropped here and
    `kept` becomes the number of indices returned.
    """
    if len(src_ids) != len(tgt_ids):
        raise ValueError(f"{len(src_ids)} source but {len(tgt_ids)} target sequences")
    keep = [i for i, (s, t) in enumerate(zip(src_ids, tgt_ids)) if len(s) <= max_len and len(t) <= max_len]
    if stats is not None:
        stats.too_long += len(src_ids) - len(keep)
        stats.kept = len(keep)
        stats.max_len = max_len
    return keep
