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
    logits = logits.astype(jnp.float32)
    weights = (targets != PAD_ID).astype(jnp.float32)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    if label_smoothing > 0.0:
        smooth = -log_probs.mean(axis=-1)
        loss = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    else:
        loss = nll
    return {
        "loss_sum": (loss * weights).sum(),
        "nll_sum": (nll * weights).sum(),
        "tokens": weights.sum(),
    }
