"""The prepared corpus (s2s_jax/data/corpus_cache.py): the same ids and batches as tokenizing in memory,
prepared once and reused, re-prepared when a file changes, streamed errors with file and line."""

import itertools
import os
import random
import tracemalloc

import numpy as np
import pytest

from s2s_jax.data import batching, corpus_cache, training_data
from s2s_jax.data.text import normalize, stream_parallel, stream_tsv
from s2s_jax.data.tokenizer import Tokenizer
from s2s_jax.errors import DataError
from tests.helpers import TINY_TRAIN_FLAGS, run_cli, tiny_config, write_tiny_corpus


def _tsv(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{s}\t{t}\tCC-BY\n" for s, t in rows)
    return str(path)


def _messages():
    out = []
    return out, out.append


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("S2S_JAX_CORPUS_CACHE", str(tmp_path / "cache"))
    paths = write_tiny_corpus(str(tmp_path), n_train=300)
    return paths, tiny_config(paths)


def test_prepared_ids_and_batches_equal_tokenizing_in_memory(corpus, tmp_path):
    paths, config = corpus
    prepared = training_data.prepare(config, str(tmp_path / "run"), verbose=False)
    tok = Tokenizer(str(tmp_path / "run" / "spm.model"))
    with open(paths["train_src"], encoding="utf-8") as f:
        src = [normalize(line.rstrip("\n")) for line in f]
    with open(paths["train_tgt"], encoding="utf-8") as f:
        tgt = [normalize(line.rstrip("\n")) for line in f]
    src_ids, tgt_ids = tok.tokenize(src), tok.tokenize(tgt)
    keep = [i for i in range(len(src)) if len(src_ids[i]) <= 16 and len(tgt_ids[i]) <= 16]
    reference = batching.BucketedBatches([src_ids[i] for i in keep], [tgt_ids[i] for i in keep], 16, 2, 0, 2)
    assert prepared.train_batches.fingerprint == reference.fingerprint
    for epoch in (0, 1):
        got, want = prepared.train_batches.epoch(epoch), reference.epoch(epoch)
        assert len(got) == len(want)
        for a, b in zip(got, want):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
    assert isinstance(prepared.train_batches._src.flat, np.memmap)  # read from disk, not held as lists


def test_a_second_run_with_a_new_workdir_reuses_the_preparation(corpus, tmp_path):
    _, config = corpus
    first, log = _messages()
    text = corpus_cache.open_text(config, log)
    training_data.tokenizers(config, str(tmp_path / "a"), text, log)
    corpus_cache.open_ids(text, str(tmp_path / "a" / "spm.model"), str(tmp_path / "a" / "spm.model"), log)
    assert any("cleaning" in m for m in first) and any("tokenizer trained" in m for m in first)
    assert any("tokenized" in m for m in first)
    second, log = _messages()
    text = corpus_cache.open_text(config, log)
    training_data.tokenizers(config, str(tmp_path / "b"), text, log)
    corpus_cache.open_ids(text, str(tmp_path / "b" / "spm.model"), str(tmp_path / "b" / "spm.model"), log)
    assert second == []
    assert (tmp_path / "a" / "spm.model").read_bytes() == (tmp_path / "b" / "spm.model").read_bytes()


def test_a_tokenizer_trained_on_a_seeded_sample_is_cached_per_seed(corpus, tmp_path):
    """Past data.spm_input_sentences the tokenizer trains on a sample drawn with the seed: another
    seed trains its own (the cache's history never decides the tokenizer); below it, one for all seeds."""
    _, config = corpus
    text = corpus_cache.open_text(config, lambda message: None)

    def tokenizer_of(seed: int, sentences: int) -> str:
        config.seed, config.data.spm_input_sentences = seed, sentences
        return corpus_cache.train_tokenizers(config, text, lambda message: None)[0]

    sampled = {seed: tokenizer_of(seed, 200) for seed in (0, 1)}  # 100 of the 300 pairs
    assert sampled[0] != sampled[1] and tokenizer_of(0, 200) == sampled[0]
    assert tokenizer_of(0, 0) == tokenizer_of(1, 0)  # the whole corpus: no sample, no seed


def test_a_changed_file_is_prepared_again_with_a_message(corpus, tmp_path):
    paths, config = corpus
    training_data.prepare(config, str(tmp_path / "a"), verbose=False)
    with open(paths["train_src"], "a", encoding="utf-8") as f, open(paths["train_tgt"], "a", encoding="utf-8") as g:
        f.write("the cat\n")
        g.write("le chat\n")
    messages, log = _messages()
    text = corpus_cache.open_text(config, log)
    assert any("changed since it was prepared" in m and paths["train_src"] in m for m in messages)
    assert text.num_pairs == 301


def test_a_failed_preparation_names_the_line_and_leaves_nothing_to_trust(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("S2S_JAX_CORPUS_CACHE", str(cache))
    monkeypatch.setattr(corpus_cache, "CHUNK_PAIRS", 100)  # the bad line is several chunks in
    rows = [(f"sentence number {i}", f"phrase numéro {i}") for i in range(1000)]
    path = _tsv(tmp_path / "c.tsv", rows)
    with open(path, "rb") as f:
        data = f.read().split(b"\n")
    data[700] = b"bad \xff byte\tmauvais"
    with open(path, "wb") as f:
        f.write(b"\n".join(data))
    config = tiny_config({})
    config.data.train_tsv, config.data.holdout_valid = path, 10
    with pytest.raises(DataError, match=r"c\.tsv:701: not valid UTF-8 \(byte\(s\) ff\)"):
        corpus_cache.open_text(config, lambda m: None)
    assert sorted(os.listdir(cache)) == [n for n in os.listdir(cache) if n.endswith(".lock")]  # no entry, no tmp
    data[700] = b"no tab here"
    with open(path, "wb") as f:
        f.write(b"\n".join(data))
    with pytest.raises(DataError, match=r"c\.tsv:701: expected at least 2 tab-separated columns"):
        corpus_cache.open_text(config, lambda m: None)


def test_a_bad_line_deep_in_a_large_file_is_found_without_reading_it_whole(tmp_path):
    path = tmp_path / "big.tsv"
    line = ("a fairly ordinary english sentence of some length\tune phrase française assez ordinaire\n").encode()
    with open(path, "wb") as f:
        for _ in range(150_000):
            f.write(line)
        f.write(b"\xc3\x28 broken\tcass\xe9\n")
        for _ in range(100_000):
            f.write(line)
    assert path.stat().st_size > 20_000_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"big\.tsv:150001: not valid UTF-8"):
            for _ in stream_tsv(str(path), 0, 1):
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000  # a few lines at a time, never the 25 MB file


def test_unequal_parallel_files_name_both_line_counts(tmp_path):
    (tmp_path / "a.src").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (tmp_path / "a.tgt").write_text("un\ndeux\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"a\.src has 3 lines but .*a\.tgt has 2"):
        list(stream_parallel(str(tmp_path / "a.src"), str(tmp_path / "a.tgt")))
    with pytest.raises(DataError, match=r"a\.tgt has 2 lines but .*a\.src has 3"):
        list(stream_parallel(str(tmp_path / "a.tgt"), str(tmp_path / "a.src")))


def test_holdout_is_by_source_sentence_deduplicated_and_capped(tmp_path, monkeypatch):
    monkeypatch.setenv("S2S_JAX_CORPUS_CACHE", str(tmp_path / "cache"))
    rng = random.Random(0)
    base = [(f"source {i}", f"cible {i} {j}") for i in range(200) for j in range(2)]  # two translations each
    rows = [rng.choice(base) for _ in range(3000)]  # many exact repeats, as a corpus repeated to size
    config = tiny_config({})
    config.data.train_tsv, config.data.holdout_valid = _tsv(tmp_path / "r.tsv", rows), 20
    text = corpus_cache.open_text(config, lambda m: None)
    src = text.lines("src")
    held_sources = {src[i] for i in text.heldout}
    assert len(held_sources) == 20
    assert not held_sources & {src[i] for i in text.train_indices()}  # never trained on
    valid = text.valid_pairs()
    assert len(valid) == len(set(valid)) <= 40 and {s for s, _ in valid} == held_sources
    config.data.valid_max_pairs = 7
    prepared = training_data.prepare(config, str(tmp_path / "run"), verbose=False)
    assert len(prepared.valid_refs) == 7


def test_worker_processes_prepare_exactly_what_one_process_does(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_cache, "CHUNK_PAIRS", 64)
    paths = write_tiny_corpus(str(tmp_path), n_train=500)
    results = []
    for workers in (1, 2):
        monkeypatch.setenv("S2S_JAX_CORPUS_CACHE", str(tmp_path / f"cache{workers}"))
        config = tiny_config(paths)
        config.data.prepare_workers = workers
        config.data.d2l_preprocess = True
        config.data.holdout_valid, config.data.valid_src, config.data.valid_tgt = 30, "", ""
        text = corpus_cache.open_text(config, lambda m: None)
        model = corpus_cache.train_tokenizers(config, text, lambda m: None)[0]
        ids = corpus_cache.open_ids(text, model, model, lambda m: None)
        files = {name: open(os.path.join(text.directory, name), "rb").read() for name in ("train.src", "train.tgt")}
        results.append(
            (files, open(model, "rb").read(), np.asarray(ids.src_ids), np.asarray(ids.tgt_len), text.heldout)
        )
    (files1, model1, src1, len1, held1), (files2, model2, src2, len2, held2) = results
    assert files1 == files2 and model1 == model2
    np.testing.assert_array_equal(src1, src2)
    np.testing.assert_array_equal(len1, len2)
    np.testing.assert_array_equal(held1, held2)


def test_a_deleted_cache_is_rebuilt_to_the_same_batches(corpus, tmp_path, monkeypatch):
    """What a resumed run relies on: preparing again (another cache, another machine) gives the same stream."""
    _, config = corpus
    first = training_data.prepare(config, str(tmp_path / "run"), verbose=False)
    monkeypatch.setenv("S2S_JAX_CORPUS_CACHE", str(tmp_path / "other-cache"))
    second = training_data.prepare(config, str(tmp_path / "run"), verbose=False)
    assert first.train_batches._src.flat.filename != second.train_batches._src.flat.filename
    assert first.train_batches.fingerprint == second.train_batches.fingerprint
    stream = zip(first.train_iterator(), second.train_iterator())
    for a, b in itertools.islice(stream, 3 * first.train_batches.num_batches):  # three epochs
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.slow
def test_prepare_cli_prepares_once_and_train_reuses_it(tmp_path, monkeypatch):
    paths = write_tiny_corpus(str(tmp_path))
    monkeypatch.setenv("S2S_JAX_CORPUS_CACHE", str(tmp_path / "cache"))
    flags = [f"--config.data.{k}={v}" for k, v in paths.items()] + ["--config.data.vocab_size=60"]
    result = run_cli(["prepare.py", "--config=configs/default.py", *flags])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "prepared: 200 pairs" in result.stdout and "tokenized" in result.stdout
    again = run_cli(["prepare.py", "--config=configs/default.py", *flags])
    assert again.returncode == 0 and "cleaning" not in again.stdout and "tokenized" not in again.stdout
    train = run_cli(
        [
            "train.py",
            "--config=configs/default.py",
            f"--workdir={tmp_path}/run",
            *flags,
            *TINY_TRAIN_FLAGS,
            "--config.train.num_steps=2",
            "--config.train.eval_every=2",
            "--config.train.checkpoint_every=2",
        ]
    )
    assert train.returncode == 0, train.stderr[-2000:]
    assert "prepare:" not in train.stdout and (tmp_path / "run" / "spm.model").exists()
    bad = run_cli(
        [
            "prepare.py",
            "--config=configs/default.py",
            "--config.data.train_src=/nonexistent.src",
            "--config.data.train_tgt=/nonexistent.tgt",
        ]
    )
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1] == "error: /nonexistent.src: file not found"


def test_a_process_reads_only_the_rows_its_devices_hold(corpus, tmp_path):
    """Multi-host: each process gathers only its rows; what it places equals the full batch's rows."""
    _, config = corpus
    batches = training_data.prepare(config, str(tmp_path / "run"), verbose=False).train_batches
    full = batching.TrainIterator(batches)
    halves = [
        batching.TrainIterator(batches, lambda rows, p=p: np.arange(p * rows // 2, (p + 1) * rows // 2)) for p in (0, 1)
    ]
    for _ in range(batches.num_batches + 2):
        want = next(full)
        got = [next(h) for h in halves]
        rows = len(want["index"])
        for p, batch in enumerate(got):
            mine = slice(p * rows // 2, (p + 1) * rows // 2)
            others = np.setdiff1d(np.arange(rows), np.arange(rows)[mine])
            for key in ("src", "tgt_in", "tgt_out"):
                np.testing.assert_array_equal(batch[key][mine], want[key][mine])
                assert not batch[key][others].any()  # never read: PAD
            np.testing.assert_array_equal(batch["index"], want["index"])
            assert halves[p].last_tokens == full.last_tokens == int((want["tgt_out"] != 0).sum())
