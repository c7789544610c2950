"""The prepared corpus: a training split cleaned, tokenized and stored on disk once, reused by every run.

A run's training text goes through three levels, each a directory committed with one
`os.replace` (`_building`: a failed preparation leaves nothing, a killed one only a `*.tmp-*`
directory, which nothing trusts and the next preparation removes):

    CACHE/<text key>/                      cleaned pairs, keyed by the files and the text settings
        text.json                          the files' identity (size, mtime), counts, held-out pairs
        train.src, train.tgt               one normalised sentence a line (held-out pairs included)
        heldout.npy                        indices of the pairs held out for validation
        valid.src, valid.tgt               the held-out pairs, deduplicated
        spm-<settings hash>/               tokenizer(s) trained on a bounded, deterministic sample
        ids-<tokenizer hash>/              token ids: {src,tgt}.ids (int32, flat), {src,tgt}.len

Training memory-maps the ids, so memory does not grow with the corpus; only the lengths
(4 bytes a side a pair) and an epoch's permutation are held in RAM. The text key covers the
file paths and everything that changes the cleaned text; each file's size and mtime are
checked on every use, and a changed file is prepared again with a message. The cache lives
in `data.cache_dir`, else $S2S_JAX_CORPUS_CACHE, else ~/.cache/s2s_jax/corpora.

Reading streams the files line by line (s2s_jax/data/text.py's readers), so a bad line deep in a
large file is reported (file and line) without first reading the whole file. Text is
normalised in worker processes (`data.prepare_workers`); sentencepiece encodes with its own
threads.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import hashlib
import heapq
import itertools
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from s2s_jax.data import languages
from s2s_jax.data import text as text_lib
from s2s_jax.data.text import Pair, split_files, stream_parallel, stream_split
from s2s_jax.errors import DataError
from s2s_jax.files import TEMPORARY_MARK, file_digest, temporary_name

FORMAT = 1  # bump when the layout or the cleaning changes: old entries are then never matched
CHUNK_PAIRS = 50_000  # pairs per normalising / encoding chunk


def default_cache_dir() -> str:
    return os.environ.get("S2S_JAX_CORPUS_CACHE") or os.path.expanduser("~/.cache/s2s_jax/corpora")


def cache_dir(cfg_data) -> str:
    return os.path.expanduser(cfg_data.get("cache_dir", "") or default_cache_dir())


# ---------------------------------------------------------------------------
# Keys and locking
# ---------------------------------------------------------------------------


def _digest(value: Any, size: int = 16) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:size]


def _identity(paths: list[str]) -> list[dict]:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append({"path": os.path.realpath(path), "size": -1, "mtime_ns": -1})
            continue
        out.append({"path": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def text_settings(config) -> dict:
    """Everything the cleaned training text depends on (its cache key, with the file paths)."""
    cfg = config.data
    if cfg.pairs:
        files = languages.pair_files(cfg, "train")
        return {
            "format": FORMAT,
            "kind": "pairs",
            "paths": [os.path.realpath(p) for f in files for p in (f.src, f.tgt)],
            "pairs": [f.pair.name for f in files],
            "tags": [f.tag_language for f in files],
            "lowercase": bool(cfg.lowercase),
            "d2l": bool(cfg.d2l_preprocess),
            "holdout": 0,
            "holdout_seed": None,
        }
    kind, paths = split_files(cfg, "train")
    holdout = int(cfg.holdout_valid) if not text_lib.has_split(cfg, "valid") else 0
    return {
        "format": FORMAT,
        "kind": kind,
        "paths": [os.path.realpath(p) for p in paths],
        "columns": [int(cfg.tsv_src_col), int(cfg.tsv_tgt_col)] if kind == "tsv" else None,
        "lowercase": bool(cfg.lowercase),
        "d2l": bool(cfg.d2l_preprocess),
        "holdout": holdout,
        "holdout_seed": int(config.seed) if holdout else None,
    }


def tokenizer_settings(config) -> dict:
    cfg = config.data
    return {
        "symbols": languages.run_languages(cfg).symbols,
        "vocab_size": int(cfg.vocab_size),
        "model_type": cfg.spm_model_type,
        "joint": bool(cfg.joint_vocab),
        "sentences": int(cfg.get("spm_input_sentences", 0)),
        "max_train_pairs": int(cfg.max_train_pairs),
    }


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """An exclusive flock: concurrent runs (or the hosts of one run on shared storage) prepare once."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"prepare: waiting for another process preparing {os.path.dirname(path)} ({path})", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_leftovers(final: str) -> None:
    """Removes the `final.tmp-*` directories of preparations that failed or were killed (called under the lock)."""
    parent, prefix = os.path.dirname(final), os.path.basename(final) + TEMPORARY_MARK
    for name in os.listdir(parent) if os.path.isdir(parent) else []:
        if name.startswith(prefix):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


