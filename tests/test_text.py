"""Corpus readers, normalisation and counted filtering (s2s_jax.data.text)."""

from __future__ import annotations

import types

import pytest

from s2s_jax.data import text
from s2s_jax.errors import DataError


def write(path, content: bytes | str):
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


def test_read_lines_strips_only_line_endings(tmp_path):
    path = write(tmp_path / "a.txt", "\ufeffone \r\n two\n\nthree\u2028still three\x0cfour")
    assert text.read_lines(path) == ["one ", " two", "", "three\u2028still three\x0cfour"]


def test_parallel_files_pair_aligned_lines(tmp_path):
    src = write(tmp_path / "train.de", "Ein Hund.\nZwei Katzen.\n")
    tgt = write(tmp_path / "train.en", "A dog.\nTwo cats.")  # no final newline: same 2 lines
    assert list(text.stream_parallel(src, tgt)) == [("Ein Hund.", "A dog."), ("Zwei Katzen.", "Two cats.")]


def test_misaligned_files_error_names_both_files_and_counts(tmp_path):
    src = write(tmp_path / "a.src", "1\n2\n3\n")
    tgt = write(tmp_path / "a.tgt", "1\n2\n")
    with pytest.raises(DataError) as err:
        list(text.stream_parallel(src, tgt))
    message = str(err.value)
    assert src in message and tgt in message and "3" in message and "2" in message


def test_invalid_utf8_error_names_file_and_line(tmp_path):
    path = write(tmp_path / "latin1.txt", "ok\nfine\n".encode() + "caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt:3: not valid UTF-8"):
        text.read_lines(path)


def test_missing_and_empty_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        text.read_lines(str(tmp_path / "nope.txt"))
    with pytest.raises(DataError, match="empty"):
        text.read_lines(write(tmp_path / "empty.txt", b""))


def test_tsv_ignores_extra_attribution_column(tmp_path):
    path = write(
        tmp_path / "cmn.txt",
        "Hi.\t嗨。\tCC-BY 2.0 (France) Attribution: tatoeba.org #538123 (CM) & #891077 (Martha)\n"
        "Run!\t你用跑的。\tCC-BY 2.0 (France) Attribution: tatoeba.org #4008918 (JSakuragi)\n\n",
    )
    assert list(text.stream_tsv(path)) == [("Hi.", "嗨。"), ("Run!", "你用跑的。")]
    assert next(text.stream_tsv(path, src_col=1, tgt_col=0)) == ("嗨。", "Hi.")


def test_tsv_line_without_tab_error_names_file_and_line(tmp_path):
    path = write(tmp_path / "fra.txt", "Go.\tVa !\nHi. Salut !\n")
    with pytest.raises(DataError, match=r"fra\.txt:2: expected at least 2 tab-separated columns"):
        list(text.stream_tsv(path))


def test_load_corpus_prefers_tsv_and_explains_missing_files(tmp_path):
    tsv = write(tmp_path / "t.tsv", "a\tb\n")
    src, tgt = write(tmp_path / "x.src", "s\n"), write(tmp_path / "x.tgt", "t\n")
    cfg = types.SimpleNamespace(
        train_src=src,
        train_tgt=tgt,
        train_tsv="",
        valid_src="",
        valid_tgt="",
        valid_tsv=tsv,
        test_src=src,
        test_tgt="",
        test_tsv="",
        tsv_src_col=0,
        tsv_tgt_col=1,
        dir="",
    )
    assert text.load_corpus(cfg, "train") == [("s", "t")]
    assert text.load_corpus(cfg, "valid") == [("a", "b")]
    with pytest.raises(DataError, match="data.test_tgt"):
        text.load_corpus(cfg, "test")
    cfg.test_src = ""
    with pytest.raises(DataError, match="no test data"):
        text.load_corpus(cfg, "test")


def test_several_files_per_side_are_read_in_order(tmp_path):
    a_src, a_tgt = write(tmp_path / "a.de", "a1\na2\n"), write(tmp_path / "a.en", "A1\nA2\n")
    write(tmp_path / "b.de", "b1\n"), write(tmp_path / "b.en", "B1\n")
    cfg = types.SimpleNamespace(
        train_src=f"{a_src}, b.de",
        train_tgt=f"{a_tgt},b.en",
        train_tsv="",
        dir=str(tmp_path),
        tsv_src_col=0,
        tsv_tgt_col=1,
    )
    assert text.load_corpus(cfg, "train") == [("a1", "A1"), ("a2", "A2"), ("b1", "B1")]
    cfg.train_tgt = a_tgt
    with pytest.raises(DataError, match="data.train_src lists 2 files but data.train_tgt 1"):
        text.load_corpus(cfg, "train")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Ça va\u202f?", "Ça va ?"),  # narrow no-break space (French punctuation)
        ("Attention\u00a0!", "Attention !"),  # no-break space
        ("  a \t b\u3000c\n ", "a b c"),  # unicode whitespace collapsed, stripped
        ("ＡＢＣ１２３ ﬁn", "ABC123 fin"),  # NFKC: full-width forms, ligatures
        ("e\u0301te\u0301", "été"),  # NFKC composes combining accents
        ("x\x00y\x7fz\u200b!", "xyz!"),  # control characters and zero-width space removed
    ],
)
def test_normalize(raw, expected):
    assert text.normalize(raw) == expected


def test_normalize_lowercase():
    assert text.normalize("Ça VA\u00a0?", lowercase=True) == "ça va ?"
    assert text.normalize("Ça VA") == "Ça VA"


def test_normalize_d2l_preprocessing():
    # d2l.ai's MTFraEng._preprocess: a space before , . ! ? after a non-space, lowercased.
    assert text.normalize("I lost.", lowercase=True, d2l=True) == "i lost ."
    assert text.normalize("Va\u00a0!", lowercase=True, d2l=True) == "va !"
    assert text.normalize("Oui, j’ai...", d2l=True) == "Oui , j'ai . . ."
    assert text.normalize("I lost.", lowercase=True) == "i lost."
    kept, _ = text.clean_pairs([("He's calm.", "Il est calme.")], lowercase=True, d2l=True)
    assert kept == [("he's calm .", "il est calme .")]


def test_clean_pairs_normalises_and_counts_empty_pairs():
    pairs = [("Hello\u00a0!", "Bonjour\u202f!"), ("  ", "vide"), ("empty", ""), ("ok", "d'accord")]
    kept, stats = text.clean_pairs(pairs)
    assert kept == [("Hello !", "Bonjour !"), ("ok", "d'accord")]
    assert (stats.total, stats.kept, stats.empty, stats.too_long) == (4, 2, 2, 0)


def test_filter_by_length_counts_too_long_pairs():
    _, stats = text.clean_pairs([("a", "b")] * 5)
    src = [[5] * 3, [5] * 4, [5] * 5, [5] * 2, [5]]
    tgt = [[6] * 4, [6] * 4, [6] * 1, [6] * 5, [6]]
    assert text.filter_by_length(src, tgt, max_len=4, stats=stats) == [0, 1, 4]
    assert (stats.total, stats.kept, stats.empty, stats.too_long) == (5, 3, 0, 2)
    assert stats.summary() == "kept 3 of 5 pairs (0 empty, 2 longer than 4 tokens)"
    assert text.filter_by_length(src, tgt, max_len=5) == [0, 1, 2, 3, 4]
