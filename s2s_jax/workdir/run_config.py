"""A run's saved config, WORKDIR/config.json: written by train.py, read by every command that
loads the workdir; resuming under settings that change the saved state is refused."""

from __future__ import annotations

import json
import os

import ml_collections

from s2s_jax.errors import CheckpointError, ConfigError
from s2s_jax.files import write_atomic

# Settings that change the shape or meaning of checkpointed state or tokenizers.
_FIXED_ON_RESUME = (
    (
        "seed",
        "data.vocab_size",
        "data.joint_vocab",
        "data.spm_model_type",
        "data.spm_alpha",
        "data.spm_nbest",
        "data.lowercase",
        "data.d2l_preprocess",
        "data.pairs",
        "data.lang_tags",
    )
    + tuple(
        f"model.{k}"
        for k in (
            "cell",
            "emb_dim",
            "hidden_size",
            "num_layers",
            "bidirectional",
            "feed_context",
            "tie_embeddings",
            "attention",
            "input_feeding",
        )
    )
    + (
        "train.optimizer",
        "train.batch_size",
        "train.max_tokens",
        "train.ema_decay",
        "train.ema_warmup",
        "train.early_stop_metric",
        "train.lr_schedule",
    )
)

# Settings whose value may change on resume but not cross a line that changes the saved state's
# structure: (key, what is fixed, that fact of a value).
_SWITCHES_FIXED_ON_RESUME = (("train.clip_norm", "gradient clipping (clip_norm > 0)", lambda value: value > 0),)


def get_dotted(config, dotted: str):
    """`config["a"]["b"]` for `"a.b"`; KeyError when a part is missing."""
    for part in dotted.split("."):
        config = config[part]
    return config


def has_trained_state(workdir: str) -> bool:
    """Whether a previous run left tokenizers or checkpoints that depend on the config."""
    if any(os.path.exists(os.path.join(workdir, name)) for name in ("spm.model", "spm_src.model", "spm_tgt.model")):
        return True
    for sub in ("checkpoints", "best"):
        directory = os.path.join(workdir, sub)
        if os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory)):
            return True
    return False


def _read_json(path: str) -> ml_collections.ConfigDict:
    try:
        with open(path, encoding="utf-8") as f:
            return ml_collections.ConfigDict(json.load(f))
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise ConfigError(
            f"{path} is not a readable config ({err}); train.py writes it: restore it or use a new --workdir"
        ) from None


def check_and_save(config, workdir: str) -> None:
    """Saves the resolved config as WORKDIR/config.json; refuses to resume under a different model.

    Only a workdir holding tokenizers or checkpoints is held to its old settings:
    one whose first run failed before training (e.g. on a data error) takes the new config.
    """
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path) and has_trained_state(workdir):
        saved = _read_json(path)
        from s2s_jax.configs import default

        defaults = default.get_config()

        def saved_value(key: str):
            try:
                return get_dotted(saved, key)
            except KeyError:  # saved by an older version without that key: it had the default
                return get_dotted(defaults, key)

        for key in _FIXED_ON_RESUME:
            old, new = saved_value(key), get_dotted(config, key)
            if old != new:
                raise ConfigError(
                    f"{workdir} was trained with {key}={old!r}, this run asks for {new!r}; "
                    "use a new --workdir or the original setting"
                )
        for key, what, fact in _SWITCHES_FIXED_ON_RESUME:
            old, new = saved_value(key), get_dotted(config, key)
            if fact(old) != fact(new):
                raise ConfigError(
                    f"{workdir} was trained with {key}={old!r}, this run asks for {new!r}: that turns {what} "
                    f"{'off' if fact(old) else 'on'}, which changes the saved optimizer state; use a new --workdir "
                    f"or keep it {'on' if fact(old) else 'off'}"
                )
    write_atomic(path, config.to_json(indent=2))  # a kill mid-write never leaves half a config


def load(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run saved in its workdir (plain JSON, never unpickled)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise CheckpointError(f"{workdir} has no config.json: is it a training workdir?")
    return _read_json(path)
