"""Global attention over every encoder state: Bahdanau (additive) and Luong (dot, general).

Keys are projected once per sentence (`keys`), never once per decoder step.
Scores at padded source positions are masked before the softmax, so their
weights are exactly 0 and each row sums to 1.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax.models import int8_weights


@dataclasses.dataclass(frozen=True)
class Scoring:
    """How one kind of attention scores a decoder query against the encoder states."""

    project_keys: bool  # keys = W_k values, projected once per sentence; else the values themselves
    additive: bool  # v . tanh(W_q q + k) (Bahdanau); else the dot product q . k (Luong)


# `model.attention` names -> how they score; "none" (no attention) is the only other accepted value.
SCORINGS: dict[str, Scoring] = {
    "bahdanau": Scoring(project_keys=True, additive=True),
    "luong_dot": Scoring(project_keys=False, additive=False),
    "luong_general": Scoring(project_keys=True, additive=False),
}
KINDS = ("none", *SCORINGS)


class Attention(nn.Module):
    """score(q, k_s): bahdanau v.tanh(W_q q + U k_s); luong_general q.W_a k_s; luong_dot q.k_s."""

    kind: str
    hidden_size: int
    dtype: Any = jnp.float32
    int8: bool = False  # int8 weight matrices (s2s_jax/models/int8_weights.py)

    def setup(self):
        if self.kind not in SCORINGS:
            raise ValueError(f"model.attention must be one of {', '.join(SCORINGS)}, not {self.kind!r}")
        scoring = SCORINGS[self.kind]
        if scoring.project_keys:
            self.key_proj = self._dense(self.hidden_size, "key")
        if scoring.additive:
            self.query_proj = self._dense(self.hidden_size, "query")
            self.energy = self._dense(1, "energy")

    def _dense(self, features: int, name: str) -> nn.Module:
        return int8_weights.dense(features, int8_weights=self.int8, use_bias=False, dtype=self.dtype, name=name)

    def keys(self, values: jax.Array) -> jax.Array:
        """[B, S, Hv] encoder outputs -> [B, S, H] keys, once per sentence."""
        if not SCORINGS[self.kind].project_keys:
            if values.shape[-1] != self.hidden_size:
                raise ValueError(
                    "luong_dot attention needs encoder outputs of the decoder's size; "
                    "use luong_general with a bidirectional encoder"
                )
            return values
        return self.key_proj(values)

    def __call__(
        self, query: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """query [B, T, H] -> (context [B, T, Hv], weights [B, T, S])."""
        if SCORINGS[self.kind].additive:
            q = self.query_proj(query)
            scores = self.energy(jnp.tanh(q[:, :, None, :] + keys[:, None, :, :]))[..., 0]
        else:
            scores = jnp.einsum("bth,bsh->bts", query.astype(keys.dtype), keys)
        scores = jnp.where(mask[:, None, :], scores.astype(jnp.float32), -1e9)
        weights = jax.nn.softmax(scores, axis=-1)
        weights = jnp.where(mask[:, None, :], weights, 0.0)
        context = jnp.einsum("bts,bsh->bth", weights.astype(values.dtype), values)
        return context, weights
