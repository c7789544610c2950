"""Which implementation runs the recurrences' time loop (`model.recurrence`).

`scan` is `nn.scan` over the cell: the reference implementation, and the path on GPU/TPU.
`fused` is the compiled CPU kernel (s2s_jax.kernels.recurrence): one custom call per layer
and direction. `auto` takes `fused` where it can run (the kernel is built, one CPU device,
float32) and `scan` elsewhere. Both read and write the same parameters, so a workdir trained
with one decodes with the other (equal up to float rounding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from s2s_jax.kernels import loader
from s2s_jax.kernels import recurrence as kernel

RECURRENCES = ("auto", "scan", "fused")


def fused_blocker(dtype=jnp.float32) -> str | None:
    """Why the fused kernel cannot run here, or None when it can."""
    if not kernel.available():
        return (
            f"the fused CPU recurrence is missing ({kernel.unavailable_reason()}; "
            "`pip install -e .` again with a C++ compiler on the PATH builds it)"
        )
    if jax.default_backend() != "cpu":
        return f"the fused recurrence runs on the CPU only (the default backend is {jax.default_backend()})"
    if jax.device_count() != 1:
        return f"the fused recurrence runs on one CPU device ({jax.device_count()} here)"
    if jnp.dtype(dtype) != jnp.float32:
        return f"the fused recurrence computes in float32 (train.dtype is {jnp.dtype(dtype).name})"
    return None


def resolve(name: str, dtype=jnp.float32, strict: bool = True) -> str:
    """`model.recurrence` -> "scan" or "fused"; ValueError for `fused` where it cannot run, unless
    not `strict` (a trained model loaded to translate: the scan reads the same parameters, so it
    runs that with a warning)."""
    if name not in RECURRENCES:
        raise ValueError(f"model.recurrence: {name!r} is not one of {', '.join(RECURRENCES)}")
    blocker = fused_blocker(dtype)
    if name == "fused" and blocker:
        if strict:
            raise ValueError(f"model.recurrence=fused: {blocker}")
        loader.warn_once(f"this model was trained with model.recurrence=fused, but {blocker}; it runs as nn.scan")
        return "scan"
    if name == "auto":
        if blocker and not kernel.available() and jax.default_backend() == "cpu":
            loader.warn_once(f"{blocker}; the recurrences run as nn.scan")
        return "scan" if blocker else "fused"
    return name


def describe(resolved: str) -> str:
    """For the logs: "fused (avx2)" or "scan"."""
    return f"fused ({kernel.isa()})" if resolved == "fused" else resolved
