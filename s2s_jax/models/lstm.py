"""An LSTM layer over time, built for speed and for padded batches.

Why not `nn.RNN(nn.OptimizedLSTMCell)`: that cell multiplies the input by
W_ih inside the recurrence, one small matmul per time step. Here the input
projection for every time step is one large matmul *before* the loop, and only
`h @ W_hh` (all four gates fused in one [H, 4H] kernel) stays inside `nn.scan`.
The maths is exactly flax's `nn.LSTMCell` (gate order i, f, g, o; carry
`(c, h)`), which `tests/test_lstm.py` checks parameter for parameter.

Padding: positions where `mask` is False emit zeros and the final carry is the
state at each sentence's last real token, read there after the loop (`run_recurrence`),
so the loop body has no per-step select and saves none for the backward pass. A mask
of None means every position is real (the teacher-forced decoder).

With `fused` the time loop is one call of the compiled CPU kernel (s2s_jax.kernels.recurrence)
over the same parameter; rows stop at their last real position, so `segments` are not needed.
Below `FUSED_MIN_ROWS` rows a fused layer runs the masked scan instead, with the same result.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax.kernels import recurrence as kernel
from s2s_jax.models import int8_weights, time_segments
from s2s_jax.models.time_segments import Segments

Carry = tuple[jax.Array, jax.Array]  # (c, h), each [B, H]


def forget_bias_init(hidden_size: int):
    """Zeros, except a bias of 1 on the forget gate: a well-known aid to early training."""

    def init(key, shape, dtype=jnp.float32):
        del key
        bias = jnp.zeros(shape, dtype)
        return bias.at[hidden_size : 2 * hidden_size].set(1.0)

    return init


def lstm_gates(gates: jax.Array, c: jax.Array) -> Carry:
    """The LSTM update from pre-activation gates [B, 4H] laid out as (i, f, g, o)."""
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
    return new_c, new_h


class _Recurrence(nn.Module):
    """One time step given the precomputed input projection; scanned over time."""

    hidden_size: int
    dtype: Any = jnp.float32
    int8: bool = False  # W_hh in int8 (s2s_jax/models/int8_weights.py)

    @nn.compact
    def __call__(self, carry: Carry, inputs: tuple[jax.Array, jax.Array]):
        c, h = carry
        x_proj, mask = inputs
        orthogonal = nn.initializers.orthogonal()
        product = int8_weights.recurrent_product(self, h, self.hidden_size, 4, self.dtype, self.int8, orthogonal)
        gates = x_proj + product.astype(x_proj.dtype)
        new_c, new_h = lstm_gates(gates.astype(jnp.float32), c)
        if mask is None:
            return (new_c, new_h), new_h.astype(self.dtype)
        keep = mask[:, None]
        new_c = jnp.where(keep, new_c, c)
        new_h = jnp.where(keep, new_h, h)
        return (new_c, new_h), jnp.where(keep, new_h, 0.0).astype(self.dtype)


class _FusedRecurrence(nn.Module):
    """`_Recurrence`'s parameter, the whole time loop in one call of the fused kernel."""

    hidden_size: int

    @nn.compact
    def __call__(self, carry: Carry, x_proj: jax.Array, lengths: jax.Array) -> tuple[jax.Array, Carry]:
        kernel_hh = self.param("kernel", nn.initializers.orthogonal(), (self.hidden_size, 4 * self.hidden_size))
        c, h = carry
        f32 = jnp.float32
        return kernel.lstm(x_proj.astype(f32), kernel_hh, h.astype(f32), c.astype(f32), lengths)


# Fewer rows than this run a fused layer's time loop as the masked scan: there one step is a read of
# W_hh that XLA does at the matmul's rate, while the kernel also packs W_hh on every call. Whole
# layers, T=15, H=512, one core: the scan is faster at 1, 5 and 8 rows, the kernel from 16
# (benchmarks/README.md, "bench_decoder_step.py").
FUSED_MIN_ROWS = 16


def runs_fused(fused: bool, inputs: jax.Array, min_rows: int) -> bool:
    """Whether a layer asked for the fused kernel runs it on these [B, T, D] inputs: a time loop
    (T > 1) over at least `min_rows` rows."""
    return fused and inputs.shape[1] > 1 and inputs.shape[0] >= min_rows


