"""What `train.py` does after parsing flags: validate, record the config, train, report."""

from __future__ import annotations

import json
import os
import sys
import time

from s2s_jax import config_utils
from s2s_jax.checkpoints import CheckpointError
from s2s_jax.data import DataError


def run(config, workdir: str) -> int:
    try:
        config_utils.validate(config)
        os.makedirs(workdir, exist_ok=True)
        if config.data.quickstart_corpus and not config.data.train_src:
            from s2s_jax.corpus import use_quickstart_corpus

            use_quickstart_corpus(config, workdir)
        config_utils.check_and_save(config, workdir)
        from s2s_jax import training

        start = time.perf_counter()
        final = training.train_and_evaluate(config, workdir)
    except (DataError, CheckpointError, config_utils.ConfigError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    minutes = (time.perf_counter() - start) / 60
    if "interrupted_at" in final:
        return 0
    print(
        f"done in {minutes:.1f} min: valid BLEU {final.get('valid_bleu', float('nan')):.2f}, "
        f"chrF {final.get('valid_chrf', float('nan')):.2f} (best BLEU {final['best_valid_bleu']:.2f}). "
        f"Translate with: python decode.py --workdir {workdir}"
    )
    with open(os.path.join(workdir, "final_metrics.json"), "w", encoding="utf-8") as f:
        json.dump(dict(final, minutes=minutes), f, indent=2)
    return 0
