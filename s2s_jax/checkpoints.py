"""Orbax checkpoints in the workdir: the latest few for resuming, the best for decoding.

WORKDIR/checkpoints/<step>/  state (params, optimizer state, step) + meta (JSON)
WORKDIR/best/<step>/         params + meta of the step with the best validation BLEU

`meta` holds the data iterator's position and the validation scores; the
PRNG needs no saving because every step's key is `fold_in(seed, step)`.
Orbax writes each checkpoint to a temporary directory and renames it when
complete, so an interrupted save never replaces a good checkpoint (the
leftover temporary directory is deleted by the next run). A checkpoint that
is complete but unreadable (truncated or corrupted files) is skipped with a
warning: training resumes from the newest readable one and moves the damaged
ones to WORKDIR/unreadable_checkpoints/; decoding uses the newest readable one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A workdir without a usable checkpoint, said in words a user can act on."""


def _manager(directory: str, max_to_keep: int, item_names: tuple[str, ...], create: bool = True):
    """A manager; `create=True` (training) also deletes the half-written temporary
    directories that an interrupted save left behind."""
    # Several processes: the two managers save the same step at once, and orbax names its
    # cross-process barriers by step; a per-directory prefix keeps them apart.
    multiprocessing = ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=os.path.basename(directory))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=create, cleanup_tmp_directories=create,
        multiprocessing_options=multiprocessing,
    )
    return ocp.CheckpointManager(
        os.path.abspath(directory), options=options, item_names=item_names
    )


