"""int8 weights (s2s_jax/kernels/int8.py): quantize/dequantize and the int8 matmul.

Oracle: a numpy transcription of the documented arithmetic (float32 ops in the same order,
int64 sums). The compiled kernel (each instruction-set variant, in a fresh process) and the
pure-JAX path must both equal it bit for bit, also under vmap, jit and a while_loop; the
result is within the worst-case rounding bound of the float matmul.
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.kernels import int8
from tests.helpers import cpu_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_kernel = pytest.mark.skipif(not int8.available(), reason="the int8 kernel is not built here")


# ------------------------------------------------------------------------- numpy reference
def np_quantize(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    amax = np.max(np.abs(w), axis=0)
    scale = np.where(amax == 0, np.float32(1), amax / np.float32(127)).astype(np.float32)
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale


def np_matmul(x: np.ndarray, q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    amax = np.max(np.abs(x), axis=-1, keepdims=True)
    safe = np.where(amax == 0, np.float32(1), amax)
    xq = np.clip(np.rint(x * (np.float32(127) / safe)), -127, 127).astype(np.int64)
    row_scale = np.where(amax == 0, np.float32(0), amax / np.float32(127))
    acc = (xq @ q.astype(np.int64)).astype(np.float32)
    return (acc * row_scale) * scale


def case(m: int, k: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x [m, k] with an all-zero row, a huge row and a tiny one (where m allows); w [k, n] with a zero column."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, k)).astype(np.float32)
    w = (rng.normal(size=(k, n)) * rng.uniform(0.01, 3, size=n)).astype(np.float32)
    w[:, n // 2] = 0
    if m >= 3:
        x[1] = 0
        x[2] *= np.float32(1e30)
    if m >= 5:
        x[4] *= np.float32(1e-30)  # small but normal: XLA:CPU flushes subnormals, numpy does not
        x[3, ::2] = np.float32(1e-20)  # values that quantize to 0 next to ordinary ones
    return x, w


SHAPES = [(1, 13, 7), (3, 13, 7), (5, 130, 33), (17, 67, 129), (3, 260, 200), (2, 1030, 70)]


def check_equals_numpy(m: int, k: int, n: int) -> None:
    x, w = case(m, k, n)
    mat = int8.quantize(w)
    expected = np_matmul(x, np.asarray(int8.unpack(mat)), np.asarray(mat.scale))
    got = np.asarray(jax.jit(int8.matmul)(x, mat))
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.asarray(jax.jit(int8._reference)(x, mat)), expected)


# ---------------------------------------------------------------------------- quantization
def test_quantize_packs_numpys_quantization_and_round_trips_within_half_a_step():
    _, w = case(1, 13, 7)
    mat = int8.quantize(w)
    q, scale = np_quantize(w)
    assert mat.k == 13 and mat.packed.shape == (4, 7, 4) and mat.packed.dtype == jnp.int8
    np.testing.assert_array_equal(np.asarray(mat.scale), scale)
    assert scale[3] == 1.0  # the all-zero column
    packed = np.asarray(mat.packed)
    for k in range(16):
        np.testing.assert_array_equal(packed[k // 4, :, k % 4], q[k] if k < 13 else 0)
    np.testing.assert_array_equal(np.asarray(int8.unpack(mat)), q)
    np.testing.assert_array_equal(np.asarray(jax.jit(int8.quantize)(w).packed), packed)  # jitted too
    err = np.abs(np.asarray(int8.dequantize(mat)) - w)
    assert (err <= scale / 2 * (1 + 1e-6)).all()  # rint's half step, plus the rounding of w / scale
    assert int8.dequantize(mat).dtype == jnp.float32


# ---------------------------------------------------------------------------------- matmul
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_matmul_equals_the_numpy_reference_bit_for_bit(m, k, n):
    check_equals_numpy(m, k, n)


@pytest.mark.parametrize("m,k,n", [(1, 13, 7), (17, 67, 129)])
def test_the_pure_jax_path_runs_without_the_kernel_and_equals_it(monkeypatch, m, k, n):
    x, w = case(m, k, n, seed=1)
    mat = int8.quantize(w)
    with_kernel = np.asarray(int8.matmul(x, mat))
    monkeypatch.setattr(int8, "int8_cpu", None)
    without = np.asarray(jax.jit(int8.matmul)(x, mat))
    np.testing.assert_array_equal(without, with_kernel)
    np.testing.assert_array_equal(without, np_matmul(x, np.asarray(int8.unpack(mat)), np.asarray(mat.scale)))


@needs_kernel
def test_the_kernel_runs_on_the_cpu():
    x, w = case(3, 13, 7)
    text = jax.jit(int8.matmul).lower(x, int8.quantize(w)).as_text()
    assert "s2s_int8_matmul" in text
    assert int8.isa() in ("avx512vnni", "avx2", "generic")


@needs_kernel
@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512vnni"])
def test_each_instruction_set_variant_equals_numpy_too(isa):
    """The narrower inner loops (what a CPU without AVX-512 VNNI or AVX2 runs), forced in a fresh process."""
    needs = {"generic": set(), "avx2": {"avx2"}, "avx512vnni": {"avx512f", "avx512bw", "avx512_vnni"}}[isa]
    if not needs <= cpu_flags():
        pytest.skip(f"this CPU has no {isa}")
    if isa == int8.isa():
        pytest.skip(f"{isa} is what this process runs: every other test here checks it")
    code = (
        f"from s2s_jax.kernels import int8; assert int8.isa() == {isa!r}, int8.isa(); "
        "import tests.test_int8 as t; [t.check_equals_numpy(*s) for s in t.SHAPES[1::2]]; print('ok')"
    )
    env = {**os.environ, "S2S_JAX_KERNEL_ISA": isa, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_each_row_is_independent_of_the_others():
    x, w = case(17, 67, 129)
    mat = int8.quantize(w)
    together = np.asarray(int8.matmul(x, mat))
    for i in (0, 1, 2, 16):
        np.testing.assert_array_equal(np.asarray(int8.matmul(x[i], mat)), together[i])
    np.testing.assert_array_equal(np.asarray(int8.matmul(x.reshape(17, 1, 67), mat)), together[:, None])


def test_vmap_folds_the_batch_into_rows_and_a_batched_matrix_runs_one_by_one():
    x, w = case(17, 67, 129)
    mat = int8.quantize(w)
    flat = np.asarray(int8.matmul(x, mat))
    xb = x[:15].reshape(3, 5, 67)
    np.testing.assert_array_equal(
        np.asarray(jax.jit(jax.vmap(int8.matmul, (0, None)))(xb, mat)), flat[:15].reshape(3, 5, -1)
    )
    nested = jax.vmap(jax.vmap(int8.matmul, (0, None)), (1, None))(xb, mat)  # rows of 3 per outer element
    np.testing.assert_array_equal(np.asarray(nested), flat[:15].reshape(3, 5, -1).transpose(1, 0, 2))
    mats = jax.vmap(int8.quantize)(jnp.stack([w, 2 * w]))
    both = jax.vmap(int8.matmul, (None, 0))(x[:3], mats)
    np.testing.assert_array_equal(np.asarray(both[0]), flat[:3])
    np.testing.assert_array_equal(np.asarray(both[1]), np.asarray(int8.matmul(x[:3], int8.quantize(2 * w))))


def test_inside_a_jitted_while_loop():
    x, w = case(5, 40, 40)
    mat = int8.quantize(w)

    @jax.jit
    def run(x, mat):
        def body(state):
            i, h = state
            return i + 1, jax.vmap(int8.matmul, (0, None))(h, mat)

        return jax.lax.while_loop(lambda s: s[0] < 4, body, (0, x[:, None]))[1]

    h = x
    for _ in range(4):
        h = np_matmul(h, np.asarray(int8.unpack(mat)), np.asarray(mat.scale))
    np.testing.assert_array_equal(np.asarray(run(x, mat))[:, 0], h)


def test_within_the_rounding_bound_of_the_float_matmul():
    """|y - x @ w| <= sum_k |x_k| * scale_n / 2 + |w^_kn| * row_scale / 2: each factor is off by at
    most half its step (w^ = the dequantized w); the 1e-5 relative slack covers float32 rounding."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(9, 300)).astype(np.float32)
    w = rng.normal(size=(300, 50)).astype(np.float32) * 0.1
    mat = int8.quantize(w)
    y = np.asarray(int8.matmul(x, mat)).astype(np.float64)
    exact = x.astype(np.float64) @ w.astype(np.float64)
    w_hat, scale = np.asarray(int8.dequantize(mat)), np.asarray(mat.scale)
    row_scale = np.abs(x).max(axis=1, keepdims=True) / 127
    bound = np.abs(x).sum(1, keepdims=True) * scale / 2 + np.abs(w_hat).sum(0) * row_scale / 2
    assert (np.abs(y - exact) <= bound * (1 + 1e-5) + 1e-6).all()
    assert np.abs(y - exact).max() < 0.02 * np.abs(exact).max()  # and in practice ~1% of the outputs' range


def test_bad_shapes_are_a_value_error():
    mat = int8.quantize(np.ones((8, 3), np.float32))
    with pytest.raises(ValueError, match=r"x of shape \(2, 7\) does not match a matrix of 8 rows"):
        int8.matmul(np.ones((2, 7), np.float32), mat)
    with pytest.raises(ValueError, match="quantize takes a"):
        int8.quantize(np.ones(3, np.float32))
    assert int8.matmul(np.ones((0, 8), np.float32), mat).shape == (0, 3)
