"""Config checks: impossible values are a ConfigError, and name-valued keys accept what their
registries hold."""

from __future__ import annotations

import math

from s2s_jax.errors import ConfigError
from s2s_jax.workdir.run_config import get_dotted


def choices() -> dict[str, tuple[str, ...]]:
    """The accepted values of every name-valued key, read from the registries that build them."""
    from s2s_jax.data import languages, tokenizer
    from s2s_jax.models import attention, recurrences, seq2seq
    from s2s_jax.training import optimizers, policies

    return {
        "data.spm_model_type": tokenizer.MODEL_TYPES,
        "data.lang_tags": languages.LANG_TAGS,
        "model.attention": attention.KINDS,
        "model.cell": tuple(seq2seq.CELLS),
        "model.recurrence": recurrences.RECURRENCES,
        "train.optimizer": tuple(optimizers.OPTIMIZERS),
        "train.lr_schedule": tuple(optimizers.LR_SCHEDULES),
        "train.dtype": tuple(seq2seq.DTYPES),
        "train.on_nonfinite": tuple(policies.ON_NONFINITE),
        "train.early_stop_metric": tuple(policies.EARLY_STOP_METRICS),
    }


def missing_keys(config, reference, prefix: str = "") -> list[str]:
    """The dotted keys of `reference` (a ConfigDict) that `config` lacks."""
    missing = []
    for key, value in reference.items():
        if key not in config:
            missing.append(prefix + key)
        elif hasattr(value, "items") and hasattr(config[key], "items"):
            missing += missing_keys(config[key], value, f"{prefix}{key}.")
    return missing


def validate(config) -> None:
    """Raises a ConfigError naming the first key whose value cannot work."""
    from s2s_jax.configs import default

    missing = missing_keys(config, default.get_config())
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ConfigError(
            f"the config has no {shown}: start get_config() from s2s_jax.configs.default.get_config() "
            "and change what differs"
        )
    positive = [
        "data.vocab_size",
        "data.max_len",
        "data.num_buckets",
        "data.pad_multiple",
        "model.emb_dim",
        "model.hidden_size",
        "model.num_layers",
        "model.scan_unroll",
        "train.batch_size",
        "train.accum_steps",
        "train.num_steps",
        "train.log_every",
        "train.eval_every",
        "train.checkpoint_every",
        "train.max_to_keep",
        "decode.beam_size",
        "decode.batch_size",
    ]
    for key in positive:
        if get_dotted(config, key) <= 0:
            raise ConfigError(f"{key} must be positive, got {get_dotted(config, key)}")
    non_negative = [
        "seed",
        "train.max_tokens",
        "data.max_train_pairs",
        "data.valid_max_pairs",
        "data.holdout_valid",
        "data.spm_input_sentences",
        "data.prepare_workers",
        "train.warmup_steps",
        "train.weight_decay",
        "train.clip_norm",
        "train.num_samples",
        "train.early_stop_patience",
        "decode.alpha",
        "decode.max_len_a",
        "decode.max_len_b",
    ]
    for key in non_negative:
        value = get_dotted(config, key)
        if not (value >= 0 and math.isfinite(value)):  # also refuses nan
            raise ConfigError(f"{key} must be a finite number >= 0, got {value}")
    if config.data.vocab_size < 8:
        raise ConfigError(f"data.vocab_size={config.data.vocab_size} leaves no room beyond the 4 reserved ids")
    for key in ("model.dropout", "train.label_smoothing", "train.ema_decay"):
        if not 0.0 <= get_dotted(config, key) < 1.0:
            raise ConfigError(f"{key} must be in [0, 1), got {get_dotted(config, key)}")
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
        if get_dotted(config, key) not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {get_dotted(config, key)!r}")
    _validate_tokenizer_sources(config)
    _validate_pairs(config.data)
    from s2s_jax.models import recurrences, seq2seq
    from s2s_jax.models.attention import SCORINGS

    if config.model.recurrence == "fused":
        blocker = recurrences.fused_blocker(seq2seq.DTYPES[config.train.dtype])
        if blocker:
            raise ConfigError(f"model.recurrence=fused: {blocker}; use auto or scan")

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
        raise ConfigError(
            f"data.{per_side[0]} is for separate vocabularies (data.joint_vocab=False); a joint model is data.spm_model"
        )
    if not data.joint_vocab and data.spm_model:
        raise ConfigError(
            "data.spm_model is one joint model; with data.joint_vocab=False give "
            "data.spm_model_src and data.spm_model_tgt"
        )
    if not data.joint_vocab and len(per_side) == 1:
        raise ConfigError(f"data.{per_side[0]} is set but not the other side's model: give both")
    if config.train.init_from and (data.spm_model or per_side):
        raise ConfigError("train.init_from takes that run's tokenizer(s): leave data.spm_model* empty")
    if config.train.init_keep_optimizer and not config.train.init_from:
        raise ConfigError("train.init_keep_optimizer needs train.init_from")


def _validate_pairs(data) -> None:
    """data.pairs names its files by prefix: not with the single-pair file keys (or their stand-ins)."""
    from s2s_jax.data import languages

    temperature = data.get("pair_temperature", 1.0)
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ConfigError(f"data.pair_temperature must be a positive finite number, got {temperature}")
    if not data.get("pairs", ""):
        given = [k for k in ("train_prefix", "valid_prefix", "test_prefix") if data.get(k, "")]
        if given:
            raise ConfigError(f"data.{given[0]} names files per language pair: set data.pairs too")
        return
    languages.parse_pairs(data.pairs)
    single = [f"{split}_{side}" for split in ("train", "valid", "test") for side in ("src", "tgt", "tsv")]
    clash = [k for k in single if data[k]] + [k for k in ("quickstart_corpus", "holdout_valid") if data[k]]
    if clash:
        raise ConfigError(
            f"data.pairs and data.{clash[0]} together: a multilingual run names its files with "
            "data.train_prefix, data.valid_prefix and data.test_prefix; leave the single-pair keys empty"
        )
    for key in ("train_prefix", "valid_prefix"):
        if not data[key]:
            raise ConfigError(f"data.pairs needs data.{key} (e.g. 'multi30k/{key.split('_')[0]}')")
    if not data.joint_vocab:
        raise ConfigError("data.pairs trains one joint sentencepiece model over every pair: set data.joint_vocab=True")
