"""Config checks: impossible values and resuming with an incompatible config are errors."""

from __future__ import annotations

import json
import os

import ml_collections

# Settings that change the shape or meaning of checkpointed state or tokenizers.
_FIXED_ON_RESUME = ("seed", "data.vocab_size", "data.joint_vocab", "data.spm_model_type", "data.lowercase") + tuple(
    f"model.{k}" for k in ("emb_dim", "hidden_size", "num_layers", "bidirectional", "feed_context", "tie_embeddings", "attention", "input_feeding")
) + ("train.optimizer", "train.batch_size")


class ConfigError(ValueError):
    """A configuration that cannot work, said in a sentence."""


def _get(config, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def validate(config) -> None:
    positive = [
        "data.vocab_size", "data.max_len", "data.num_buckets", "data.pad_multiple",
        "model.emb_dim", "model.hidden_size", "model.num_layers", "model.scan_unroll",
        "train.batch_size", "train.num_steps", "train.log_every", "train.eval_every",
        "train.checkpoint_every", "train.max_to_keep", "decode.beam_size", "decode.batch_size",
    ]
    for key in positive:
        if _get(config, key) <= 0:
            raise ConfigError(f"{key} must be positive, got {_get(config, key)}")
    if config.data.vocab_size < 8:
        raise ConfigError(f"data.vocab_size={config.data.vocab_size} leaves no room beyond the 4 reserved ids")
    for key in ("model.dropout", "train.label_smoothing"):
        if not 0.0 <= _get(config, key) < 1.0:
            raise ConfigError(f"{key} must be in [0, 1), got {_get(config, key)}")
    if not 0.0 <= config.train.teacher_forcing_ratio <= 1.0:
        raise ConfigError(f"train.teacher_forcing_ratio must be in [0, 1], got {config.train.teacher_forcing_ratio}")
    if config.train.learning_rate <= 0:
        raise ConfigError(f"train.learning_rate must be positive, got {config.train.learning_rate}")
    from s2s_jax.attention import KINDS

    if config.model.attention not in KINDS:
        raise ConfigError(f"model.attention must be one of {', '.join(KINDS)}, got {config.model.attention!r}")
    if config.model.attention == "luong_dot" and config.model.bidirectional:
        raise ConfigError("model.attention=luong_dot needs a unidirectional encoder; use luong_general")
    if config.train.on_nonfinite not in ("stop", "skip"):
        raise ConfigError(f"train.on_nonfinite must be stop or skip, got {config.train.on_nonfinite!r}")


def check_and_save(config, workdir: str) -> None:
    """Saves the resolved config as WORKDIR/config.json; refuses to resume under a different model."""
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            saved = ml_collections.ConfigDict(json.load(f))
        for key in _FIXED_ON_RESUME:
            old, new = _get(saved, key), _get(config, key)
            if old != new:
                raise ConfigError(
                    f"{workdir} was trained with {key}={old!r}, this run asks for {new!r}; "
                    "use a new --workdir or the original setting"
                )
    with open(path, "w", encoding="utf-8") as f:
        f.write(config.to_json(indent=2))


def load(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run saved in its workdir (plain JSON, never unpickled)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        from s2s_jax.checkpoints import CheckpointError

        raise CheckpointError(f"{workdir} has no config.json: is it a training workdir?")
    with open(path, encoding="utf-8") as f:
        return ml_collections.ConfigDict(json.load(f))