@contextlib.contextmanager
def _building(final: str) -> Iterator[str]:
    """A fresh temporary directory that becomes the entry `final` (replacing an outdated one) when the
    block ends; a block that raises leaves no temporary directory behind."""
    _remove_leftovers(final)
    tmp = temporary_name(final)
    os.makedirs(tmp)
    try:
        yield tmp
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        _remove_leftovers(final)


# ---------------------------------------------------------------------------
# Level 1: cleaned text
# ---------------------------------------------------------------------------


Segment = tuple[int, "str | None", list[Pair]]  # (stream number, its tags' language, raw pairs)


def _clean_chunk(chunk: list[Segment], lowercase: bool, d2l: bool) -> list[tuple[int, list[str], list[str], int]]:
    """Of each segment of a chunk: (its stream, normalised source lines (tagged with the stream's
    target language, if any), target lines, how many pairs had an empty side) (worker processes)."""
    out = []
    for stream, language, pairs in chunk:
        src, tgt = [], []
        for s, t in pairs:
            s, t = text_lib.normalize(s, lowercase, d2l), text_lib.normalize(t, lowercase, d2l)
            if s and t:
                src.append(languages.tagged(s, language))
                tgt.append(t)
        out.append((stream, src, tgt, len(pairs) - len(src)))
    return out


def _train_streams(cfg) -> list[tuple[str | None, Iterator[Pair]]]:
    """(target language of the tags, raw pairs) of each training stream: one per language pair,
    or the single pair's files as one untagged stream."""
    if cfg.pairs:
        return [(f.tag_language, stream_parallel(f.src, f.tgt)) for f in languages.pair_files(cfg, "train")]
    return [(None, stream_split(cfg, "train"))]


def _stream_chunks(cfg) -> Iterator[list[Segment]]:
    """Every training stream's pairs in order, in chunks of CHUNK_PAIRS (a chunk may span streams:
    a small multilingual corpus is still one chunk, cleaned without worker processes)."""
    chunk: list[Segment] = []
    size = 0
    for number, (language, stream) in enumerate(_train_streams(cfg)):
        part: list[Pair] = []
        for pair in stream:
            part.append(pair)
            if size + len(part) == CHUNK_PAIRS:
                yield [*chunk, (number, language, part)]
                chunk, part, size = [], [], 0
        if part:
            chunk.append((number, language, part))
            size += len(part)
    if chunk:
        yield chunk


def _source_hash(source: str, seed: int) -> int:
    return int.from_bytes(
        hashlib.blake2b(source.encode(), digest_size=8, key=seed.to_bytes(8, "little")).digest(), "little"
    )


def _workers(cfg_data) -> int:
    return int(cfg_data.get("prepare_workers", 0)) or os.cpu_count() or 1


@contextlib.contextmanager
def _pool(workers: int) -> Iterator[Callable]:
    """map(fn, items, *args) with results in order: in this process while there is one item (a small
    corpus pays no process start-up), over `workers` spawned processes (no fork of a process with
    JAX's threads) once there is a second, keeping at most two items a worker in flight."""
    executor: list[concurrent.futures.ProcessPoolExecutor] = []

    def run(fn, items, *args):
        items = iter(items)
        first = next(items, None)
        if first is None:
            return
        second = next(items, None)
        if second is None or workers <= 1:
            yield fn(first, *args)
            if second is not None:
                yield from (fn(item, *args) for item in itertools.chain([second], items))
            return
        executor.append(
            concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        )
        pending = collections.deque()
        for item in itertools.chain([first, second], items):
            pending.append(executor[0].submit(fn, item, *args))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    try:
        yield run
    finally:
        for pool in executor:
            pool.shutdown(cancel_futures=True)


