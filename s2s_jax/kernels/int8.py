"""int8 weights: a float matrix quantized per output column, and x @ it with int8 x int8 -> int32 sums.

Decoding one sentence on a CPU streams every weight matrix from memory each step; int8 weights
read a quarter of the bytes. `matmul` quantizes each row of x on the fly (dynamic, per row, so
a row's result never depends on the other rows: batch-invariant), sums int8 products exactly
in int32 and scales back:

    amax = max|x_row|; inv = 127 / amax; row_scale = amax / 127        (float32 divisions)
    xq = clip(rint(x * inv), -127, 127)                                 (rint: half to even)
    y[n] = (float(sum_k xq[k] * q[k, n]) * row_scale) * scale[n]        (0 where amax == 0)

On the CPU it is an XLA FFI custom call (cpu/int8_*.cc, built at install time, inner loops
per instruction set picked at run time); elsewhere, or where the kernel was not built, the
same arithmetic runs as `lax.dot_general` on int8 with int32 results, equal bit for bit.
Inputs are finite; XLA:CPU flushes subnormal floats to zero, in both paths alike.
Inference only: `matmul` has no gradient.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from s2s_jax.kernels import loader

int8_cpu, _WHY = loader.load("int8_cpu")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Int8Matrix:
    """A [K, N] float matrix quantized per output column: w[k, n] ~ q[k, n] * scale[n]."""

    packed: jax.Array  # int8 [ceil(K/4), N, 4]: packed[k4, n, j] = q[4*k4 + j, n] (zero past K)
    scale: jax.Array  # float32 [N]: max|w[:, n]| / 127 (1.0 for an all-zero column)
    k: int = dataclasses.field(metadata={"static": True})  # K


def available() -> bool:
    """Whether the compiled kernel is importable here."""
    return int8_cpu is not None


def unavailable_reason() -> str:
    """Why `available()` is False (empty when it is True)."""
    return _WHY


def isa() -> str:
    """The instruction set of the kernel's inner loops here ("avx512vnni", "avx2", "generic"; "none")."""
    return loader.isa(int8_cpu)


def _divide(a: jax.Array, b: jax.Array | float) -> jax.Array:
    """a / b, a float32 division of each element (a finite). XLA rewrites a division by a broadcast
    value into a multiplication by its reciprocal (rounded differently), so the divisor is made an
    array of a's shape (b + 0 * a: batched like a under vmap) behind an optimization barrier."""
    a, b = lax.optimization_barrier((a, b + jnp.float32(0) * a))
    return a / b


def quantize(w: jax.Array) -> Int8Matrix:
    """[K, N] float -> per-column int8: scale = max|w[:, n]| / 127, q = clip(rint(w / scale), -127, 127)."""
    w = jnp.asarray(w, jnp.float32)
    if w.ndim != 2:
        raise ValueError(f"quantize takes a [K, N] matrix, not shape {w.shape}")
    k, n = w.shape
    amax = jnp.max(jnp.abs(w), axis=0) if k else jnp.zeros((n,), jnp.float32)
    scale = jnp.where(amax == 0, jnp.float32(1), _divide(amax, 127))
    q = jnp.clip(jnp.rint(_divide(w, scale)), -127, 127).astype(jnp.int8)
    k4 = -(-k // 4)
    q = jnp.pad(q, ((0, 4 * k4 - k), (0, 0)))
    return Int8Matrix(packed=q.reshape(k4, 4, n).transpose(0, 2, 1), scale=scale, k=k)


def unpack(m: Int8Matrix) -> jax.Array:
    """The int8 [K, N] matrix q."""
    k4, n, _ = m.packed.shape
    return m.packed.transpose(0, 2, 1).reshape(4 * k4, n)[: m.k]


def dequantize(m: Int8Matrix) -> jax.Array:
    """[K, N] float32 q * scale."""
    return unpack(m).astype(jnp.float32) * m.scale


def _quantize_rows(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x [M, K] -> (xq int8 [M, K], row_scale [M, 1]); an all-zero row gets xq = 0, row_scale = 0."""
    amax = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
    safe = jnp.where(amax == 0, jnp.float32(1), amax)
    inv = jnp.float32(127) / safe
    xq = jnp.clip(jnp.rint(x * inv), -127, 127).astype(jnp.int8)
    return xq, jnp.where(amax == 0, jnp.float32(0), _divide(amax, 127))


def _reference(x: jax.Array, m: Int8Matrix) -> jax.Array:
    """The pure-JAX path: [M, K] -> [M, N], the kernel's arithmetic."""
    xq, row_scale = _quantize_rows(x)
    acc = lax.dot_general(xq, unpack(m), (((1,), (0,)), ((), ())), preferred_element_type=jnp.int32)
    return (acc.astype(jnp.float32) * row_scale) * m.scale


def _kernel(x: jax.Array, m: Int8Matrix) -> jax.Array:
    """The FFI custom call: [M, K] -> [M, N]."""
    out = jax.ShapeDtypeStruct((x.shape[0], m.scale.shape[0]), jnp.float32)
    call = loader.ffi_call(int8_cpu, "s2s_int8_matmul", out, vmap_method="sequential")
    return call(x, m.packed, m.scale, k=np.int64(m.k))


def _rows(x: jax.Array, m: Int8Matrix) -> jax.Array:
    if x.shape[0] == 0 or int8_cpu is None or loader.portable_only():
        return _reference(x, m)
    # The kernel where this lowers for the CPU, the dot_general elsewhere (GPU, TPU).
    return lax.platform_dependent(x, m, cpu=_kernel, default=_reference)


@jax.custom_batching.custom_vmap
def _matmul(x: jax.Array, m: Int8Matrix) -> jax.Array:
    lead = x.shape[:-1]
    y = _rows(x.reshape(-1, m.k), m)
    return y.reshape(*lead, m.scale.shape[0])


@_matmul.def_vmap
def _matmul_vmap(axis_size: int, in_batched, x: jax.Array, m: Int8Matrix):
    """A batch of x against one matrix: its rows are just more rows. A batched matrix: one call each."""
    x_batched, m_batched = in_batched
    if not any(jax.tree_util.tree_leaves(m_batched)):
        return _matmul(x, m), True  # the batch axis (0) is a leading axis of x
    if not x_batched:
        x = jnp.broadcast_to(x, (axis_size, *x.shape))
    m = jax.tree_util.tree_map(
        lambda leaf, batched: leaf if batched else jnp.broadcast_to(leaf, (axis_size, *leaf.shape)), m, m_batched
    )
    return lax.map(lambda xm: _matmul(*xm), (x, m)), True


def matmul(x: jax.Array, m: Int8Matrix) -> jax.Array:
    """x [..., K] float32 -> [..., N] float32, x @ dequantize(m) with each row of x quantized to int8."""
    x = jnp.asarray(x, jnp.float32)
    if x.ndim == 0 or x.shape[-1] != m.k:
        raise ValueError(f"matmul: x of shape {x.shape} does not match a matrix of {m.k} rows")
    return _matmul(x, m)
