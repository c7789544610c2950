"""The server's compiled batch shapes (s2s_jax/serving/shapes.py) without a model: which shapes
cover which, and which one a batch runs on while its own compiles in the background."""

from __future__ import annotations

import threading
import time
import types

from s2s_jax.decoding.inference import BatchShape, SearchOptions
from s2s_jax.serving import shapes


def key(**kwargs) -> SearchOptions:
    return SearchOptions(with_scores=True, **kwargs).compiled_key()


# Word scores and the n-gram check, each asked for or not.
EXTRAS = [{"token_scores": t, "no_repeat_ngram": r} for t in (False, True) for r in (0, 3)]


def accepted_keys(beam_sizes, max_nbest) -> set[SearchOptions]:
    """Every compiled key a request may ask for, as request_options builds them."""
    beams = {
        key(beam_size=b, nbest=n, **x) for b in beam_sizes for n in range(1, min(b, max_nbest) + 1) for x in EXTRAS
    }
    samples = {
        key(sample=True, nbest=n, top_k=k, top_p=p, **x)
        for n in range(1, max_nbest + 1)
        for k in (0, 3)
        for p in (1.0, 0.9)
        for x in EXTRAS
    }
    return beams | samples


def test_covers_needs_the_same_search_and_at_least_the_rows_widths_nbest_and_filters():
    shape = BatchShape(key(beam_size=5, nbest=3), 8, (24,))
    assert shape.covers(BatchShape(key(beam_size=5, nbest=2), 4, (16,)))
    assert shape.covers(shape)
    assert not shape.covers(BatchShape(key(beam_size=5, nbest=4), 4, (16,)))  # n-best
    assert not shape.covers(BatchShape(key(beam_size=4), 4, (16,)))  # another search
    assert not shape.covers(BatchShape(key(beam_size=5), 16, (16,)))  # rows
    assert not shape.covers(BatchShape(key(beam_size=5), 4, (32,)))  # width
    assert not shape.covers(BatchShape(key(beam_size=5), 4, (16, 16)))  # an ensemble's
    filtered = BatchShape(key(sample=True, top_k=5, top_p=0.9), 4, (16,))
    assert filtered.covers(BatchShape(key(sample=True), 4, (16,)))
    assert not BatchShape(key(sample=True, top_k=5), 4, (16,)).covers(filtered)
    assert not filtered.covers(BatchShape(key(beam_size=1), 4, (16,)))  # greedy is not sampling


def test_the_covering_keys_cover_every_accepted_search():
    for beam_sizes, max_nbest in (((1, 2, 3, 4, 5, 8), 5), ((1, 4), 2), ((3,), 1)):
        covering = shapes.covering_keys(beam_sizes, max_nbest)
        accepted = accepted_keys(beam_sizes, max_nbest)
        assert set(covering) <= accepted
        assert len(accepted) == shapes.accepted_key_count(beam_sizes, max_nbest)
        for wanted in accepted:
            assert any(BatchShape(k, 1, (8,)).covers(BatchShape(wanted, 1, (8,))) for k in covering), wanted
    assert len(shapes.covering_keys((1, 2, 3, 4, 5, 8), 5)) == 9


class _FakeInference:
    """Records the shapes compiled; a compile takes `seconds` (or waits for `release`)."""

    def __init__(self):
        self.compiled: list[tuple[str, BatchShape]] = []
        self.release = threading.Event()
        self.max_compiled, self.choose_shape = 16, None

    def compile_shape(self, params, shape: BatchShape) -> None:
        if threading.current_thread().name.startswith("s2s-compile"):
            self.release.wait(30)
        self.compiled.append((threading.current_thread().name, shape))


def test_a_batch_runs_on_the_smallest_covering_shape_until_its_own_has_compiled():
    fake = _FakeInference()
    registry = shapes.ShapeRegistry(types.SimpleNamespace(inference=fake, search_params=None), max_keys=40)
    greedy, beam = key(beam_size=1), key(beam_size=4, nbest=2)
    covering = [BatchShape(k, r, (32,)) for k in (greedy, beam) for r in (1, 2, 4)]
    assert fake.max_compiled == 40  # before the warm-up: one of more keys than the default cap keeps them all
    registry.warm_up(covering, workers=2)
    assert registry.info()["compiled"] == registry.warm_up_shapes == 6
    registry.start()
    assert fake.choose_shape == registry.choose and fake.max_compiled == 40
    try:
        own = BatchShape(key(beam_size=4), 3, (16,))
        assert registry.choose(own) == BatchShape(beam, 4, (32,))
        assert registry.choose(own) == BatchShape(beam, 4, (32,))  # queued once
        assert registry.info()["compiling"] == 1 and registry.covered_batches == 2
        fake.release.set()
        deadline = time.monotonic() + 30
        while registry.info()["compiling"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert registry.choose(own) == own
        assert [name for name, shape in fake.compiled if shape == own] == ["s2s-compile"]
        too_wide = BatchShape(greedy, 1, (40,))  # no compiled shape covers it: it compiles where it runs
        assert registry.choose(too_wide) == too_wide and registry.request_compiles == 1
    finally:
        fake.release.set()
        registry.close()