def step_lengths(x_proj: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Each row's number of real steps (all of them without a mask), for the fused kernels."""
    if mask is None:
        return jnp.full(x_proj.shape[:1], x_proj.shape[1], jnp.int32)
    return mask.sum(axis=1).astype(jnp.int32)


class LSTMLayer(nn.Module):
    """One LSTM layer over a [B, T, D] batch with a [B, T] mask of real positions (None: all real).

    Returns the outputs [B, T, H] (zero at padding) and the final carry (c, h),
    taken at each row's last real position. With `segments` (rows sorted longest
    first, see s2s_jax.models.time_segments) the padded steps past each segment are skipped.
    """

    hidden_size: int
    unroll: int = 1
    dtype: Any = jnp.float32
    fused: bool = False  # the time loop in the compiled CPU kernel (s2s_jax.models.recurrences)
    int8: bool = False  # int8 weight matrices (s2s_jax/models/int8_weights.py)
    fused_min_rows: int = FUSED_MIN_ROWS  # fewer rows run the masked scan

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        mask: jax.Array | None,
        initial_carry: Carry | None = None,
        segments: Segments | None = None,
    ) -> tuple[jax.Array, Carry]:
        batch = inputs.shape[0]
        if initial_carry is None:
            zeros = jnp.zeros((batch, self.hidden_size), jnp.float32)
            initial_carry = (zeros, zeros)
        x_proj = int8_weights.dense(
            4 * self.hidden_size,
            int8_weights=self.int8,
            dtype=self.dtype,
            bias_init=forget_bias_init(self.hidden_size),
            name="input",
        )(inputs)
        if runs_fused(self.fused, inputs, self.fused_min_rows):
            recurrent = _FusedRecurrence(self.hidden_size, name="recurrent")
            return recurrent(initial_carry, x_proj, step_lengths(x_proj, mask))
        return run_recurrence(
            _Recurrence, self.hidden_size, self.dtype, self.unroll, initial_carry, x_proj, mask, segments, self.int8
        )


def _emit_carry(step: nn.Module, carry: Any, x_proj: jax.Array) -> tuple[Any, tuple[jax.Array, Any]]:
    """One unmasked step that also emits its carry, so the final state can be read at any length."""
    carry, output = step(carry, (x_proj, None))
    return carry, (output, carry)


def run_recurrence(
    step: type[nn.Module],
    hidden_size: int,
    dtype: Any,
    unroll: int,
    carry: Any,
    x_proj: jax.Array,
    mask: jax.Array | None,
    segments: Segments | None = None,
    int8: bool = False,
) -> tuple[jax.Array, Any]:
    """`step` (a cell's one-step module over precomputed input projections) over time, as the
    submodule "recurrent" of the calling layer -> (outputs [B, T, H], final carry).

    A single time step (decoding) calls the step directly, with the same parameters, instead of
    a loop around it; longer inputs go through `nn.scan`, once per time segment with `segments`
    (the same scanned module, so the same parameters). Call it from a layer's compact method.

    With a mask (the encoder) the loop body has no select either: every row steps through every
    position, emitting its carry; the final carry is read at each row's last real position and
    the outputs are zeroed at padding once, after the loop.
    """
    cell = step(hidden_size, dtype, int8, name="recurrent")
    if x_proj.shape[1] == 1:
        step_mask = None if mask is None else mask[:, 0]
        carry, output = cell(carry, (x_proj[:, 0], step_mask))
        return output[:, None], carry
    if mask is None:
        scan = nn.scan(
            lambda cell, c, xs: cell(c, (xs, None)),
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=1,
            out_axes=1,
            unroll=unroll,
        )
        run = lambda c, xs: scan(cell, c, xs)  # noqa: E731
        if segments is not None:
            return time_segments.run_segments(run, carry, x_proj, segments)
        carry, outputs = run(carry, x_proj)
        return outputs, carry
    scan = nn.scan(
        _emit_carry, variable_broadcast="params", split_rngs={"params": False}, in_axes=1, out_axes=1, unroll=unroll
    )
    run = lambda c, xs: scan(cell, c, xs)  # noqa: E731
    if segments is not None:
        (outputs, carries), _ = time_segments.run_segments(run, carry, x_proj, segments)
    else:
        outputs, carries = run(carry, x_proj)[1]
    lengths = mask.sum(axis=1)
    last = jnp.maximum(lengths - 1, 0)[:, None, None]

    def final(seq: jax.Array, initial: jax.Array) -> jax.Array:
        at_last = jnp.take_along_axis(seq, last, axis=1)[:, 0]
        return jnp.where((lengths > 0)[:, None], at_last, initial)

    outputs = jnp.where(mask[:, :, None], outputs, 0).astype(outputs.dtype)
    return outputs, jax.tree.map(final, carries, carry)


def reverse_padded(x: jax.Array, lengths: jax.Array) -> jax.Array:
    """Reverses each row's first `lengths[b]` positions along axis 1, leaving padding in place.

    Used for the backward direction of a bidirectional encoder so that it starts
    at the last real token, never at the padding. It is its own inverse.
    """
    time = x.shape[1]
    positions = jnp.arange(time)[None, :]
    source = jnp.where(positions < lengths[:, None], lengths[:, None] - 1 - positions, positions)
    return jnp.take_along_axis(x, source.reshape(source.shape + (1,) * (x.ndim - 2)), axis=1)
