"""Masked token-level cross-entropy: padding contributes nothing."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from s2s_jax.tokenizer import PAD_ID


def masked_cross_entropy(
    logits: jax.Array, targets: jax.Array, label_smoothing: float = 0.0
) -> dict[str, jax.Array]:
    """Sums over real target tokens, so callers can average exactly across batches.

    Returns `loss_sum` (the training objective, label-smoothed when asked),
    `nll_sum` (plain negative log-likelihood, for perplexity) and `tokens`
    (the number of non-pad targets). Label smoothing spreads `label_smoothing`
    uniformly over the vocabulary, as `optax.smooth_labels` does.
    """
    # Written with logsumexp rather than a [B, T, V] log_softmax array: the vocabulary
    # axis is the largest in the model, and every full pass over it costs time.
    logits = logits.astype(jnp.float32)
    weights = (targets != PAD_ID).astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    nll = log_z - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    if label_smoothing > 0.0:
        smooth = log_z - logits.mean(axis=-1)  # mean over the vocabulary of -log p
        loss = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    else:
        loss = nll
    return {
        "loss_sum": (loss * weights).sum(),
        "nll_sum": (nll * weights).sum(),
        "tokens": weights.sum(),
    }
