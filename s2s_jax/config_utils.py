"""Config checks: impossible values and resuming with an incompatible config are errors."""

from __future__ import annotations

import json
import math
import os
import re
import traceback

import ml_collections
from ml_collections import config_flags
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

# Settings that change the shape or meaning of checkpointed state or tokenizers.
_FIXED_ON_RESUME = ("seed", "data.vocab_size", "data.joint_vocab", "data.spm_model_type", "data.spm_alpha", "data.spm_nbest", "data.lowercase", "data.d2l_preprocess") + tuple(
    f"model.{k}" for k in ("cell", "emb_dim", "hidden_size", "num_layers", "bidirectional", "feed_context", "tie_embeddings", "attention", "input_feeding")
) + ("train.optimizer", "train.batch_size", "train.max_tokens", "train.ema_decay", "train.early_stop_metric", "train.lr_schedule")


class ConfigError(ValueError):
    """A configuration that cannot work, said in a sentence."""


def _get(config, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def _flag_error_message(err: BaseException, argv: list[str]) -> str:
    """A sentence for an exception ml_collections raised while applying --config overrides."""
    if isinstance(err, SyntaxError):
        where = f"{err.filename}:{err.lineno}" if err.filename else "the --config file"
        return f"{where}: {err.msg} (a syntax error in the config file)"
    text = str(err.args[0] if err.args else err)
    names = re.findall(r"[A-Za-z_]\w*", text)
    key = names[0] if names else ""
    suggestion = re.search(r'Did you mean "(\w+)"', text)
    offending = [
        a.split("=", 1)[0] for a in argv
        if a.startswith("--config.") and key and f".{key}" in a.split("=", 1)[0]
    ]
    if isinstance(err, (AttributeError, KeyError)) and offending:
        hint = f"; did you mean {suggestion.group(1)!r}?" if suggestion else ""
        return f"{offending[0]}: the config has no key {key!r}{hint} (s2s_jax/configs/default.py lists every key)"
    first = text.strip().splitlines()[0] if text.strip() else ""
    # An exception raised inside the user's config file: point at its line.
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "site-packages" not in f.filename]
    frames = [f for f in frames if os.path.basename(f.filename) not in ("train.py", "config_utils.py")]
    where = f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""
    return f"{where}{type(err).__name__}: {first} (while loading --config and its overrides)"


def parse_flags(argv: list[str]) -> list[str]:
    """absl `flags_parser` for train.py: flag errors as one line on stderr, exit status 1.

    absl turns its own flag errors into 'FATAL Flags parsing error: ...', but a
    misspelt `--config.section.key` raises AttributeError/KeyError from
    ml_collections and a config file with a syntax error raises SyntaxError,
    which would end in a traceback. Use as `app.run(main, flags_parser=parse_flags)`.
    """
    import sys

    from absl import app

    try:
        return app.parse_flags_with_usage(argv)
    except Exception as err:  # noqa: BLE001 -- anything a config file or override can raise
        sys.stderr.write(f"FATAL Flags parsing error: {_flag_error_message(err, argv)}\n")
        sys.stderr.write("Pass --helpshort or --helpfull to see help on flags.\n")
        sys.exit(1)


def check_loaded(config) -> None:
    """Turns a --config file that failed to load (ml_collections defers that error to the
    first use of the config) into a ConfigError."""
    try:
        config.get("seed")
    except ConfigError:
        raise
    except Exception as err:  # ml_collections reports OSError, ImportError, SyntaxError, ...
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = " ".join(lines[-2:]) if lines else type(err).__name__
        raise ConfigError(f"cannot load the --config file: {detail}") from None


def choices() -> dict[str, tuple[str, ...]]:
    """The accepted values of every name-valued key, read from the registries that build them."""
    from s2s_jax import attention, model, optimizers, tokenizer, training

    return {
        "data.spm_model_type": tokenizer.MODEL_TYPES,
        "model.attention": attention.KINDS,
        "model.cell": tuple(model.CELLS),
        "train.optimizer": tuple(optimizers.OPTIMIZERS),
        "train.lr_schedule": tuple(optimizers.LR_SCHEDULES),
        "train.dtype": tuple(model.DTYPES),
        "train.on_nonfinite": tuple(training.ON_NONFINITE),
        "train.early_stop_metric": tuple(training.EARLY_STOP_METRICS),
    }