def _prepare_text(config, tmp: str, log: Callable[[str], None]) -> dict:
    """Writes level 1 of `config`'s training text into the directory `tmp`; its text.json."""
    cfg, settings = config.data, text_settings(config)
    paths = settings["paths"]
    identity = _identity(paths)
    started = time.perf_counter()
    total = empty = kept = 0
    per_stream = [0] * max(len(settings.get("pairs", [])), 1)
    hashes: list[np.ndarray] = []
    heap: list[int] = []  # -hash of the `holdout` smallest distinct source hashes (a max-heap)
    members: set[int] = set()
    holdout, seed = settings["holdout"], int(config.seed)
    workers = _workers(cfg)
    with (
        open(os.path.join(tmp, "train.src"), "w", encoding="utf-8", newline="\n") as fs,
        open(os.path.join(tmp, "train.tgt"), "w", encoding="utf-8", newline="\n") as ft,
        _pool(workers) as run,
    ):
        chunks = _stream_chunks(cfg)
        segments = (
            segment
            for cleaned in run(_clean_chunk, chunks, bool(cfg.lowercase), bool(cfg.d2l_preprocess))
            for segment in cleaned
        )
        for stream, src, tgt, chunk_empty in segments:
            total, empty, kept = total + len(src) + chunk_empty, empty + chunk_empty, kept + len(src)
            per_stream[stream] += len(src)
            fs.write("".join(s + "\n" for s in src))
            ft.write("".join(t + "\n" for t in tgt))
            if holdout:
                chunk_hashes = np.fromiter((_source_hash(s, seed) for s in src), np.uint64, len(src))
                hashes.append(chunk_hashes)
                for h in map(int, chunk_hashes):
                    if h in members:
                        continue
                    if len(heap) < holdout:
                        heapq.heappush(heap, -h)
                        members.add(h)
                    elif h < -heap[0]:
                        members.discard(-heapq.heappushpop(heap, -h))
                        members.add(h)
            if total % (20 * CHUNK_PAIRS) == 0:
                log(f"prepare: {total:,} pairs read")
    if kept == 0:
        raise DataError(f"no training pairs left: kept 0 of {total} pairs ({empty} empty) in {', '.join(paths)}")
    for name, n in zip(settings.get("pairs", []), per_stream):
        if n == 0:
            raise DataError(f"pair {name}: no training pairs left in {', '.join(paths)} (all empty)")
    held = np.zeros(0, np.int64)
    if holdout and hashes:
        all_hashes = np.concatenate(hashes)
        # At most half of the distinct sources are held out: training keeps the other half.
        distinct = len(np.unique(all_hashes))
        chosen = np.array(sorted(members), dtype=np.uint64)[: min(holdout, distinct // 2)]
        held = np.flatnonzero(np.isin(all_hashes, chosen))
    np.save(os.path.join(tmp, "heldout.npy"), held)
    valid = _read_lines_at(tmp, held)
    unique = list(dict.fromkeys(valid))  # duplicated pairs validated once, first occurrence order
    with (
        open(os.path.join(tmp, "valid.src"), "w", encoding="utf-8", newline="\n") as fs,
        open(os.path.join(tmp, "valid.tgt"), "w", encoding="utf-8", newline="\n") as ft,
    ):
        fs.write("".join(s + "\n" for s, _ in unique))
        ft.write("".join(t + "\n" for _, t in unique))
    meta = {
        "settings": settings,
        "files": identity,
        "total": total,
        "empty": empty,
        "pairs": kept,
        "heldout_pairs": len(held),
        "valid_pairs": len(unique),
        "pair_counts": [[name, n] for name, n in zip(settings["pairs"], per_stream)] if "pairs" in settings else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    _write_json(os.path.join(tmp, "text.json"), meta)
    return meta


def _read_lines_at(directory: str, indices: np.ndarray) -> list[Pair]:
    """The cleaned pairs at the given (sorted) line indices, streamed."""
    wanted, out = set(map(int, indices)), []
    if not wanted:
        return out
    with (
        open(os.path.join(directory, "train.src"), encoding="utf-8", newline="\n") as fs,
        open(os.path.join(directory, "train.tgt"), encoding="utf-8", newline="\n") as ft,
    ):
        for i, (s, t) in enumerate(zip(fs, ft)):
            if i in wanted:
                out.append((s[:-1], t[:-1]))
    return out


def _write_json(path: str, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1)


# ---------------------------------------------------------------------------
# The prepared corpus
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class PreparedText:
    """Level 1, opened: where the cleaned pairs are, what was held out, and the counts."""

    directory: str
    meta: dict
    heldout: np.ndarray

    @property
    def num_pairs(self) -> int:
        return int(self.meta["pairs"])

    @property
    def pair_starts(self) -> list[tuple[str, int, int]]:
        """(name, first line, end line) of each language pair's lines; [] for a single-pair corpus."""
        out, start = [], 0
        for name, n in self.meta.get("pair_counts") or []:
            out.append((name, start, start + n))
            start += n
        return out

    def train_indices(self, max_train_pairs: int = 0) -> np.ndarray:
        """The training lines (held-out ones left out); with `max_train_pairs` the first N, of each
        language pair when there are several."""
        keep = np.setdiff1d(np.arange(self.num_pairs), self.heldout, assume_unique=True)
        if not max_train_pairs:
            return keep
        if not self.pair_starts:
            return keep[:max_train_pairs]
        return np.concatenate([keep[(keep >= a) & (keep < b)][:max_train_pairs] for _, a, b in self.pair_starts])

    def pair_of(self, indices: np.ndarray) -> np.ndarray:
        """The language pair (its number in data.pairs) of each line; all 0 for a single pair."""
        ends = np.array([b for _, _, b in self.pair_starts] or [self.num_pairs], np.int64)
        return np.searchsorted(ends, np.asarray(indices), side="right").astype(np.int64)

    def lines(self, side: str, indices: np.ndarray | None = None) -> list[str]:
        """Cleaned sentences of one side ('src' | 'tgt'), all or at `indices` (in index order)."""
        with open(os.path.join(self.directory, f"train.{side}"), encoding="utf-8", newline="\n") as f:
            if indices is None:
                return [line[:-1] for line in f]
            wanted = np.zeros(self.num_pairs, bool)
            wanted[indices] = True
            return [line[:-1] for line, w in zip(f, wanted) if w]

    def valid_pairs(self) -> list[Pair]:
        with (
            open(os.path.join(self.directory, "valid.src"), encoding="utf-8", newline="\n") as fs,
            open(os.path.join(self.directory, "valid.tgt"), encoding="utf-8", newline="\n") as ft,
        ):
            return [(s[:-1], t[:-1]) for s, t in zip(fs, ft)]

    def sample(self, indices: np.ndarray, limit: int, seed: int) -> np.ndarray:
        """At most `limit` of `indices` (all of them, in order, when they fit): what a tokenizer is trained on."""
        if not limit or len(indices) <= limit:
            return indices
        return np.sort(np.random.default_rng(seed).choice(indices, size=limit, replace=False))


def open_text(config, log: Callable[[str], None] = print) -> PreparedText:
    """The cleaned training text of `config`, prepared first when missing or when a file changed."""
    settings = text_settings(config)
    directory = os.path.join(cache_dir(config.data), _digest(settings))
    with _locked(directory + ".lock"):
        meta_path = os.path.join(directory, "text.json")
        if os.path.exists(meta_path):
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
            current = _identity(settings["paths"])
            if meta["files"] == current:
                return PreparedText(directory, meta, np.load(os.path.join(directory, "heldout.npy")))
            changed = [now["path"] for old, now in zip(meta["files"], current) if old != now]
            log(f"prepare: {', '.join(changed)} changed since it was prepared ({directory}); preparing again")
        log(f"prepare: cleaning {', '.join(settings['paths'])} into {directory}")
        with _building(directory) as tmp:
            meta = _prepare_text(config, tmp, log)
        log(
            f"prepare: {meta['pairs']:,} of {meta['total']:,} pairs cleaned ({meta['empty']} empty), "
            f"{meta['heldout_pairs']} held out for validation ({meta['valid_pairs']} distinct), in {meta['seconds']} s"
        )
        return PreparedText(directory, meta, np.load(os.path.join(directory, "heldout.npy")))


def train_tokenizers(config, text: PreparedText, log: Callable[[str], None] = print) -> list[str]:
    """The sentencepiece model path(s) trained on `text` with `config`'s settings (cached): [joint] or [src, tgt]."""
    from s2s_jax.data.tokenizer import train_tokenizer

    cfg, settings = config.data, tokenizer_settings(config)
    limit = settings["sentences"] // (2 if cfg.joint_vocab else 1)
    indices = text.train_indices(settings["max_train_pairs"])
    if limit and len(indices) > limit:  # a sample of the corpus, drawn with the run's seed: part of what it is
        settings["sample_seed"] = int(config.seed)
    directory = os.path.join(text.directory, "spm-" + _digest(settings))
    names = ["spm"] if cfg.joint_vocab else ["spm_src", "spm_tgt"]
    paths = [os.path.join(directory, f"{name}.model") for name in names]
    with _locked(directory + ".lock"):
        if all(os.path.exists(p) for p in paths):
            return paths
        started = time.perf_counter()
        chosen = text.sample(indices, limit, int(config.seed))
        src, tgt = text.lines("src", chosen), text.lines("tgt", chosen)
        sides = [src + tgt] if cfg.joint_vocab else [src, tgt]
        with _building(directory) as tmp:
            for name, texts in zip(names, sides):
                train_tokenizer(
                    texts,
                    os.path.join(tmp, name),
                    int(cfg.vocab_size),
                    cfg.spm_model_type,
                    user_defined_symbols=settings["symbols"],
                )
        log(f"prepare: tokenizer trained on {len(chosen):,} pairs in {time.perf_counter() - started:.1f} s")
        return paths


@dataclasses.dataclass
class PreparedIds:
    """Level 2, opened: memory-mapped token ids of every cleaned pair, per side."""

    directory: str
    src_ids: np.ndarray  # int32, all sequences back to back
    src_len: np.ndarray  # int32, one length per pair
    tgt_ids: np.ndarray
    tgt_len: np.ndarray


def _encode_chunk(model: str, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from s2s_jax.data.tokenizer import Tokenizer

    rows = Tokenizer(model).tokenize(lines, num_threads=os.cpu_count() or 1)
    lengths = np.fromiter(map(len, rows), np.int32, len(rows))
    flat = np.fromiter((i for row in rows for i in row), np.int32, int(lengths.sum()))
    return flat, lengths


def open_ids(text: PreparedText, src_model: str, tgt_model: str, log: Callable[[str], None] = print) -> PreparedIds:
    """The token ids of `text` under the given sentencepiece models (cached by the models' contents)."""
    models = {"src": src_model, "tgt": tgt_model}
    directory = os.path.join(
        text.directory, "ids-" + _digest([file_digest(src_model)[:16], file_digest(tgt_model)[:16]])
    )
    with _locked(directory + ".lock"):
        if not os.path.exists(os.path.join(directory, "meta.json")):
            started = time.perf_counter()
            with _building(directory) as tmp:
                for side, model in models.items():
                    _encode_file(model, os.path.join(text.directory, f"train.{side}"), os.path.join(tmp, side))
                _write_json(
                    os.path.join(tmp, "meta.json"),
                    {"src_model": src_model, "tgt_model": tgt_model, "pairs": text.num_pairs},
                )
            log(f"prepare: {text.num_pairs:,} pairs tokenized in {time.perf_counter() - started:.1f} s")

    def mapped(name: str) -> np.ndarray:
        path = os.path.join(directory, name)
        return np.memmap(path, np.int32, "r") if os.path.getsize(path) else np.zeros(0, np.int32)

    src_len, tgt_len = np.array(mapped("src.len")), np.array(mapped("tgt.len"))
    if len(src_len) != text.num_pairs or len(tgt_len) != text.num_pairs:
        raise DataError(f"{directory}: the prepared ids do not match {text.directory}; delete both and rerun")
    return PreparedIds(directory, mapped("src.ids"), src_len, mapped("tgt.ids"), tgt_len)


def _encode_file(model: str, path: str, prefix: str) -> None:
    """The ids of each line of `path` into PREFIX.ids (back to back) and PREFIX.len, a chunk at a time."""
    with (
        open(path, encoding="utf-8", newline="\n") as f,
        open(f"{prefix}.ids", "wb") as out_ids,
        open(f"{prefix}.len", "wb") as out_len,
    ):
        batch: list[str] = []
        for line in f:
            batch.append(line[:-1])
            if len(batch) == CHUNK_PAIRS:
                _write_encoded(model, batch, out_ids, out_len)
                batch = []
        if batch:
            _write_encoded(model, batch, out_ids, out_len)


def _write_encoded(model: str, lines: list[str], out_ids, out_len) -> None:
    flat, lengths = _encode_chunk(model, lines)
    out_ids.write(flat.tobytes())
    out_len.write(lengths.tobytes())
