"""Property tests over arbitrary bytes for the corpus readers (s2s_jax/data/text.py): every input either
loads, with each source line paired with its own target line, or is one DataError naming the file
(and the line where there is one); never another exception."""

import os
import re
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2s_jax.data import corpus_cache, text
from s2s_jax.errors import DataError
from tests.helpers import tiny_config

# Bytes that stress the readers: newlines of every kind, tabs, a BOM, invalid UTF-8, controls.
_PIECES = [
    b"\n",
    b"\r\n",
    b"\r",
    b"\t",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xc3",
    b"\xc3\xa9",
    b"\xe2\x80\xa8",
    b"\x00",
    b"\x0c",
    b"a",
    b"b c",
    b" ",
    b"\xf0\x9f\x98\x80",
    b"\x85",
    b"\xe2\x80\x8b",
]
raw_files = st.lists(st.one_of(st.sampled_from(_PIECES), st.binary(max_size=4)), max_size=40).map(b"".join)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write(directory: str, name: str, data: bytes) -> str:
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _reference_lines(data: bytes) -> list[str] | None:
    """The lines a strict reader must return, or None where it must refuse (invalid UTF-8, empty)."""
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    decoded = decoded.removeprefix("\ufeff")
    lines = decoded.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines] or None


def _assert_names(err: DataError, path: str) -> None:
    message = str(err)
    assert path in message and "\n" not in message, message
    located = re.search(re.escape(path) + r":(\d+):", message)
    assert located or re.search(r"file is empty|no sentence pairs found|line counts differ", message), message


@FUZZ
@given(data=raw_files)
def test_a_file_of_any_bytes_reads_as_its_lines_or_one_error(data):
    with tempfile.TemporaryDirectory() as directory:
        path = _write(directory, "f.txt", data)
        expected = _reference_lines(data)
        # A file, and the same bytes as decode.py reads them from stdin.
        for reader in (lambda: text.read_lines(path), lambda: text.lines_from_bytes(data, path)):
            try:
                got = reader()
            except DataError as err:
                _assert_names(err, path)
                assert expected is None, (data, expected, str(err))
                continue
            assert got == expected


@FUZZ
@given(src=raw_files, tgt=raw_files)
def test_parallel_files_pair_line_i_with_line_i_or_refuse(src, tgt):
    with tempfile.TemporaryDirectory() as directory:
        src_path, tgt_path = _write(directory, "a.src", src), _write(directory, "a.tgt", tgt)
        want_src, want_tgt = _reference_lines(src), _reference_lines(tgt)
        try:
            pairs = list(text.stream_parallel(src_path, tgt_path))
        except DataError as err:
            assert str(err).count("\n") == 0
            assert src_path in str(err) or tgt_path in str(err)
            assert want_src is None or want_tgt is None or len(want_src) != len(want_tgt)
            return
        assert pairs == list(zip(want_src, want_tgt))


def _tsv_refusal_is_warranted(data: bytes, message: str, needed: int) -> bool:
    """Whether the TSV refusal `message` is true of `data`: the line it names has a bad byte or too
    few columns, or the file is empty or has no non-empty line. (A streaming reader may stop at a
    short line before reaching a bad byte further on, so each cause is checked on its own line.)"""
    located = re.search(r":(\d+): (not valid UTF-8|expected at least)", message)
    if located:
        raw = data.split(b"\n")[int(located.group(1)) - 1]
        raw = raw.removeprefix(b"\xef\xbb\xbf") if located.group(1) == "1" else raw
        try:
            line = raw.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError:
            return located.group(2) == "not valid UTF-8"
        return located.group(2) == "expected at least" and line != "" and len(line.split("\t")) < needed
    if "file is empty" in message:
        return data.removeprefix(b"\xef\xbb\xbf") == b""
    lines = _reference_lines(data)
    return "no sentence pairs found" in message and lines is not None and not any(lines)


@FUZZ
@given(data=raw_files, src_col=st.integers(0, 2), tgt_col=st.integers(0, 2))
def test_tsv_columns_come_from_their_own_line_or_refuse(data, src_col, tgt_col):
    with tempfile.TemporaryDirectory() as directory:
        path = _write(directory, "c.tsv", data)
        lines = _reference_lines(data)
        needed = max(src_col, tgt_col) + 1
        try:
            pairs = list(text.stream_tsv(path, src_col, tgt_col))
        except DataError as err:
            _assert_names(err, path)
            assert _tsv_refusal_is_warranted(data, str(err), needed), (data, src_col, tgt_col, str(err))
            return
        assert lines is not None
        rows = [line.split("	") for line in lines if line]
        assert rows and all(len(row) >= needed for row in rows)
        assert pairs == [(row[src_col], row[tgt_col]) for row in rows]


@FUZZ
@given(src=raw_files, tgt=raw_files)
def test_preparing_any_bytes_counts_every_pair_or_is_one_error(tmp_path, monkeypatch, src, tgt):
    """The prepared corpus (corpus_cache.open_text): cleaned pairs in file order, nothing left on failure."""
    with tempfile.TemporaryDirectory() as directory:
        monkeypatch.setenv("S2S_JAX_CORPUS_CACHE", os.path.join(directory, "cache"))
        src_path, tgt_path = _write(directory, "t.src", src), _write(directory, "t.tgt", tgt)
        config = tiny_config({"train_src": src_path, "train_tgt": tgt_path})
        try:
            prepared = corpus_cache.open_text(config, lambda message: None)
        except DataError as err:
            assert str(err).count("\n") == 0 and (src_path in str(err) or tgt_path in str(err)), str(err)
            want_src, want_tgt = _reference_lines(src), _reference_lines(tgt)
            readable = want_src is not None and want_tgt is not None and len(want_src) == len(want_tgt)
            # readable files are refused only when no pair keeps both sides after cleaning
            assert str(err).startswith("no training pairs left") == readable, (src, tgt, str(err))
            clean = lambda line: text.normalize(line, config.data.lowercase, config.data.d2l_preprocess)  # noqa: E731
            assert not readable or not any(clean(s) and clean(t) for s, t in zip(want_src, want_tgt))
            cache = os.path.join(directory, "cache")
            assert all(name.endswith(".lock") for name in os.listdir(cache)) if os.path.isdir(cache) else True
            return
        pairs = [(text.normalize(s), text.normalize(t)) for s, t in text.stream_parallel(src_path, tgt_path)]
        kept = [(s, t) for s, t in pairs if s and t]
        assert prepared.meta["total"] == len(pairs) and prepared.meta["empty"] == len(pairs) - len(kept)
        assert list(zip(prepared.lines("src"), prepared.lines("tgt"))) == kept


@pytest.mark.parametrize("data", [b"a\tb\n\xff\tc\n", b"\xef\xbb\xbf", b"x\n\n\ny\tz\n"])
def test_known_hard_cases(tmp_path, data):
    path = _write(str(tmp_path), "k.tsv", data)
    try:
        pairs = list(text.stream_tsv(path, 0, 1))
    except DataError as err:
        _assert_names(err, path)
    else:
        assert pairs == [tuple(line.split("\t")[:2]) for line in _reference_lines(data) if line]