def validate(config) -> None:
    positive = [
        "data.vocab_size", "data.max_len", "data.num_buckets", "data.pad_multiple",
        "model.emb_dim", "model.hidden_size", "model.num_layers", "model.scan_unroll",
        "train.batch_size", "train.accum_steps", "train.num_steps", "train.log_every", "train.eval_every",
        "train.checkpoint_every", "train.max_to_keep", "decode.beam_size", "decode.batch_size",
    ]
    for key in positive:
        if _get(config, key) <= 0:
            raise ConfigError(f"{key} must be positive, got {_get(config, key)}")
    non_negative = [
        "seed", "train.max_tokens", "data.max_train_pairs", "data.valid_max_pairs", "data.holdout_valid",
        "data.spm_input_sentences", "data.prepare_workers",
        "train.warmup_steps", "train.weight_decay", "train.clip_norm", "train.num_samples",
        "train.early_stop_patience",
        "decode.alpha", "decode.max_len_a", "decode.max_len_b",
    ]
    for key in non_negative:
        value = _get(config, key)
        if not (value >= 0 and math.isfinite(value)):  # also refuses nan
            raise ConfigError(f"{key} must be a finite number >= 0, got {value}")
    if config.data.vocab_size < 8:
        raise ConfigError(f"data.vocab_size={config.data.vocab_size} leaves no room beyond the 4 reserved ids")
    for key in ("model.dropout", "train.label_smoothing", "train.ema_decay"):
        if not 0.0 <= _get(config, key) < 1.0:
            raise ConfigError(f"{key} must be in [0, 1), got {_get(config, key)}")
    if not 0.0 <= config.data.spm_alpha <= 1.0:
        raise ConfigError(f"data.spm_alpha must be in [0, 1] (0 = off), got {config.data.spm_alpha}")
    if config.data.spm_alpha > 0 and (config.data.spm_nbest in (0, 1) or config.data.spm_nbest < -1):
        raise ConfigError(
            f"data.spm_nbest={config.data.spm_nbest} with data.spm_alpha={config.data.spm_alpha}: 0 and 1 would "
            "switch sampling off; use -1 (the whole lattice) or 2 or more"
        )
    if not 0.0 < config.train.plateau_factor < 1.0:
        raise ConfigError(f"train.plateau_factor must be in (0, 1), got {config.train.plateau_factor}")
    if not 0.0 <= config.train.teacher_forcing_ratio <= 1.0:
        raise ConfigError(f"train.teacher_forcing_ratio must be in [0, 1], got {config.train.teacher_forcing_ratio}")
    if not (config.train.learning_rate > 0 and math.isfinite(config.train.learning_rate)):
        raise ConfigError(f"train.learning_rate must be a positive finite number, got {config.train.learning_rate}")
    for key, allowed in choices().items():
        if _get(config, key) not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {_get(config, key)!r}")
    _validate_tokenizer_sources(config)
    from s2s_jax.attention import SCORINGS

    scoring = SCORINGS.get(config.model.attention)
    if scoring is not None and not scoring.project_keys and config.model.bidirectional:
        raise ConfigError(
            f"model.attention={config.model.attention} compares the decoder state with unprojected "
            "encoder outputs, so it needs a unidirectional encoder; use luong_general"
        )


