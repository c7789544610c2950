"""The `s2s-train` command (also `python train.py`): its flags, then validate, record the config, train, report.

Every problem a user can cause (config, data, workdir, NaN loss) ends as one
`error: ...` line on stderr and exit status 1, never a traceback. In a run of several
processes, so does the loss of another process (s2s_jax/workdir/lost_peer.py).
"""

from __future__ import annotations

from s2s_jax.cli import runtime  # first: OPENBLAS_NUM_THREADS must be set before numpy/jax load

runtime.limit_openblas_threads()

import contextlib
import errno
import json
import logging
import os
import sys
import time
from typing import TYPE_CHECKING

from s2s_jax.config import checks
from s2s_jax.config import flags as config_flags
from s2s_jax.errors import CheckpointError, ConfigError, DataError
from s2s_jax.files import write_atomic
from s2s_jax.workdir import run_config
from s2s_jax.workdir.lock import WorkdirLocked
from s2s_jax.workdir.lost_peer import DEFAULT_HEARTBEAT_TIMEOUT

if TYPE_CHECKING:
    from s2s_jax.training.loop import TrainResult


def _report_skipped_steps(workdir: str) -> None:
    """With train.on_nonfinite=skip, says how many steps were dropped (metrics.jsonl has them)."""
    from s2s_jax.training.train_log import read_metrics

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


def _os_error(err: OSError, workdir: str) -> str:
    """One line for an OSError that ended the run: what failed, where, and for a full disk
    what to do (the checkpoints are written atomically, so the last one is intact)."""
    where = err.filename or f"writing to {workdir}"
    text = f"{err.strerror or err} ({where})"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        text += "; free space there, then run the same command (it resumes from the last checkpoint, if any)"
    return text


def _exit_if_a_process_is_lost(err: Exception, workdir: str) -> None:
    """In a run of several processes, ends this one with the `error:` line of s2s_jax/workdir/lost_peer.py
    when `err` says another process is gone; returns otherwise (the error is a bug: traceback)."""
    import jax

    if not jax.distributed.is_initialized():
        return
    from s2s_jax.workdir import lost_peer

    lost = lost_peer.describe(err, jax.process_index(), jax.process_count())
    if lost is not None:
        lost_peer.exit_lost(err, lost, jax.process_count(), workdir)


def run(config, workdir: str) -> int:
    """Trains `config` in `workdir` holding the workdir's lock (s2s_jax/workdir/lock.py); the exit status."""
    with contextlib.ExitStack() as lock:
        return _run(config, workdir, lock)


def _run(config, workdir: str, lock: contextlib.ExitStack) -> int:
    # metrics.jsonl records NaN losses; tensorboardX would also warn twice per logged step.
    logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)
    try:
        config_flags.check_loaded(config)
        checks.validate(config)
        if os.path.exists(workdir) and not os.path.isdir(workdir):
            raise ConfigError(f"--workdir {workdir} is a file, not a directory")
        if config.train.init_from and not run_config.has_trained_state(workdir):
            from s2s_jax.training import init_from

            init_from.check(config.train.init_from)
        os.makedirs(workdir, exist_ok=True)
        from s2s_jax import parallel
        from s2s_jax.workdir import lock as workdir_lock

        lock.enter_context(
            workdir_lock.hold(
                workdir,
                lambda message: print(f"warning: {message}", file=sys.stderr),
                enabled=parallel.is_main_process(),
            )
        )

        with parallel.main_process_first("workdir"):  # several processes: process 0 writes first
            if config.data.quickstart_corpus and not config.data.train_src:
                from s2s_jax.data.training_data import use_quickstart_corpus

                use_quickstart_corpus(config, workdir)
            run_config.check_and_save(config, workdir)
        from s2s_jax.training import loop

        start = time.perf_counter()
        result = loop.train_and_evaluate(config, workdir)
    except (DataError, CheckpointError, ConfigError, WorkdirLocked) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # an unwritable workdir, a full disk
        print(f"error: {_os_error(err, workdir)}", file=sys.stderr)
        return 1
    except Exception as err:  # several processes: a collective that failed because a process is gone
        _exit_if_a_process_is_lost(err, workdir)
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once
        print(
            "interrupted: training stopped without a final checkpoint; run the same command to "
            "resume from the last one",
            file=sys.stderr,
        )
        return 130
    return _report(config, workdir, result, (time.perf_counter() - start) / 60)


