"""The server's compiled batch shapes: compiled ahead so that no request waits on a compile.

Every search a request may ask for (each of the server's beam sizes, with or without n-best,
and sampling with or without top-k and top-p) runs on one compiled program per batch shape
(`inference.BatchShape`: compiled key, rows, source widths). Compiling all of them before
/health would take minutes (beam sizes x n-best values x 6 row counts x 9 widths), so the
warm-up compiles, for each accepted search, only the programs that *cover* every batch it can
produce (`BatchShape.covers`: the largest n-best and both sampling filters at the widest source
width, for each row count): a batch whose own shape is not compiled yet runs on the smallest
compiled shape that covers it, which gives every row the same translation (its score up to float
rounding, as when it shares a batch with other texts), while its own shape compiles on a
background thread; once that is done the batch runs on its own shape. With a vocabulary
shortlist (`Translator(shortlist=True)`) its padded size is part of a shape: the covering shapes
have the largest (the vocabulary), and `full_beam_sizes` compile every size.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence

from s2s_jax.decoding import inference
from s2s_jax.decoding import shortlist as lexical
from s2s_jax.decoding.inference import BatchShape, SearchOptions


def covering_keys(beam_sizes: Sequence[int], max_nbest: int, max_mbr: int = 0) -> list[SearchOptions]:
    """The compiled keys that cover every accepted search's settings: each beam size with its
    largest n-best (which costs what n-best 1 does: the list is cut last), and sampling with
    the most samples a request may ask for (max_nbest, or max_mbr for minimum Bayes risk) and
    both filters switched on. Sampling's cost grows with its samples and the filters sort the
    vocabulary, so one sample without and one with both filters (its most common settings) have
    keys of their own. All of them report token scores and have the n-gram check switched on (a
    row with no_repeat_ngram 0 passes through it unchanged)."""
    extras = {"with_scores": True, "token_scores": True, "no_repeat_ngram": 1}
    keys = [SearchOptions(beam_size=b, nbest=min(b, max_nbest), **extras) for b in sorted(set(beam_sizes))]
    keys += [
        SearchOptions(sample=True, nbest=n, top_k=k, top_p=p, **extras)
        for n, k, p in ((1, 0, 1.0), (1, 1, 0.5), (max(max_nbest, max_mbr), 1, 0.5))
    ]
    return list(dict.fromkeys(key.compiled_key() for key in keys))


def accepted_key_count(beam_sizes: Sequence[int], max_nbest: int, max_mbr: int = 0) -> int:
    """How many compiled keys requests can ask for: n-best 1..min(b, max_nbest) per beam size,
    and 1..max(max_nbest, max_mbr) samples for each of sampling's four filter switches, each with
    and without word scores and the n-gram check."""
    return 4 * (sum(min(b, max_nbest) for b in set(beam_sizes)) + 4 * max(max_nbest, max_mbr))


def source_widths(translator) -> tuple[int, ...]:
    """Each member's widest source batch: data.max_len tokens and EOS, rounded up to a multiple of 8."""
    return tuple(inference.source_width(member.config.data.max_len + 1) for member in translator.members)


def shortlist_sizes(translator) -> list[int]:
    """The padded shortlist sizes a batch can have, ascending ([0]: no shortlist)."""
    if getattr(translator, "shortlist", None) is None:
        return [0]
    return lexical.union_sizes(translator.shortlist.tgt_vocab_size)


def all_widths(widest: int) -> range:
    """Every source width a batch can have, up to `widest`."""
    return range(inference.SOURCE_LENGTH_MULTIPLE, widest + 1, inference.SOURCE_LENGTH_MULTIPLE)


def warm_up_shapes(
    translator,
    beam_sizes: Sequence[int],
    max_nbest: int,
    max_batch: int,
    full_beam_sizes: Sequence[int] = (),
    max_mbr: int = 0,
) -> list[BatchShape]:
    """The shapes compiled before /health: the covering shapes of every accepted search (each row
    count at the widest sources and the largest shortlist size), and every shape of n-best-1
    searches with `full_beam_sizes`."""
    widest = source_widths(translator)
    sizes = shortlist_sizes(translator)
    rows = [translator.inference.padded_rows(n) for n in inference.row_counts(max_batch)]
    covering = covering_keys(beam_sizes, max_nbest, max_mbr)
    shapes = [BatchShape(key, r, widest, sizes[-1]) for key in covering for r in rows]
    for beam in full_beam_sizes:
        key = SearchOptions(beam_size=beam, with_scores=True).compiled_key()
        # Ensemble members read their own sources; the first member's width stands for all here.
        for width in all_widths(widest[0]):
            widths = tuple(min(width, w) for w in widest)
            shapes += [BatchShape(key, r, widths, size) for r in rows for size in sizes]
    return list(dict.fromkeys(shapes))


