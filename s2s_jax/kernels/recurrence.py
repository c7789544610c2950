"""A whole LSTM or GRU layer's time loop as one XLA custom call on the CPU (the fused recurrence).

`nn.scan` runs one small matmul per time step that XLA:CPU repacks every step, plus the
per-step slicing and gradient accumulation around it. The kernels in `cpu/` run the
loop themselves: W_hh packed once per call, the gate arithmetic fused into the GEMM's
epilogue, rows past their length skipped, and the backward pass writing the gradient of
every step's pre-activations so that dW_hh is one large matmul after the loop. They are
compiled at install time (setup.py); where that failed, `available()` is False and the
models run the scan (the reference implementation, and the path on GPU/TPU).

Shapes: x_proj [B, T, G*H] (the input projection with its biases, gates in flax's order),
w [H, G*H], h0/c0 [B, H], lengths [B] int32 (rows step through their first `lengths` steps, clipped
to [0, T]; outputs past them are zero and the final state is the one after the last real step).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from s2s_jax.kernels import loader

recurrence_cpu, _WHY = loader.load("recurrence_cpu")


def available() -> bool:
    """Whether the compiled kernels are importable here."""
    return recurrence_cpu is not None


def unavailable_reason() -> str:
    """Why `available()` is False (empty when it is True)."""
    return _WHY


def isa() -> str:
    """The instruction set the kernels' inner loops use on this CPU ("avx512", "avx2" or "generic";
    "none" without the kernels)."""
    return loader.isa(recurrence_cpu)


def _call(target: str, *results: jax.ShapeDtypeStruct):
    # Sequential under vmap: the kernel takes one weight matrix for all its rows.
    return loader.ffi_call(recurrence_cpu, target, results, vmap_method="sequential")


def _like(shape: tuple[int, ...]) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def _h_prev(h0: jax.Array, out: jax.Array) -> jax.Array:
    """The state each step starts from: h0, then the outputs (zero past a row's end, where its
    pre-activation gradients are zero too)."""
    return jnp.concatenate([h0[:, None], out[:, :-1]], axis=1)


# ------------------------------------------------------------------------------------ LSTM
@jax.custom_vjp
def lstm(x_proj: jax.Array, w: jax.Array, h0: jax.Array, c0: jax.Array, lengths: jax.Array):
    """-> (outputs [B, T, H], (c, h) after each row's last real step)."""
    batch, time, gates = x_proj.shape
    hidden = gates // 4
    out, h, c = _call("s2s_lstm_forward", _like((batch, time, hidden)), _like(h0.shape), _like(c0.shape))(
        x_proj, w, h0, c0, lengths
    )
    return out, (c, h)


def _lstm_fwd(x_proj, w, h0, c0, lengths):
    batch, time, gates = x_proj.shape
    hidden = gates // 4
    lengths = jnp.clip(lengths, 0, time)  # the backward pass reads them as they are
    out, h, c, c_all, acts = _call(
        "s2s_lstm_forward_train",
        _like((batch, time, hidden)),
        _like(h0.shape),
        _like(c0.shape),
        _like((batch, time, hidden)),
        _like((batch, time, gates)),
    )(x_proj, w, h0, c0, lengths)
    return (out, (c, h)), (w, h0, c0, lengths, out, c_all, acts)


def _lstm_bwd(residuals, cotangents):
    w, h0, c0, lengths, out, c_all, acts = residuals
    d_out, (d_c, d_h) = cotangents
    d_gates, d_h0, d_c0 = _call("s2s_lstm_backward", _like(acts.shape), _like(h0.shape), _like(c0.shape))(
        w, h0, c0, lengths, out, c_all, acts, d_out, d_h, d_c
    )
    d_w = jnp.einsum("bth,btg->hg", _h_prev(h0, out), d_gates)
    return d_gates, d_w, d_h0, d_c0, None


lstm.defvjp(_lstm_fwd, _lstm_bwd)


# ------------------------------------------------------------------------------------- GRU
@jax.custom_vjp
def gru(x_proj: jax.Array, w: jax.Array, bias_n: jax.Array, h0: jax.Array, lengths: jax.Array):
    """-> (outputs [B, T, H], h after each row's last real step); reset-after, as s2s_jax.models.gru."""
    batch, time, gates = x_proj.shape
    out, h = _call("s2s_gru_forward", _like((batch, time, gates // 3)), _like(h0.shape))(x_proj, w, bias_n, h0, lengths)
    return out, h


def _gru_fwd(x_proj, w, bias_n, h0, lengths):
    batch, time, gates = x_proj.shape
    hidden = gates // 3
    lengths = jnp.clip(lengths, 0, time)  # the backward pass reads them as they are
    out, h, acts = _call(
        "s2s_gru_forward_train", _like((batch, time, hidden)), _like(h0.shape), _like((batch, time, 4 * hidden))
    )(x_proj, w, bias_n, h0, lengths)
    return (out, h), (w, h0, lengths, out, acts)


def _gru_bwd(residuals, cotangents):
    w, h0, lengths, out, acts = residuals
    d_out, d_h = cotangents
    batch, time, hidden = out.shape
    d_gates, d_x, d_h0 = _call(
        "s2s_gru_backward", _like((batch, time, 3 * hidden)), _like((batch, time, 3 * hidden)), _like(h0.shape)
    )(w, h0, lengths, out, acts, d_out, d_h)
    d_w = jnp.einsum("bth,btg->hg", _h_prev(h0, out), d_gates)
    d_bias_n = d_gates[..., 2 * hidden :].sum(axis=(0, 1))
    return d_x, d_w, d_bias_n, d_h0, None


gru.defvjp(_gru_fwd, _gru_bwd)
