"""The offline quickstart corpus: deterministic, clean, disjoint splits, real num2words/babel text."""

import datetime
import json
import os
import re

import pytest

from s2s_jax.data import quickstart_data as q

SMALL = dict(n_train=400, n_valid=50, n_test=50)


@pytest.fixture(scope="module")
def default_pairs():
    return q.generate_pairs(21000, seed=0)


def read_lines(path):
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    assert text.endswith("\n")
    return text[:-1].split("\n")


def test_known_exact_pairs():
    assert q.number_pair(77) == ("seventy-seven", "soixante-dix-sept")
    assert q.number_pair(71) == ("seventy-one", "soixante et onze")
    assert q.number_pair(80) == ("eighty", "quatre-vingts")
    assert q.count_noun_pair(80, ("cats", "chats")) == ("eighty cats", "quatre-vingts chats")
    assert q.count_noun_pair(21, ("birds", "oiseaux")) == ("twenty-one birds", "vingt et un oiseaux")
    d = datetime.date(2026, 11, 22)
    assert q.date_pair(d) == ("November 22, 2026", "22 novembre 2026")
    assert q.date_pair(d, full=True) == ("Sunday, November 22, 2026", "dimanche 22 novembre 2026")
    assert q.on_date_pair(d) == ("on November 22, 2026", "le 22 novembre 2026")


def test_normalize_removes_exotic_spaces():
    assert q.normalize("22\u202fnovembre\u00a0 2026 \t") == "22 novembre 2026"


def test_deterministic_and_seed_dependent():
    a = q.generate_pairs(300, seed=0)
    assert a == q.generate_pairs(300, seed=0)
    assert a != q.generate_pairs(300, seed=1)
    # Asking for more never reshuffles the beginning.
    assert q.generate_pairs(500, seed=0)[:300] == a


def test_default_size_pairs_unique_clean_short(default_pairs):
    assert len(default_pairs) == 21000
    sources = [s for s, _ in default_pairs]
    assert len(set(sources)) == len(sources)
    for src, tgt in default_pairs:
        for text in (src, tgt):
            assert text and text == text.strip()
            assert "\t" not in text and "\n" not in text and "\r" not in text
            assert "\u202f" not in text and "\u00a0" not in text and "  " not in text
            assert len(text.split()) <= 12


def test_every_kind_is_present_and_consistent(default_pairs):
    """Each generated pair is what num2words/babel say for its source; all kinds occur."""
    cardinals = dict(q.number_pair(n) for n in range(q.MAX_CARDINAL + 1))
    nouns = dict(q.NOUNS)
    weekday = r"(?:lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche) "
    fr_date = re.compile(rf"^(?:le )?(?:{weekday})?\d{{1,2}} \w+ (?:19|20)\d\d$")
    seen = {"cardinal": 0, "count_noun": 0, "date": 0, "on_date": 0}
    for src, tgt in default_pairs:
        head, _, last = src.rpartition(" ")
        if src in cardinals:
            assert tgt == cardinals[src]
            seen["cardinal"] += 1
        elif last in nouns:
            assert tgt == f"{cardinals[head]} {nouns[last]}"
            seen["count_noun"] += 1
        else:
            assert fr_date.match(tgt), (src, tgt)
            assert src[-4:] == tgt[-4:]  # same year
            seen["on_date" if src.startswith("on ") else "date"] += 1
            assert src.startswith("on ") == tgt.startswith("le ")
    assert all(count > 1000 for count in seen.values()), seen


def test_negative_n_raises():
    with pytest.raises(ValueError):
        q.generate_pairs(-1, seed=0)


def test_write_corpus_splits(tmp_path):
    paths = q.write_corpus(tmp_path, seed=3, **SMALL)
    assert set(paths) == {f"{s}_{side}" for s in ("train", "valid", "test") for side in ("src", "tgt")}
    splits = {}
    for split in ("train", "valid", "test"):
        src = read_lines(paths[f"{split}_src"])
        tgt = read_lines(paths[f"{split}_tgt"])
        assert len(src) == len(tgt) == SMALL[f"n_{split}"]
        assert all(line.strip() for line in src + tgt)
        splits[split] = list(zip(src, tgt))
    train, valid, test = ({s for s, _ in splits[k]} for k in ("train", "valid", "test"))
    assert not (train & valid) and not (train & test) and not (valid & test)
    # The files hold exactly the generated stream: valid, then test, then train.
    assert splits["valid"] + splits["test"] + splits["train"] == q.generate_pairs(500, seed=3)
    manifest = json.loads((tmp_path / q.MANIFEST_NAME).read_text(encoding="utf-8"))
    assert manifest["seed"] == 3 and manifest["n_train"] == 400
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_write_corpus_caches_by_manifest(tmp_path):
    paths = q.write_corpus(tmp_path, seed=0, **SMALL)
    # Make any rewrite visible even on coarse-mtime filesystems.
    for p in paths.values():
        os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    mtimes = {k: os.stat(p).st_mtime_ns for k, p in paths.items()}
    assert q.write_corpus(tmp_path, seed=0, **SMALL) == paths
    assert {k: os.stat(p).st_mtime_ns for k, p in paths.items()} == mtimes

    # Different parameters regenerate.
    q.write_corpus(tmp_path, seed=1, **SMALL)
    assert all(os.stat(p).st_mtime_ns != mtimes[k] for k, p in paths.items())
    assert json.loads((tmp_path / q.MANIFEST_NAME).read_text(encoding="utf-8"))["seed"] == 1


def test_write_corpus_regenerates_missing_file(tmp_path):
    paths = q.write_corpus(tmp_path, seed=0, **SMALL)
    before = read_lines(paths["test_tgt"])
    os.remove(paths["test_tgt"])
    q.write_corpus(tmp_path, seed=0, **SMALL)
    assert read_lines(paths["test_tgt"]) == before