class ShapeRegistry:
    """The compiled shapes of one Translator's searches, and the choice of the shape a batch runs on
    (`choose`, installed as its `Inference.choose_shape`). Shapes not compiled yet compile on one
    background thread, in the order batches first needed them."""

    def __init__(self, translator, max_keys: int = 0, log: Callable[[str], None] = lambda message: None):
        self.inference, self.params, self.log = translator.inference, translator.search_params, log
        self.max_keys = max_keys  # compiled keys requests can ask for: all are kept (Inference.max_compiled)
        # from the warm-up on, or a warm-up of more keys than the default cap would drop its first ones
        self.inference.max_compiled = max(self.inference.max_compiled, max_keys)
        self._ready: set[BatchShape] = set()
        self._queued: set[BatchShape] = set()
        self._queue: queue.SimpleQueue[BatchShape | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.warm_up_shapes = 0
        self.warm_up_seconds = 0.0
        self.covered_batches = 0  # batches that ran on a larger compiled shape than their own
        self.request_compiles = 0  # batches that found no compiled shape to run on (compiled on the request path)

    def warm_up(self, shapes: Sequence[BatchShape], workers: int | None = None) -> None:
        """Compiles `shapes` on `workers` threads (default: one per CPU; XLA compiles one program per thread)."""
        started = time.perf_counter()
        workers = workers or os.cpu_count() or 1
        step = max(len(shapes) // 10, 1)
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="s2s-warm-up") as pool:
            for done, _ in enumerate(pool.map(self._compile, shapes), 1):
                if done % step == 0 or done == len(shapes):
                    self.log(f"warm-up: {done} of {len(shapes)} batch shapes compiled")
        self.warm_up_shapes, self.warm_up_seconds = len(shapes), time.perf_counter() - started

    def _compile(self, shape: BatchShape) -> BatchShape:
        self.inference.compile_shape(self.params, shape)
        with self._lock:
            self._ready.add(shape)
        return shape

    def choose(self, shape: BatchShape) -> BatchShape:
        """`shape` when it is compiled; else the smallest compiled shape that covers it (and `shape`
        is queued to compile in the background); `shape` itself when none does."""
        with self._lock:
            if shape in self._ready:
                return shape
            if shape not in self._queued:
                self._queued.add(shape)
                self._queue.put(shape)
            covering = [s for s in self._ready if s.covers(shape)]
            if not covering:
                self.request_compiles += 1
                return shape
            self.covered_batches += 1
            return min(
                covering, key=lambda s: (s.rows, sum(s.widths), s.shortlist, s.key.nbest, s.key.top_k, -s.key.top_p)
            )

    def start(self) -> None:
        """Starts the background compiler and routes the Translator's batches through `choose`."""
        self._thread = threading.Thread(target=self._background, name="s2s-compile", daemon=True)
        self._thread.start()
        self.inference.choose_shape = self.choose

    def _background(self) -> None:
        # Below the request path's priority where the OS allows (a CPU that also runs the searches).
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while (shape := self._queue.get()) is not None:
            try:
                self._compile(shape)
            except Exception as err:  # noqa: BLE001 - the batch keeps running on its covering shape
                self.log(f"warning: compiling {shape} in the background failed: {err}")

    def close(self, timeout: float = 60.0) -> None:
        """Stops the background compiler after the compile in progress."""
        if self._thread is not None:
            while not self._queue.empty():
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
            self._queue.put(None)
            self._thread.join(timeout)

    def info(self) -> dict:
        """/info's account of the compiled shapes."""
        with self._lock:
            return {
                "compiled": len(self._ready),
                "compiling": len(self._queued - self._ready),
                "warm_up_shapes": self.warm_up_shapes,
                "warm_up_s": round(self.warm_up_seconds, 1),
                "covered_batches": self.covered_batches,
                "request_compiles": self.request_compiles,
            }


def compile_ahead(
    translator,
    beam_sizes: Sequence[int],
    max_nbest: int,
    max_batch: int,
    full_beam_sizes: Sequence[int] = (),
    log: Callable[[str], None] = lambda message: None,
    max_mbr: int = 0,
) -> ShapeRegistry:
    """The server's warm-up: compiles `warm_up_shapes` and starts routing the Translator's batches
    through a ShapeRegistry (with its background compiler), which it returns."""
    registry = ShapeRegistry(translator, accepted_key_count(beam_sizes, max_nbest, max_mbr), log)
    registry.warm_up(warm_up_shapes(translator, beam_sizes, max_nbest, max_batch, full_beam_sizes, max_mbr))
    registry.start()
    return registry
