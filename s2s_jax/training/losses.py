"""Masked token-level cross-entropy: padding contributes nothing."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from s2s_jax.data.tokenizer import PAD_ID


def masked_cross_entropy(logits: jax.Array, targets: jax.Array, label_smoothing: float = 0.0) -> dict[str, jax.Array]:
    """Sums over real target tokens, so callers can average exactly across batches.

    Returns `loss_sum` (the training objective, label-smoothed when asked),
    `nll_sum` (plain negative log-likelihood, for perplexity) and `tokens`
    (the number of non-pad targets). Label smoothing spreads `label_smoothing`
    uniformly over the vocabulary, as `optax.smooth_labels` does.
    """
    # Written with logsumexp rather than a [B, T, V] log_softmax array: the vocabulary
    # axis is the largest in the model, and every full pass over it costs time.
    flat_targets = targets.reshape(-1)
    weights = (flat_targets != PAD_ID).astype(jnp.float32)
    logits = logits.astype(jnp.float32).reshape(flat_targets.shape[0], -1)
    loss_sum, nll_sum = _chunk_loss(logits, flat_targets, weights, label_smoothing)
    return {"loss_sum": loss_sum, "nll_sum": nll_sum, "tokens": weights.sum()}


def _chunk_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array, label_smoothing: float):
    """Weighted (label-smoothed loss, NLL) sums over rows of [N, V] logits."""
    log_z = jax.nn.logsumexp(logits, axis=-1)
    nll = log_z - jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    loss = nll
    if label_smoothing > 0.0:  # smoothing term: mean over the vocabulary of -log p
        loss = (1.0 - label_smoothing) * nll + label_smoothing * (log_z - logits.mean(axis=-1))
    return (loss * weights).sum(), (nll * weights).sum()


def compact_cross_entropy(
    features: jax.Array,
    targets: jax.Array,
    project: Callable[[jax.Array], jax.Array],
    label_smoothing: float = 0.0,
    num_chunks: int = 8,
) -> dict[str, jax.Array]:
    """`masked_cross_entropy(project(features), targets)` without computing logits at padding.

    The output layer ([N, H] x [H, V], V the vocabulary) is the largest matmul
    in the model and padded positions are a third of a batch padded to its
    longest sentence. Positions are sorted real-first and cut into
    `num_chunks` equal row blocks; a block is projected only if it holds a real
    target (`lax.cond`, so forward and backward skip it), so at most one
    partly-real block is wasted. Shapes stay static: one compile per batch shape.
    Same results as `masked_cross_entropy` up to float summation order.
    """
    hidden = features.shape[-1]
    flat_features = features.reshape(-1, hidden)
    flat_targets = targets.reshape(-1)
    n = flat_targets.shape[0]
    real = flat_targets != PAD_ID
    num_chunks = max(1, min(num_chunks, n))
    rows = -(-n // num_chunks)
    order = jnp.argsort(~real, stable=True)  # real positions first, in order
    order = jnp.pad(order, (0, rows * num_chunks - n))  # filler rows point at row 0 with weight 0
    sorted_weights = jnp.pad(real[order[:n]], (0, rows * num_chunks - n)).astype(jnp.float32)
    num_real = real.sum()

    def chunk_sums(index: jax.Array, weights: jax.Array):
        logits = project(flat_features[index]).astype(jnp.float32)
        return _chunk_loss(logits, flat_targets[index], weights, label_smoothing)

    def skip(index: jax.Array, weights: jax.Array):
        return jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)

    loss_sum = nll_sum = jnp.zeros((), jnp.float32)
    for k in range(num_chunks):
        block = slice(k * rows, (k + 1) * rows)
        loss_k, nll_k = jax.lax.cond(k * rows < num_real, chunk_sums, skip, order[block], sorted_weights[block])
        loss_sum, nll_sum = loss_sum + loss_k, nll_sum + nll_k
    return {"loss_sum": loss_sum, "nll_sum": nll_sum, "tokens": num_real.astype(jnp.float32)}
