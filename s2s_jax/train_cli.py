"""What `train.py` does after parsing flags: validate, record the config, train, report.

Every problem a user can cause (config, data, workdir, NaN loss) ends as one
`error: ...` line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from s2s_jax import config_utils
from s2s_jax.checkpoints import CheckpointError
from s2s_jax.data import DataError


def _report_skipped_steps(workdir: str) -> None:
    """With train.on_nonfinite=skip, says how many steps were dropped (metrics.jsonl has them)."""
    from s2s_jax.logging_utils import read_metrics

    try:
        skipped = sum(int(r.get("skipped_steps", 0)) for r in read_metrics(workdir))
    except (OSError, ValueError):
        return
    if skipped:
        print(
            f"warning: {skipped} training step(s) had a NaN/Inf loss or gradient and were skipped "
            "(train.on_nonfinite=skip); skipped_steps in metrics.jsonl says when",
            file=sys.stderr,
        )


def run(config, workdir: str) -> int:
    # metrics.jsonl records NaN losses; tensorboardX would also warn twice per logged step.
    logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)
    try:
        config_utils.check_loaded(config)
        config_utils.validate(config)
        if os.path.exists(workdir) and not os.path.isdir(workdir):
            raise config_utils.ConfigError(f"--workdir {workdir} is a file, not a directory")
        os.makedirs(workdir, exist_ok=True)
        from s2s_jax import parallel

        with parallel.main_process_first("workdir"):  # several processes: process 0 writes first
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
    except OSError as err:  # an unwritable workdir, a full disk
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once
        print(
            "interrupted: training stopped without a final checkpoint; run the same command to "
            "resume from the last one",
            file=sys.stderr,
        )
        return 130
    minutes = (time.perf_counter() - start) / 60
    if not parallel.is_main_process():  # process 0 reports and writes final_metrics.json
        return 0
    if config.train.on_nonfinite == "skip":
        _report_skipped_steps(workdir)
    if "interrupted_at" in final:
        return 0
    if "early_stopped_at" in final and "train_loss" not in final:  # rerun after an early stop
        return 0
    if not ({"train_loss", "valid_bleu"} & set(final)):  # resumed at train.num_steps: no step ran
        print(
            f"nothing to do: {workdir} is already trained to train.num_steps={config.train.num_steps} "
            f"(raise it to train longer). Translate with: python decode.py --workdir {workdir}"
        )
        return 0
    print(
        f"done in {minutes:.1f} min: valid BLEU {final.get('valid_bleu', float('nan')):.2f}, "
        f"chrF {final.get('valid_chrf', float('nan')):.2f} (best BLEU {final['best_valid_bleu']:.2f}). "
        f"Translate with: python decode.py --workdir {workdir}"
    )
    with open(os.path.join(workdir, "final_metrics.json"), "w", encoding="utf-8") as f:
        json.dump(dict(final, minutes=minutes), f, indent=2)
    return 0
