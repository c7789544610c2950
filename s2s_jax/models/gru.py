"""A GRU layer over time, built like the LSTM layer (s2s_jax/models/lstm.py) for speed and padding.

The maths is flax's `nn.GRUCell` and PyTorch's `nn.GRU`, the "reset-after" form:

    r = sigmoid(W_ir x + b_ir + W_hr h)         z = sigmoid(W_iz x + b_iz + W_hz h)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

(d2l's from-scratch GRU is the "reset-before" form, tanh(W_in x + W_hn (r * h) + b);
the two are different functions with the same parameter count). The carry is h alone.
As in the LSTM layer, the input projection for every time step (all three gates, with
their input biases) is one matmul before the loop, and only `h @ W_h` ([H, 3H]) and the
gate arithmetic stay inside `nn.scan`; `tests/test_gru.py` checks it parameter for
parameter against `nn.GRUCell` stepped in a Python loop. Padded positions (mask False)
leave the carry unchanged and emit zeros.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax.kernels import recurrence as kernel
from s2s_jax.models import int8_weights
from s2s_jax.models.lstm import FUSED_MIN_ROWS, run_recurrence, runs_fused, step_lengths
from s2s_jax.models.time_segments import Segments


def gru_update(x_proj: jax.Array, h_proj: jax.Array, bias_n: jax.Array, h: jax.Array) -> jax.Array:
    """h' from the input part [B, 3H] and the recurrent part h @ W_h [B, 3H], both laid out (r, z, n)."""
    x_r, x_z, x_n = jnp.split(x_proj, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(h_proj, 3, axis=-1)
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * (h_n + bias_n))
    return (1.0 - z) * n + z * h


class _Recurrence(nn.Module):
    """One time step given the precomputed input projection; scanned over time."""

    hidden_size: int
    dtype: Any = jnp.float32
    int8: bool = False  # W_hh in int8 (s2s_jax/models/int8_weights.py)

    @nn.compact
    def __call__(self, h: jax.Array, inputs: tuple[jax.Array, jax.Array]):
        x_proj, mask = inputs
        orthogonal = nn.initializers.orthogonal()
        h_proj = int8_weights.recurrent_product(self, h, self.hidden_size, 3, self.dtype, self.int8, orthogonal)
        bias_n = self.param("bias_n", nn.initializers.zeros_init(), (self.hidden_size,))
        new_h = gru_update(x_proj.astype(jnp.float32), h_proj, bias_n, h)
        if mask is None:  # every position real
            return new_h, new_h.astype(self.dtype)
        keep = mask[:, None]
        new_h = jnp.where(keep, new_h, h)
        return new_h, jnp.where(keep, new_h, 0.0).astype(self.dtype)


class _FusedRecurrence(nn.Module):
    """`_Recurrence`'s parameters, the whole time loop in one call of the fused kernel."""

    hidden_size: int

    @nn.compact
    def __call__(self, h: jax.Array, x_proj: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        kernel_hh = self.param("kernel", nn.initializers.orthogonal(), (self.hidden_size, 3 * self.hidden_size))
        bias_n = self.param("bias_n", nn.initializers.zeros_init(), (self.hidden_size,))
        f32 = jnp.float32
        return kernel.gru(x_proj.astype(f32), kernel_hh, bias_n, h.astype(f32), lengths)


class GRULayer(nn.Module):
    """One GRU layer over a [B, T, D] batch with a [B, T] mask of real positions (None: all real).

    Returns the outputs [B, T, H] (zero at padding) and the final carry h [B, H],
    taken at each row's last real position. Same interface as `LSTMLayer`.
    """

    hidden_size: int
    unroll: int = 1
    dtype: Any = jnp.float32
    fused: bool = False  # the time loop in the compiled CPU kernel (s2s_jax.models.recurrences)
    int8: bool = False  # int8 weight matrices (s2s_jax/models/int8_weights.py)
    fused_min_rows: int = FUSED_MIN_ROWS  # fewer rows run the masked scan (s2s_jax.models.lstm)

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        mask: jax.Array | None,
        initial_carry: jax.Array | None = None,
        segments: Segments | None = None,
    ):
        if initial_carry is None:
            initial_carry = jnp.zeros((inputs.shape[0], self.hidden_size), jnp.float32)
        x_proj = int8_weights.dense(3 * self.hidden_size, int8_weights=self.int8, dtype=self.dtype, name="input")(
            inputs
        )
        if runs_fused(self.fused, inputs, self.fused_min_rows):
            return _FusedRecurrence(self.hidden_size, name="recurrent")(
                initial_carry, x_proj, step_lengths(x_proj, mask)
            )
        return run_recurrence(
            _Recurrence, self.hidden_size, self.dtype, self.unroll, initial_carry, x_proj, mask, segments, self.int8
        )