def _validate_tokenizer_sources(config) -> None:
    """At most one source of tokenizers: trained here, data.spm_model(_src/_tgt), or train.init_from."""
    data = config.data
    per_side = [k for k in ("spm_model_src", "spm_model_tgt") if data[k]]
    if data.joint_vocab and per_side:
        raise ConfigError(f"data.{per_side[0]} is for separate vocabularies (data.joint_vocab=False); "
                          "a joint model is data.spm_model")
    if not data.joint_vocab and data.spm_model:
        raise ConfigError("data.spm_model is one joint model; with data.joint_vocab=False give "
                          "data.spm_model_src and data.spm_model_tgt")
    if not data.joint_vocab and len(per_side) == 1:
        raise ConfigError(f"data.{per_side[0]} is set but not the other side's model: give both")
    if config.train.init_from and (data.spm_model or per_side):
        raise ConfigError("train.init_from takes that run's tokenizer(s): leave data.spm_model* empty")
    if config.train.init_keep_optimizer and not config.train.init_from:
        raise ConfigError("train.init_keep_optimizer needs train.init_from")


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
        raise ConfigError(f"{path} is not a readable config ({err}); train.py writes it: restore it or use a new --workdir") from None


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
        for key in _FIXED_ON_RESUME:
            try:
                old = _get(saved, key)
            except KeyError:  # saved by an older version without that key: it had the default
                old = _get(defaults, key)
            new = _get(config, key)
            if old != new:
                raise ConfigError(
                    f"{workdir} was trained with {key}={old!r}, this run asks for {new!r}; "
                    "use a new --workdir or the original setting"
                )
    tmp = f"{path}.tmp{os.getpid()}"  # atomic: a kill mid-write never leaves half a config
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(config.to_json(indent=2))
    os.replace(tmp, path)


def load(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run saved in its workdir (plain JSON, never unpickled)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        from s2s_jax.checkpoints import CheckpointError

        raise CheckpointError(f"{workdir} has no config.json: is it a training workdir?")
    return _read_json(path)


# ---------------------------------------------------------------------------
# --config NAME: the built-in configs shipped in s2s_jax/configs
# ---------------------------------------------------------------------------

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def builtin_configs() -> list[str]:
    """The names `--config` accepts besides a path: the modules in s2s_jax/configs."""
    return sorted(
        name[: -len(".py")] for name in os.listdir(CONFIG_DIR)
        if name.endswith(".py") and not name.startswith("_")
    )


def resolve_config_arg(value: str) -> str:
    """`--config`'s value with a built-in name replaced by its file: 'quickstart[:arg]' ->
    '.../s2s_jax/configs/quickstart.py[:arg]'.

    An existing file wins over a name, and anything that looks like a path (has a
    directory part or ends in .py) is passed on unchanged, so a missing file is still
    reported when the config is first used ('cannot load the --config file'). Any
    other value raises ValueError listing the built-in names.
    """
    path, sep, arg = value.partition(":")
    if not path or os.path.exists(path) or "/" in path or os.sep in path or path.endswith(".py"):
        return value
    names = builtin_configs()
    if path in names:
        return os.path.join(CONFIG_DIR, f"{path}.py") + sep + arg
    raise ValueError(
        f"{path!r} is neither a config file nor a built-in config name; "
        f"built-in names: {', '.join(names)} (or pass the path of a get_config() file)"
    )


class ConfigFileOrNameParser(ConfigFileFlagParser):
    """ml_collections' --config parser that also accepts a built-in config name."""

    def parse(self, path):
        return super().parse(resolve_config_arg(path))


def define_config_flag(name: str = "config", help_string: str | None = None, flag_values=None,
                       lock_config: bool = True, **kwargs):
    """`config_flags.DEFINE_config_file` whose value may also be a built-in config name.

    `--config quickstart`, `--config quickstart:arg`, `--config path/to/file.py[:arg]`;
    `--config.x.y=z` overrides work as with DEFINE_config_file. The name is resolved by
    the flag's parser, so absl reports an unknown name as a flag error
    ('FATAL Flags parsing error: flag --config=...: ...', exit status 1 with parse_flags).
    """
    from absl import flags

    flag_values = flags.FLAGS if flag_values is None else flag_values
    if help_string is None:
        help_string = (
            "A get_config() file (path[:arg]) or a built-in config name: "
            f"{', '.join(builtin_configs())}."
        )
    holder = config_flags.DEFINE_config_file(
        name, None, help_string, flag_values=flag_values, lock_config=lock_config, **kwargs
    )
    flag_values[name].parser = ConfigFileOrNameParser(name=name, lock_config=lock_config)
    return holder
