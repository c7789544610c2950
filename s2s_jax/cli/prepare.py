"""The `s2s-prepare` command (also `python prepare.py`): prepares a config's training corpus ahead of training.

`train.py` prepares the corpus itself when it needs to; this command does it on its own,
e.g. once on a cluster's shared storage before the training hosts start, or on a machine
without accelerators. Same `--config` and `--config.x=y` flags as train.py.
"""

from __future__ import annotations

from s2s_jax.cli import runtime  # first: OPENBLAS_NUM_THREADS must be set before numpy loads

runtime.limit_openblas_threads()

import sys

from s2s_jax.config import checks
from s2s_jax.config import flags as config_flags
from s2s_jax.errors import ConfigError, DataError


def run(config) -> int:
    """Prepares the cleaned text, the tokenizer(s) a new run would use and their token ids; the exit status."""
    from s2s_jax.data import corpus_cache, training_data

    try:
        config_flags.check_loaded(config)
        checks.validate(config)
        if config.data.quickstart_corpus and not config.data.train_src:
            raise ConfigError(
                "this config generates its corpus into the workdir (data.quickstart_corpus): train.py prepares it"
            )
        text = corpus_cache.open_text(config)
        models = training_data.tokenizer_models(config, text)
        ids = corpus_cache.open_ids(text, models[0], models[-1])
    except (DataError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # an unwritable cache directory, a full disk
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    print(
        f"prepared: {text.num_pairs:,} pairs ({len(text.heldout)} held out) in {text.directory}; "
        f"tokenizer {', '.join(models)}; ids in {ids.directory}"
    )
    return 0


def _define_flags() -> None:
    config_flags.define_config_flag("config", lock_config=True)
    from absl import flags

    flags.mark_flags_as_required(["config"])


def main(argv: list[str] | None = None) -> None:
    """Entry point of `s2s-prepare` and `python prepare.py`."""
    runtime.run_command(
        "prepare", _define_flags, lambda flags: run(flags.config), argv, config_flags.parse_flags, compiles=False
    )
