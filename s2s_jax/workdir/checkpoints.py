"""Orbax checkpoints in the workdir: the latest few for resuming, the best for decoding.

WORKDIR/checkpoints/<step>/  state (params, optimizer state, step, EMA and lr_scale where the run has them)
                             + meta (JSON)
WORKDIR/best/<step>/         params + meta of the step with the best validation score
                             (train.early_stop_metric: BLEU, chrF or loss)

A latest checkpoint's `meta` holds the step and the data iterator's position, a best one's the
validation scores; the
PRNG needs no saving because every step's key is `fold_in(seed, step)`.
Orbax writes each checkpoint to a temporary directory and renames it when
complete, so an interrupted save never replaces a good checkpoint (the
leftover temporary directory is deleted by the next run). A checkpoint that
is complete but unreadable (truncated or corrupted files) is skipped with a
warning: training resumes from the newest readable one and moves the damaged
ones to WORKDIR/unreadable_checkpoints/; decoding uses the newest readable one.

Storage can also change files without an error (s2s_jax/workdir/checksums.py): each
save records the sha256 of its files in <step>/s2s_checksums.json before orbax
renames the temporary directory, so a committed checkpoint always carries its
manifest. Every restore checks it first; a file that differs makes the
checkpoint unreadable, with the handling above. Checkpoints without a manifest
(written before manifests existed) load unchecked.

A save that fails (a full disk, a lost mount) raises CheckpointError naming the
directory: at the `save` that starts it, or for orbax's asynchronous part at
the next `save`, `check`, `wait` or `close`. The failed step's temporary
directory is never renamed, so the checkpoints before it stay as they were.

Every restore goes through `_restore_newest_readable`; every save through
`Checkpoints._save`. What this relies on inside orbax (the manifest's commit
hook, the event-loop runner, its error logging) is in s2s_jax/workdir/orbax_workarounds.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import shutil
import sys
import time
from typing import Any, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from s2s_jax.errors import CheckpointError
from s2s_jax.workdir import checksums, orbax_workarounds


@dataclasses.dataclass(frozen=True)
class _Kind:
    """One of the two checkpoint series in a workdir."""

    subdir: str  # under the workdir, and the prefix of set-aside copies
    arrays: str  # the item holding arrays; the other item is always "meta"
    label: str  # how warnings name one checkpoint of this kind

    @property
    def items(self) -> tuple[str, str]:
        return (self.arrays, "meta")


_LATEST = _Kind("checkpoints", "state", "checkpoint")
_BEST = _Kind("best", "params", "best checkpoint")

# Restore targets besides an abstract pytree: put the arrays on this process's
# first device (decoding), or skip the arrays and read only the meta.
_LOCAL_DEVICE = "local device"
_META_ONLY = None


_OPEN_ATTEMPTS = 5


def _manager(workdir: str, kind: _Kind, max_to_keep: int, create: bool = True) -> ocp.CheckpointManager:
    """A manager for `kind`; `create=True` (training) also deletes the half-written temporary
    directories that an interrupted save left behind."""
    directory = os.path.abspath(os.path.join(workdir, kind.subdir))
    # Several processes: the two managers save the same step at once, and orbax names its
    # cross-process barriers by step; a per-directory prefix keeps them apart.
    multiprocessing = ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=kind.subdir)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=create,
        cleanup_tmp_directories=create,
        multiprocessing_options=multiprocessing,
        temporary_path_class=orbax_workarounds.ChecksummedRename,
    )
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            return ocp.CheckpointManager(directory, options=options, item_names=kind.items)
        except FileNotFoundError:
            # A reader (create=False) lists the steps while a live run may delete one past
            # max_to_keep between the listing and orbax's stat of it: list again.
            if create or attempt == _OPEN_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


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


def _local_target(manager: ocp.CheckpointManager, step: int, item: str) -> Any:
    """A restore target that puts every saved array of `item` on this process's first device.

    Without a target orbax restores the shardings recorded at save time, which fails
    on a machine with another device count (trained on 8 TPU cores, decoded on a laptop).
    """
    from etils import epath

    path = epath.Path(str(manager.directory)) / str(step) / item
    metadata = ocp.StandardCheckpointHandler().metadata(path).tree
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)


def _restore_args(manager: ocp.CheckpointManager, kind: _Kind, step: int, target: Any) -> ocp.args.Composite:
    """Composite restore args for one step; `target` is an abstract pytree, _LOCAL_DEVICE or _META_ONLY."""
    args: dict[str, Any] = {"meta": ocp.args.JsonRestore()}
    if target is _LOCAL_DEVICE:
        args[kind.arrays] = ocp.args.StandardRestore(_local_target(manager, step, kind.arrays))
    elif target is not _META_ONLY:
        args[kind.arrays] = ocp.args.StandardRestore(target)
    return ocp.args.Composite(**args)


class _NoReadableCheckpoint(CheckpointError):
    """None of the candidate steps restored; `unreadable` lists (step, short error) for each."""

    def __init__(self, directory: str, unreadable: list[tuple[int, str]]):
        tried = "; ".join(f"step {step}: {why}" for step, why in unreadable)
        super().__init__(f"no readable checkpoint in {directory} ({tried})")
        self.unreadable = unreadable


def _set_aside(manager: ocp.CheckpointManager, kind: _Kind, step: int, workdir: str) -> str:
    """Moves a damaged step directory out of the manager's view; returns where it went."""
    manager.wait_until_finished()
    source = os.path.join(str(manager.directory), str(step))
    target = os.path.join(workdir, "unreadable_checkpoints", f"{kind.subdir}-{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.move(source, target)
    except OSError as err:
        shutil.rmtree(source, ignore_errors=True)
        target = f"nowhere (moving failed: {err.strerror}; deleted it)"
    manager.reload()
    return target


def _restore_newest_readable(
    manager: ocp.CheckpointManager,
    kind: _Kind,
    steps: Sequence[int],
    target: Any,
    set_aside_in: str | None = None,
) -> tuple[int, dict]:
    """(step, restored items) for the first of `steps` (newest first) that restores.

    `target` is an abstract pytree (training resume), _LOCAL_DEVICE (decoding) or
    _META_ONLY. Each newer step that fails is warned about; with `set_aside_in`
    (a workdir: the training side) it is also moved to its unreadable_checkpoints/
    so that training can write that step again. If no step restores nothing is
    moved and `_NoReadableCheckpoint` lists why each failed; the caller decides.
    """
    unreadable: list[tuple[int, str]] = []
    for step in steps:
        try:
            checksums.verify(os.path.join(str(manager.directory), str(step)))
            with orbax_workarounds.drain_pending_io_on_failure():
                restored = manager.restore(step, args=_restore_args(manager, kind, step, target))
        except Exception as err:  # orbax/tensorstore raise many types for damaged files
            unreadable.append((step, _short(err)))
            continue
        for bad, why in unreadable:
            if set_aside_in is None:
                _warn(f"{kind.label} {bad} in {manager.directory} is unreadable ({why}); using step {step}")
            else:
                where = _set_aside(manager, kind, bad, set_aside_in)
                _warn(f"{kind.label} {bad} is unreadable ({why}); moved it to {where} and resumed from step {step}")
        return step, restored
    raise _NoReadableCheckpoint(str(manager.directory), unreadable)


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded")


def _is_disk_full(err: BaseException | None) -> bool:
    """Whether `err` or an error it was raised from is ENOSPC/EDQUOT; tensorstore reports those
    as a ValueError whose message quotes the OS error."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _DISK_FULL:
            return True
        if any(text in str(err).lower() for text in _DISK_FULL_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return False


def _save_failed(kind: _Kind, directory: str, step: int | None, err: BaseException) -> CheckpointError:
    """The CheckpointError for a save of `kind` that raised `err`."""
    what = kind.label if step is None else f"{kind.label} {step}"
    if _is_disk_full(err):
        return CheckpointError(
            f"no space left on the device of {directory}: saving {what} failed and the run stopped. "
            "The checkpoints saved before it are intact: free space there, then run the same command "
            "to resume from the newest one"
        )
    return CheckpointError(
        f"saving {what} in {directory} failed ({_short(err)}); the checkpoints saved before it are intact"
    )


class Checkpoints:
    """The two checkpoint managers of one training run; a context manager that closes them.

    Saves are asynchronous: the arrays are copied to host memory and written to
    disk in orbax's background thread while training goes on. An error there is
    raised as CheckpointError by the next call that waits for that save; orbax's
    own logging of it is silenced, and while the managers are open a failed write
    waits for its other writes (s2s_jax/workdir/orbax_workarounds.py).
    """

    def __init__(self, workdir: str, max_to_keep: int):
        self.workdir = workdir
        self.latest = _manager(workdir, _LATEST, max_to_keep)
        self.best = _manager(workdir, _BEST, 1)
        self._pending: dict[_Kind, int] = {}  # the step each manager is saving in the background
        self._failed = False  # a CheckpointError for a failed save was raised
        self._closed = False
        self._patches = contextlib.ExitStack()  # undone by close()
        self._patches.enter_context(orbax_workarounds.drain_pending_io_on_failure())
        logging.getLogger("absl").addFilter(orbax_workarounds.drop_orbax_errors)  # adding it again does nothing

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, exc_type: Any, *exc_info: Any) -> None:
        if exc_type is None:
            self.close()
            return
        # The error already on its way out is the one to report: a save failing as well
        # (mostly of the same cause, a full disk) leaves the checkpoints before it intact.
        with contextlib.suppress(CheckpointError):
            self.close()

    def _managers(self) -> tuple[tuple[_Kind, ocp.CheckpointManager], ...]:
        return (_LATEST, self.latest), (_BEST, self.best)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Starts an async save of the training state; `wait()` or `close()` finishes it."""
        self._save(_LATEST, self.latest, step, state=state, meta=meta)

    def save_best(self, step: int, params: Any, meta: dict) -> None:
        """Starts an async save of the best parameters so far (by train.early_stop_metric, which
        the caller applies), replacing the previous best."""
        self._save(_BEST, self.best, step, params=params, meta=meta)

    def _save(self, kind: _Kind, manager: ocp.CheckpointManager, step: int, **items: Any) -> None:
        """Saves `meta` as JSON and the other item as arrays. Saving a step that is already on
        disk (e.g. after resuming from an older checkpoint than the newest) replaces it;
        orbax would refuse. First waits for the manager's previous save, so that its error
        (if any) is reported under its own step."""
        self._finish(kind, manager)
        args = {
            name: ocp.args.JsonSave(value) if name == "meta" else ocp.args.StandardSave(value)
            for name, value in items.items()
        }
        try:
            if step in manager.all_steps():
                manager.delete(step)
            self._pending[kind] = step
            manager.save(step, args=ocp.args.Composite(**args), force=True)
        except Exception as err:  # orbax and tensorstore raise many types for a failed write
            self._pending.pop(kind, None)
            self._failed = True
            raise _save_failed(kind, str(manager.directory), step, err) from err

    def _finish(self, kind: _Kind, manager: ocp.CheckpointManager) -> None:
        """Waits for `manager`'s background save; CheckpointError if it failed."""
        step = self._pending.pop(kind, None)
        try:
            manager.wait_until_finished()
        except Exception as err:  # whatever the background write raised
            self._failed = True
            raise _save_failed(kind, str(manager.directory), step, err) from err

    def check(self) -> None:
        """Raises CheckpointError at once if a background save has already failed; never waits.

        The training loop calls it at every logged step, so that a full disk stops the
        run there rather than at the next checkpoint. With several processes it does
        nothing: each process would see its own part of a save fail at its own time and
        stop alone; the next save, where all of them wait, reports the error instead.
        """
        if jax.process_count() > 1:
            return
        for kind, manager in self._managers():
            if kind in self._pending and not manager.is_saving_in_progress():
                self._finish(kind, manager)

    def wait(self) -> None:
        """Blocks until the pending async saves are on disk; CheckpointError if one failed."""
        for kind, manager in self._managers():
            self._finish(kind, manager)

    def best_meta(self) -> dict | None:
        """The best checkpoint's validation scores and step; None if there is none, or if it is
        unreadable (moved aside with a warning, so that the next evaluation writes a new best)."""
        step = self.best.latest_step()
        if step is None:
            return None
        try:
            _, restored = _restore_newest_readable(self.best, _BEST, [step], _META_ONLY, set_aside_in=self.workdir)
        except _NoReadableCheckpoint as err:
            for bad, why in err.unreadable:
                where = _set_aside(self.best, _BEST, bad, self.workdir)
                _warn(
                    f"best checkpoint {bad} is unreadable ({why}); moved it to {where}, the next evaluation writes a new one"
                )
            return None
        return restored["meta"]

    def restore(self, abstract_state: Any) -> tuple[Any, dict]:
        """Restores the newest readable checkpoint, shaped and sharded like `abstract_state`.

        A damaged newer checkpoint (a disk error, a file that no longer matches
        its checksum, files removed by hand) is skipped with a warning and moved to WORKDIR/unreadable_checkpoints/, so
        that training can write that step again; the one before it is used.
        If none is readable nothing is moved and CheckpointError says so.
        """
        steps = sorted(self.latest.all_steps(), reverse=True)
        try:
            _, restored = _restore_newest_readable(
                self.latest, _LATEST, steps, abstract_state, set_aside_in=self.workdir
            )
        except _NoReadableCheckpoint as err:
            raise CheckpointError(
                f"{err}. Move that directory away to train from scratch, or use a new --workdir"
            ) from None
        return _uncommitted(restored["state"]), restored["meta"]

    def close(self) -> None:
        """Waits for pending saves, then closes both managers; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self.wait()
        finally:
            try:
                failure = None
                for kind, manager in self._managers():
                    try:
                        manager.close()
                    except Exception as err:  # orbax raises a failed save's error again here
                        failure = failure or _save_failed(kind, str(manager.directory), None, err)
                if failure is not None and not self._failed:
                    self._failed = True
                    raise failure
            finally:
                self._patches.close()


def load_params(workdir: str, which: str = "best") -> tuple[Any, dict]:
    """Parameters for decoding: `which` is 'best', 'latest', a step number or 'avg:K'.

    'best' falls back to 'latest' when there is no readable best checkpoint, and
    'latest' to an older step when the newest is unreadable (with a warning);
    an explicit step that cannot be read is a CheckpointError. 'avg:K' is the
    element-wise mean of the K newest training checkpoints (accumulated in float64,
    so K copies of one checkpoint give it back exactly). A run that keeps an EMA
    gives its EMA parameters. Returns the parameters and the checkpoint's meta with
    its `step` (the newest averaged one, and `averaged_steps`) added.
    """
    which = str(which).strip()
    average = which.startswith("avg:")
    if (
        which not in ("best", "latest")
        and not which.isdigit()
        and not (average and which[4:].isdigit() and int(which[4:]) >= 1)
    ):
        raise CheckpointError(f"--checkpoint must be best, latest, a step number or avg:K (K >= 1), got {which!r}")
    if which == "best":
        found = _load_best(workdir)
        if found is not None:
            return found
        which = "latest"
    latest_dir = os.path.join(workdir, _LATEST.subdir)
    train_first = f"no checkpoint in {workdir}: train first with `python train.py --config CONFIG --workdir {workdir}`"
    if not os.path.isdir(latest_dir):
        raise CheckpointError(train_first)
    with contextlib.closing(_manager(workdir, _LATEST, 1, create=False)) as manager:
        steps = sorted(manager.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(train_first)
        if average:
            return _average(manager, steps, int(which[4:]), latest_dir)
        if which != "latest":
            if int(which) not in steps:
                available = ", ".join(map(str, sorted(steps))) or "none"
                raise CheckpointError(f"no checkpoint for step {which} in {latest_dir} (available: {available})")
            steps = [int(which)]
        step, restored = _restore_newest_readable(manager, _LATEST, steps, _LOCAL_DEVICE)
    return _uncommitted(decode_params(restored["state"])), dict(restored["meta"], step=step)


def decode_params(state: dict) -> Any:
    """The weights a train state decodes with: the EMA of the parameters if the run keeps one
    (train.ema_decay > 0), else the parameters."""
    return state.get("ema", state["params"])


def _average(manager: ocp.CheckpointManager, steps: list[int], k: int, directory: str) -> tuple[Any, dict]:
    """The mean of the decode parameters of the k newest steps (`steps` newest first)."""
    if len(steps) < k:
        raise CheckpointError(
            f"avg:{k} needs {k} checkpoints, {directory} has {len(steps)} "
            f"({', '.join(map(str, sorted(steps)))}; train.max_to_keep sets how many are kept)"
        )
    total, meta, params = None, None, None
    for step in steps[:k]:
        try:
            _, restored = _restore_newest_readable(manager, _LATEST, [step], _LOCAL_DEVICE)
        except _NoReadableCheckpoint as err:
            raise CheckpointError(f"avg:{k}: {err}") from None
        params = _uncommitted(decode_params(restored["state"]))
        wide = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
        total = wide if total is None else jax.tree.map(np.add, total, wide)
        meta = meta or dict(restored["meta"], step=step)
    mean = jax.tree.map(lambda t, like: (t / k).astype(np.asarray(like).dtype), total, params)
    return mean, dict(meta, averaged_steps=sorted(steps[:k]))


def load_train_state(workdir: str, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """The full training state (parameters and optimizer state) of `step` in another run's
    checkpoints/, shaped like `abstract_state`: what fine-tuning takes to keep the optimizer."""
    directory = os.path.join(workdir, _LATEST.subdir)
    if not os.path.isdir(directory):
        raise CheckpointError(f"no training checkpoints in {workdir}")
    with contextlib.closing(_manager(workdir, _LATEST, 1, create=False)) as manager:
        steps = sorted(manager.all_steps())
        if step not in steps:
            raise CheckpointError(
                f"{directory} has no training state for step {step} (available: {', '.join(map(str, steps)) or 'none'}); "
                "name one of those as WORKDIR:STEP, or leave train.init_keep_optimizer off"
            )
        try:
            _, restored = _restore_newest_readable(manager, _LATEST, [step], abstract_state)
        except _NoReadableCheckpoint as err:
            raise CheckpointError(str(err)) from None
    return _uncommitted(restored["state"]), restored["meta"]


def _load_best(workdir: str) -> tuple[Any, dict] | None:
    """`load_params(workdir, 'best')`, or None (with a warning if it is unreadable) to fall back."""
    if not os.path.isdir(os.path.join(workdir, _BEST.subdir)):  # a run without validation has none
        return None
    with contextlib.closing(_manager(workdir, _BEST, 1, create=False)) as manager:
        try:
            step, restored = _restore_newest_readable(
                manager, _BEST, sorted(manager.all_steps(), reverse=True), _LOCAL_DEVICE
            )
        except _NoReadableCheckpoint as err:
            for bad, why in err.unreadable:
                _warn(
                    f"best checkpoint {bad} in {manager.directory} is unreadable ({why}); using the latest checkpoint"
                )
            return None
    return _uncommitted(restored["params"]), dict(restored["meta"], step=step)
