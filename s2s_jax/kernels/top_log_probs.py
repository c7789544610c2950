"""Each row's n best tokens and their log-softmax log-probabilities, in one custom call on the CPU.

A beam step needs, for each hypothesis's logits x [V], its n = 2K best tokens and their
log-probabilities (search.py's candidates). XLA:CPU makes three or four passes over the
[K, V] logits for it (the max, the sum of exp, the top-k), about a quarter of a batch-1 beam
step at V = 8,000 with int8 weights. The kernel (cpu/top_log_probs_*.cc, built at install
time, its instruction set picked at run time) makes two passes over each row while it stays
in cache. Where it was not built, off the CPU, or inside `loader.portable()`, the same
arithmetic runs in XLA (`reference`):

    m = max(x); s = log(sum(exp(x - m)))
    values, indices = lax.top_k(x, n); values = (values - m) - s

Both order ties as lax.top_k does (the lower index first, -0.0 below 0.0), so the indices are
equal; the values may differ in the last ulp or two (the kernel's exp and summation order for
s are its own). Inputs are not NaN. Inference only: no gradient.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from s2s_jax.kernels import loader

top_log_probs_cpu, _WHY = loader.load("top_log_probs_cpu")


def available() -> bool:
    """Whether the compiled kernel is importable here."""
    return top_log_probs_cpu is not None


def unavailable_reason() -> str:
    """Why `available()` is False (empty when it is True)."""
    return _WHY


def isa() -> str:
    """The instruction set of the kernel's row function here ("avx512", "avx2", "generic"; "none")."""
    return loader.isa(top_log_probs_cpu)


def reference(x: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """The pure-JAX path: x [..., V] float32 -> (values [..., n], indices [..., n] int32)."""
    x_max = jnp.max(x, axis=-1, keepdims=True)
    shifted_lse = jnp.log(jnp.sum(jnp.exp(x - x_max), axis=-1, keepdims=True))
    top_x, top_t = lax.top_k(x, n)
    return (top_x - x_max) - shifted_lse, top_t


def _kernel(x: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """The FFI custom call; under vmap the batch axes are more rows (broadcast_all)."""
    lead = x.shape[:-1]
    out = (jax.ShapeDtypeStruct((*lead, n), jnp.float32), jax.ShapeDtypeStruct((*lead, n), jnp.int32))
    values, indices = loader.ffi_call(top_log_probs_cpu, "s2s_top_log_probs", out, vmap_method="broadcast_all")(x)
    return values, indices


def top_log_probs(x: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """x [..., V] logits -> log_softmax(x)'s n largest values [..., n] float32 and their indices
    [..., n] int32, best first, ties to the lower index (`reference`, on the CPU the kernel)."""
    x = jnp.asarray(x, jnp.float32)
    if x.ndim == 0 or not 1 <= n <= x.shape[-1]:
        raise ValueError(f"top_log_probs: need 1 <= n <= V, got n={n} for logits of shape {x.shape}")
    if x.size == 0 or top_log_probs_cpu is None or loader.portable_only():
        return reference(x, n)
    # The kernel where this lowers for the CPU, XLA elsewhere (GPU, TPU).
    return lax.platform_dependent(x, cpu=functools.partial(_kernel, n=n), default=functools.partial(reference, n=n))