def _short(err: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`, cut to `limit` characters (tensorstore errors run to pages)."""
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _uncommitted(tree: Any) -> Any:
    """Restored arrays as a fresh run makes them: on the default device but not committed to it.

    Orbax returns arrays committed to a device (SingleDeviceSharding); jit compiles
    those under different argument shardings than the uncommitted arrays of a fresh
    run, so every resumed run would miss the persistent compilation cache and
    recompile the train, eval and search steps. Bit-exact (a host round trip).
    """
    return jax.tree.map(lambda x: jax.numpy.asarray(np.asarray(x)), tree)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _drain_failed_reads():
    """Lets a failed restore finish its other pending reads before orbax closes its event loop.

    When one file of a damaged checkpoint fails to read, orbax raises at once and
    closes the event loop while tensorstore still completes the other reads; each
    completion then prints a 'RuntimeError: Event loop is closed' traceback to
    stderr (dozens of them). Waiting for the leftover tasks first keeps the
    fallback to an older checkpoint quiet. Only affects code run inside this block.
    """
    try:
        from orbax.checkpoint._src import asyncio_utils
    except ImportError:
        yield
        return
    original = getattr(asyncio_utils, "_run_sync_via_new_loop", None)
    if original is None:
        yield
        return

    def run(coro):
        loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            return loop.run_until_complete(coro)
        except BaseException:
            pending = asyncio.all_tasks(loop)
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=60))
            raise
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    asyncio_utils._run_sync_via_new_loop = run
    try:
        yield
    finally:
        asyncio_utils._run_sync_via_new_loop = original


def _local_target(manager, step: int, item: str) -> Any:
    """A restore target that puts every saved array of `item` on this process's first device.

    Without a target orbax restores the shardings recorded at save time, which fails
    on a machine with another device count (trained on 8 TPU cores, decoded on a laptop).
    """
    from etils import epath

    path = epath.Path(str(manager.directory)) / str(step) / item
    metadata = ocp.StandardCheckpointHandler().metadata(path).tree
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)


def _restore_first_readable(manager, steps, args) -> tuple[int | None, Any, list[tuple[int, str]]]:
    """(step, restored, unreadable) for the first of `steps` that restores.

    `args` is the restore args, or a function of the step that returns them.

    `unreadable` lists (step, short error) for the newer steps that did not
    restore; (None, None, all of them) if none did.
    """
    unreadable = []
    for step in steps:
        try:
            with _drain_failed_reads():
                return step, manager.restore(step, args=args(step) if callable(args) else args), unreadable
        except Exception as err:  # orbax/tensorstore raise many types for damaged files
            unreadable.append((step, _short(err)))
    return None, None, unreadable


class Checkpoints:
    """The two checkpoint managers of one training run."""

    def __init__(self, workdir: str, max_to_keep: int):
        self.workdir = workdir
        self.latest = _manager(os.path.join(workdir, "checkpoints"), max_to_keep, ("state", "meta"))
        self.best = _manager(os.path.join(workdir, "best"), 1, ("params", "meta"))

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        self._make_room(self.latest, step)
        self.latest.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )

    def save_best(self, step: int, params: Any, meta: dict) -> None:
        self._make_room(self.best, step)
        self.best.save(
            step,
            args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)),
            force=True,
        )

    def best_meta(self) -> dict | None:
        """The best checkpoint's scores; None if there is none, or if it is unreadable (moved
        aside with a warning, so that the next evaluation writes a new best)."""
        step = self.best.latest_step()
        if step is None:
            return None
        found, restored, unreadable = _restore_first_readable(
            self.best, [step], ocp.args.Composite(meta=ocp.args.JsonRestore())
        )
        for bad, why in unreadable:
            where = self._set_aside(self.best, bad, "best")
            _warn(f"best checkpoint {bad} is unreadable ({why}); moved it to {where}, the next evaluation writes a new one")
        return None if found is None else restored["meta"]

    def restore(self, abstract_state: Any) -> tuple[Any, dict]:
        """Restores the newest readable checkpoint, shaped and sharded like `abstract_state`.

        A damaged newer checkpoint (a disk error, files removed by hand) is
        skipped with a warning and moved to WORKDIR/unreadable_checkpoints/, so
        that training can write that step again; the one before it is used.
        If none is readable nothing is moved and CheckpointError says so.
        """
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
        steps = sorted(self.latest.all_steps(), reverse=True)
        found, restored, unreadable = _restore_first_readable(self.latest, steps, args)
        if found is None:
            tried = "; ".join(f"step {step}: {why}" for step, why in unreadable)
            raise CheckpointError(
                f"no readable checkpoint in {self.latest.directory} ({tried}). Move that directory "
                "away to train from scratch, or use a new --workdir"
            )
        for bad, why in unreadable:
            where = self._set_aside(self.latest, bad, "checkpoints")
            _warn(f"checkpoint {bad} is unreadable ({why}); moved it to {where} and resumed from step {found}")
        return _uncommitted(restored["state"]), restored["meta"]

    def _set_aside(self, manager, step: int, kind: str) -> str:
        """Moves a damaged step directory out of the manager's view; returns where it went."""
        manager.wait_until_finished()
        source = os.path.join(str(manager.directory), str(step))
        target = os.path.join(self.workdir, "unreadable_checkpoints", f"{kind}-{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.move(source, target)
        except OSError as err:
            shutil.rmtree(source, ignore_errors=True)
            target = f"nowhere (moving failed: {err.strerror}; deleted it)"
        manager.reload()
        return target

    @staticmethod
    def _make_room(manager, step: int) -> None:
        """Saving a step that is already on disk (e.g. after resuming from an older checkpoint
        than the newest) replaces it; orbax would refuse."""
        if step in manager.all_steps():
            manager.wait_until_finished()
            manager.delete(step)

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def load_params(workdir: str, which: str = "best") -> tuple[Any, dict]:
    """Parameters for decoding: `which` is 'best', 'latest' or a step number.

    'best' falls back to 'latest' when there is no readable best checkpoint, and
    'latest' to an older step when the newest is unreadable (with a warning);
    an explicit step that cannot be read is a CheckpointError.
    """
    which = str(which).strip()
    if which not in ("best", "latest") and not which.isdigit():
        raise CheckpointError(f"--checkpoint must be best, latest or a step number, got {which!r}")
    latest_dir, best_dir = os.path.join(workdir, "checkpoints"), os.path.join(workdir, "best")
    train_first = f"train first with `python train.py --config CONFIG --workdir {workdir}`"
    if which == "best":
        if os.path.isdir(best_dir):  # a run without validation has no best checkpoint
            manager = _manager(best_dir, 1, ("params", "meta"), create=False)
            try:
                steps = manager.all_steps()
                step, restored, unreadable = _restore_first_readable(
                    manager, steps, lambda step: ocp.args.Composite(
                        params=ocp.args.StandardRestore(_local_target(manager, step, "params")),
                        meta=ocp.args.JsonRestore(),
                    ),
                )
            finally:
                manager.close()
            if step is not None:
                return _uncommitted(restored["params"]), dict(restored["meta"], step=step)
            for bad, why in unreadable:
                _warn(f"best checkpoint {bad} in {best_dir} is unreadable ({why}); using the latest checkpoint")
        which = "latest"
    if not os.path.isdir(latest_dir):
        raise CheckpointError(f"no checkpoint in {workdir}: {train_first}")
    manager = _manager(latest_dir, 1, ("state", "meta"), create=False)
    try:
        steps = sorted(manager.all_steps(), reverse=True)
        if which != "latest":
            if int(which) not in steps:
                available = ", ".join(map(str, sorted(steps))) or "none"
                raise CheckpointError(f"no checkpoint for step {which} in {latest_dir} (available: {available})")
            steps = [int(which)]
        if not steps:
            raise CheckpointError(f"no checkpoint in {workdir}: {train_first}")
        def args(step):
            return ocp.args.Composite(
                state=ocp.args.StandardRestore(_local_target(manager, step, "state")), meta=ocp.args.JsonRestore()
            )

        step, restored, unreadable = _restore_first_readable(manager, steps, args)
    finally:
        manager.close()
    if step is None:
        tried = "; ".join(f"step {bad}: {why}" for bad, why in unreadable)
        raise CheckpointError(f"no readable checkpoint in {latest_dir} ({tried})")
    for bad, why in unreadable:
        _warn(f"checkpoint {bad} in {latest_dir} is unreadable ({why}); using step {step}")
    params = restored["state"]["params"]
    return _uncommitted(params), dict(restored["meta"], step=step)