def _report(config, workdir: str, result: TrainResult, minutes: float) -> int:
    """Says how training ended (process 0 also writes final_metrics.json); the exit status."""
    from s2s_jax import parallel
    from s2s_jax.training import loop

    if result.outcome is loop.Outcome.NON_FINITE:
        print(f"error: {result.message}", file=sys.stderr)
        return 1
    if not parallel.is_main_process():  # process 0 reports and writes final_metrics.json
        return 0
    if config.train.on_nonfinite == "skip":
        _report_skipped_steps(workdir)
    if result.message:
        print(result.message)
    if result.steps_run == 0:
        if result.outcome is loop.Outcome.FINISHED:
            print(
                f"nothing to do: {workdir} is already trained to train.num_steps={config.train.num_steps} "
                f"(raise it to train longer). Translate with: python decode.py --workdir {workdir}"
            )
        return 0
    if result.outcome is loop.Outcome.INTERRUPTED:
        return 0
    final = result.metrics
    print(
        f"done in {minutes:.1f} min: valid BLEU {final.get('valid_bleu', float('nan')):.2f}, "
        f"chrF {final.get('valid_chrf', float('nan')):.2f} (best checkpoint's BLEU {result.best_valid_bleu:.2f}). "
        f"Translate with: python decode.py --workdir {workdir}"
    )
    record = dict(final, best_valid_bleu=result.best_valid_bleu, outcome=result.outcome.value, minutes=minutes)
    path = os.path.join(workdir, "final_metrics.json")
    try:
        write_atomic(path, json.dumps(record, indent=2))
    except OSError as err:
        print(f"error: {_os_error(err, workdir)}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------
# The `s2s-train` command (also `python train.py`)
# ---------------------------------------------------------------------------


def _define_flags() -> None:
    """train's absl flags (see runtime.define_command_flags)."""
    from absl import flags

    config_flags.define_config_flag("config", lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, tokenizers, config and metrics.")
    flags.DEFINE_bool(
        "multihost",
        False,
        "Call jax.distributed.initialize() (one process per host; also done automatically when "
        "JAX_COORDINATOR_ADDRESS, a multi-task Slurm/Open MPI launch or a multi-host TPU slice is detected).",
    )
    flags.DEFINE_integer(
        "heartbeat_timeout",
        DEFAULT_HEARTBEAT_TIMEOUT,
        "Several processes: seconds without a heartbeat after which JAX declares a process dead; the "
        "others then exit with an error naming it (a killed process is usually noticed at once).",
        lower_bound=1,
    )
    flags.mark_flags_as_required(["config", "workdir"])


def _run_flags(flags) -> int:
    """Joins a multi-host run when asked (before anything touches a device), then trains."""
    from s2s_jax import parallel

    if parallel.maybe_initialize_distributed(flags.multihost, heartbeat_timeout=flags.heartbeat_timeout):
        import jax

        from s2s_jax.workdir import lost_peer

        lost_peer.relay_stderr(jax.process_index(), jax.process_count(), flags.workdir)
    return run(flags.config, flags.workdir)


def main(argv: list[str] | None = None) -> None:
    """Entry point of `s2s-train` and `python train.py`: parses the flags, trains, exits.

    `--config` takes a file (path[:arg]) or a built-in config name (quickstart,
    multi30k_attention, ...); flag mistakes end as one 'FATAL Flags parsing error'
    line and exit status 1 (`config_flags.parse_flags`).
    """
    runtime.run_command("train", _define_flags, _run_flags, argv, config_flags.parse_flags)
