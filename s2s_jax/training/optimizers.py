"""Optimizers and learning-rate schedules by config name (`train.optimizer`, `train.lr_schedule`).

Each registry maps a name to its builder; config validation and its error messages come from
these dicts, and tests/test_config_choices.py keeps configs/default.py's documented choices equal to them.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import optax


def _warmup_constant(train_cfg, peak: float, warmup: int) -> optax.Schedule:
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])


def _warmup_cosine(train_cfg, peak: float, warmup: int) -> optax.Schedule:
    """Cosine decay to 10% of the peak at train.num_steps."""
    return optax.warmup_cosine_decay_schedule(
        0.0, peak, warmup, max(train_cfg.num_steps, warmup + 1), end_value=0.1 * peak
    )


def _warmup_rsqrt(train_cfg, peak: float, warmup: int) -> optax.Schedule:
    """Inverse square root decay after warmup (the Transformer schedule's shape)."""
    return lambda step: peak * jnp.minimum((step + 1) / warmup, jnp.sqrt(warmup / (step + 1)))


# Every schedule starts with a linear warmup over train.warmup_steps.
LR_SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    "constant": _warmup_constant,
    "cosine": _warmup_cosine,
    "rsqrt": _warmup_rsqrt,
    "plateau": _warmup_constant,  # times the training state's lr_scale: see ON_PLATEAU
}

# Schedules whose rate also follows validation: the training loop multiplies the state's
# lr_scale by train.plateau_factor after every evaluation that does not improve
# train.early_stop_metric (so it is checkpointed and resumes exactly).
ON_PLATEAU = frozenset({"plateau"})

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "adam": lambda train_cfg, schedule: optax.adam(schedule),
    "adamw": lambda train_cfg, schedule: optax.adamw(schedule, weight_decay=train_cfg.weight_decay),
}


def learning_rate_schedule(train_cfg) -> optax.Schedule:
    return LR_SCHEDULES[train_cfg.lr_schedule](train_cfg, train_cfg.learning_rate, max(1, train_cfg.warmup_steps))


def make_optimizer(train_cfg) -> optax.GradientTransformation:
    """The configured optimizer on the configured schedule, after global-norm clipping."""
    opt = OPTIMIZERS[train_cfg.optimizer](train_cfg, learning_rate_schedule(train_cfg))
    if train_cfg.clip_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(train_cfg.clip_norm), opt)
    return opt
