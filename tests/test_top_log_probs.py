"""Rows' top-n log-probabilities (s2s_jax/kernels/top_log_probs.py) and beam search on them.

Oracle: numpy. The indices are the n largest entries under XLA's TopK order (a total order on the
float bits, -0.0 below 0.0, ties to the lower index); the values (x - m) - log(sum(exp(x - m)))
with the sum in float64. The kernel (each instruction-set variant, in a fresh process) must give
the same indices as numpy and as the pure-JAX path, and values within a few ulps; whole beam
searches must give the same outputs with the kernel and without.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.decoding import search
from s2s_jax.kernels import loader, top_log_probs
from s2s_jax.models.seq2seq import Seq2Seq
from tests.helpers import cpu_flags, tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_kernel = pytest.mark.skipif(not top_log_probs.available(), reason="the top_log_probs kernel is not built here")
# (rows, V, n): V below, at and past the vector widths (4, 8, 16 floats), n = 2K for K in 1, 2, 5, 10.
SHAPES = [(3, 1, 1), (4, 7, 2), (5, 16, 4), (5, 37, 10), (2, 100, 20), (5, 8000, 10), (3, 8001, 20), (7, 1029, 2)]


# ------------------------------------------------------------------------- numpy reference
def np_order_keys(x: np.ndarray) -> np.ndarray:
    """XLA TopK's sort key: the float bits, negatives with their magnitude bits flipped."""
    bits = x.astype(np.float32).view(np.int32).astype(np.int64)
    return np.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def np_top_log_probs(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(values float64 [.., n], indices [.., n]) of each row of x [R, V]."""
    keys = np_order_keys(x)
    order = np.stack([np.lexsort((np.arange(x.shape[1]), -row))[:n] for row in keys])
    m = x.max(axis=1, keepdims=True)
    lse = np.log(np.sum(np.exp((x - m).astype(np.float64)), axis=1, keepdims=True))
    top = np.take_along_axis(x, order, axis=1)
    return (top - m).astype(np.float64) - lse, order


def case(rows: int, vocab: int, seed: int = 0) -> np.ndarray:
    """Logits with what real rows have and what breaks a top-k: ties (repeated and rounded values,
    -0.0 beside 0.0), -inf and -1e9 (banned tokens, EOS kept from ending), a wide range."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, vocab)) * rng.choice([0.5, 3.0, 20.0], size=(rows, 1))).astype(np.float32)
    x[:, ::3] = np.round(x[:, ::3])
    x[:, 1::7] = x[:, :1]
    if vocab > 4:
        x[0, 2] = -np.inf
        x[-1, 1] = np.float32(-1e9)
        x[rows // 2, 3], x[rows // 2, 4] = np.float32(-0.0), np.float32(0.0)
    if rows > 1 and vocab > 1:
        x[1, : vocab // 2] = -np.inf  # a row with half its tokens banned
        x[1, vocab // 2] = 1.0
    return x


def check_equals_numpy(rows: int, vocab: int, n: int, seed: int = 0) -> None:
    x = case(rows, vocab, seed)
    values, indices = jax.jit(functools.partial(top_log_probs.top_log_probs, n=n))(x)
    want_values, want_indices = np_top_log_probs(x, n)
    np.testing.assert_array_equal(np.asarray(indices), want_indices)
    # The values' own rounding, and a few ulps of the log-sum-exp (at least of 1).
    lse = (x.max(axis=1, keepdims=True) - want_values.max(axis=1, keepdims=True)).astype(np.float32)
    tolerance = np.spacing(np.abs(want_values).astype(np.float32)) + 4 * np.spacing(np.maximum(np.abs(lse), 1))
    assert np.all(np.abs(np.asarray(values, np.float64) - want_values) <= tolerance)


# ----------------------------------------------------------------------------- the kernel
@pytest.mark.parametrize("rows,vocab,n", SHAPES)
def test_top_log_probs_equal_the_numpy_reference(rows, vocab, n):
    check_equals_numpy(rows, vocab, n)


@pytest.mark.parametrize("rows,vocab,n", SHAPES)
def test_the_kernel_and_the_pure_jax_path_pick_the_same_tokens(rows, vocab, n):
    x = case(rows, vocab, seed=2)
    values, indices = jax.jit(functools.partial(top_log_probs.top_log_probs, n=n))(x)
    ref_values, ref_indices = jax.jit(functools.partial(top_log_probs.reference, n=n))(x)
    np.testing.assert_array_equal(np.asarray(indices), np.asarray(ref_indices))
    np.testing.assert_allclose(np.asarray(values), np.asarray(ref_values), rtol=2e-6, atol=2e-6)


@needs_kernel
def test_the_kernel_runs_on_the_cpu_and_not_inside_portable():
    x = case(3, 50)
    call = jax.jit(functools.partial(top_log_probs.top_log_probs, n=4))
    assert "s2s_top_log_probs" in call.lower(x).as_text()
    with loader.portable():
        assert (
            "s2s_top_log_probs" not in jax.jit(functools.partial(top_log_probs.top_log_probs, n=4)).lower(x).as_text()
        )
    assert top_log_probs.isa() in ("avx512", "avx2", "generic")


@needs_kernel
@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_each_instruction_set_variant_equals_numpy_too(isa):
    """The narrower row functions (what a CPU without AVX-512 or AVX2 runs), forced in a fresh process."""
    needs = {"generic": set(), "avx2": {"avx2", "fma"}, "avx512": {"avx512f", "avx512dq", "avx512vl", "avx512bw"}}[isa]
    if not needs <= cpu_flags():
        pytest.skip(f"this CPU has no {isa}")
    if isa == top_log_probs.isa():
        pytest.skip(f"{isa} is what this process runs: every other test here checks it")
    code = (
        f"from s2s_jax.kernels import top_log_probs; assert top_log_probs.isa() == {isa!r}, top_log_probs.isa(); "
        "import tests.test_top_log_probs as t; [t.check_equals_numpy(*s) for s in t.SHAPES]; print('ok')"
    )
    env = {**os.environ, "S2S_JAX_KERNEL_ISA": isa, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_vmap_and_leading_axes_are_more_rows():
    x = case(6, 300, seed=3)
    flat_values, flat_indices = top_log_probs.top_log_probs(x, 6)
    batched = jax.jit(jax.vmap(lambda rows: top_log_probs.top_log_probs(rows, 6)))(x.reshape(2, 3, 300))
    leading = top_log_probs.top_log_probs(x.reshape(3, 2, 300), 6)
    for values, indices in (batched, leading):
        np.testing.assert_array_equal(np.asarray(values).reshape(6, 6), np.asarray(flat_values))
        np.testing.assert_array_equal(np.asarray(indices).reshape(6, 6), np.asarray(flat_indices))


def test_without_the_kernel_the_pure_jax_path_runs(monkeypatch):
    x = case(4, 90, seed=4)
    monkeypatch.setattr(top_log_probs, "top_log_probs_cpu", None)
    call = jax.jit(functools.partial(top_log_probs.top_log_probs, n=8))
    assert "s2s_top_log_probs" not in call.lower(x).as_text()
    values, indices = call(x)
    ref_values, ref_indices = top_log_probs.reference(jnp.asarray(x), 8)
    np.testing.assert_array_equal(np.asarray(values), np.asarray(ref_values))
    np.testing.assert_array_equal(np.asarray(indices), np.asarray(ref_indices))


@pytest.mark.parametrize("n", [0, 8])
def test_n_outside_one_to_v_is_refused(n):
    with pytest.raises(ValueError, match="need 1 <= n <= V"):
        top_log_probs.top_log_probs(np.zeros((2, 7), np.float32), n)


# ---------------------------------------------------------------------------- beam search
def _beam(model, params, src, *, beam_size: int, **kwargs):
    memory, state = model.apply({"params": params}, src, method=Seq2Seq.encode)
    step = lambda m, s, t: model.apply({"params": params}, m, s, t, method=Seq2Seq.decode_step)  # noqa: E731
    run = functools.partial(
        search.batch_beam_search, step, beam_size=beam_size, max_steps=10, nbest=beam_size, alpha=0.6, **kwargs
    )
    return jax.tree.map(np.asarray, jax.jit(run)(memory, state))


@needs_kernel
@pytest.mark.parametrize("seed,beam_size", [pytest.param(0, 1, marks=pytest.mark.slow), (1, 2), (2, 5), (3, 3)])
def test_beam_search_with_the_kernel_equals_the_pure_jax_search(monkeypatch, seed, beam_size):
    """An untrained model (near-uniform, near-tied candidates): the same hypotheses in the same order
    and the same lengths, scores within float rounding."""
    model, params = tiny_model(seed=seed, tgt_vocab_size=40)
    src = jax.random.randint(jax.random.key(seed), (4, 6), 3, 12).at[:, -1].set(0)
    with_kernel = _beam(model, params, src, beam_size=beam_size, return_token_log_probs=True)
    monkeypatch.setattr(top_log_probs, "top_log_probs_cpu", None)
    without = _beam(model, params, src, beam_size=beam_size, return_token_log_probs=True)
    tokens, scores, lengths, token_logps = with_kernel
    np.testing.assert_array_equal(tokens, without[0])
    np.testing.assert_array_equal(lengths, without[2])
    np.testing.assert_allclose(scores, without[1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(token_logps, without[3], rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
@needs_kernel
def test_translations_with_the_kernel_equal_the_pure_jax_ones(trained_workdir, monkeypatch):
    """The tiny trained model's beam-5 n-best lists over its validation set, with and without the kernel."""
    from s2s_jax.decoding.translator import SearchOptions, Translator

    with open(trained_workdir.paths["valid_src"], encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    opts = SearchOptions(beam_size=5, nbest=5, with_scores=True)
    with_kernel = Translator(trained_workdir.workdir).translate(lines, opts)
    monkeypatch.setattr(top_log_probs, "top_log_probs_cpu", None)
    without = Translator(trained_workdir.workdir).translate(lines, opts)
    for a, b in zip(with_kernel, without, strict=True):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-6, atol=1e-6)
