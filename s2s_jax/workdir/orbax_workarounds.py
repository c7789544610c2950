"""Where s2s_jax reaches into orbax-checkpoint's internals (0.12.8), kept in one place.

- `ChecksummedRename`: orbax's atomic-rename commit with the checksum manifest
  (s2s_jax/workdir/checksums.py) written just before the rename.
- `drain_pending_io_on_failure`: swaps orbax's private event-loop runner for one
  that lets a failed restore or save finish its other reads/writes first.
- `drop_orbax_errors`: a logging filter for orbax's own tracebacks of a failed
  asynchronous save, which s2s_jax reports once as a CheckpointError.

Each relies on something orbax does not promise; tests/test_orbax_workarounds.py
fails when an orbax upgrade changes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from typing import Any, Iterator

import orbax.checkpoint as ocp

from s2s_jax.workdir import checksums

# orbax rewrites these files of a step after the commit rename's `finalize` starts (the commit
# time, the success marker): timestamps, not parameters, so the manifest leaves them out.
REWRITTEN_AT_COMMIT = ("_CHECKPOINT_METADATA", ocp.path.atomicity.COMMIT_SUCCESS_FILE)


class ChecksummedRename(ocp.path.atomicity.AtomicRenameTemporaryPath):
    """Orbax's atomic-rename commit (the default on local and network file systems), with the
    checksum manifest written just before the rename.

    orbax calls `finalize` on process 0 once every process has written its files
    and the items are finalized, so the manifest covers the complete checkpoint as
    process 0 sees it (on storage that several hosts share, all of it). A kill
    before the rename leaves a temporary directory that the next run deletes; the
    step is never visible without its manifest. orbax rewrites two of its own
    files while committing, after the manifest (`REWRITTEN_AT_COMMIT`).

    Passed as `CheckpointManagerOptions(temporary_path_class=...)`, which is
    deprecated in orbax-checkpoint 0.12.8 in favour of `atomicity_options`, which
    offers no hook; if an upgrade removes it, making a manager fails loudly and
    every checkpoint test fails.
    """

    async def finalize(self) -> None:
        # orbax commits each item's directory (state/, meta/) the same way inside the step's
        # temporary directory; one manifest per step, written when the step (named by its
        # number) commits, covers them all.
        if self.get_final().name.isdigit():
            await asyncio.to_thread(checksums.write_manifest, str(self.get()), REWRITTEN_AT_COMMIT)
        await super().finalize()


# The private orbax function that `drain_pending_io_on_failure` replaces.
ORBAX_LOOP_MODULE = "orbax.checkpoint._src.asyncio_utils"
ORBAX_LOOP_RUNNER = "_run_sync_via_new_loop"


def run_sync_draining_on_failure(coro: Any) -> Any:
    """orbax's `_run_sync_via_new_loop`, except that a failure first waits for the other tasks."""
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


class _DrainPatch:
    """Who uses `drain_pending_io_on_failure` now, and the orbax function it replaced."""

    lock = threading.Lock()
    users = 0
    original: Any = None


@contextlib.contextmanager
def drain_pending_io_on_failure() -> Iterator[None]:
    """Lets a failed restore or save finish its other pending reads/writes before orbax closes
    its event loop.

    When one file of a damaged checkpoint fails to read (or one file of a save
    fails to write: a full disk), orbax's `asyncio.gather` raises at once and
    `_run_sync_via_new_loop` closes the event loop while tensorstore still
    completes the other operations; each completion then prints a 'RuntimeError:
    Event loop is closed' traceback to stderr (dozens of them). orbax-checkpoint
    0.12.8 has no public option for this (reads and writes always run through
    `asyncio_utils.run_sync`), so this swaps in a runner that waits for the
    leftover tasks first; it behaves identically when nothing fails. Restores hold
    it while they run; `checkpoints.Checkpoints` for its lifetime, as saves end in
    orbax's background threads. Blocks may nest and overlap: the original comes
    back when the last one ends. If an orbax upgrade removes the private function
    this does nothing, and tests/test_orbax_workarounds.py fails.
    """
    try:
        module = __import__(ORBAX_LOOP_MODULE, fromlist=[ORBAX_LOOP_RUNNER])
    except ImportError:
        yield
        return
    with _DrainPatch.lock:
        if _DrainPatch.users == 0:
            _DrainPatch.original = getattr(module, ORBAX_LOOP_RUNNER, None)
            if _DrainPatch.original is not None:
                setattr(module, ORBAX_LOOP_RUNNER, run_sync_draining_on_failure)
        _DrainPatch.users += 1
    try:
        yield
    finally:
        with _DrainPatch.lock:
            _DrainPatch.users -= 1
            if _DrainPatch.users == 0 and _DrainPatch.original is not None:
                setattr(module, ORBAX_LOOP_RUNNER, _DrainPatch.original)
                _DrainPatch.original = None


def drop_orbax_errors(record: logging.LogRecord) -> bool:
    """A filter for the `absl` logger: False for orbax's own ERROR records.

    orbax logs a failed asynchronous save with its traceback from each of its
    threads (four tracebacks or more for one full disk); the same error is raised
    again by the next wait, which `checkpoints.Checkpoints` reports as one
    CheckpointError. Once a training run's `Checkpoints` exist the filter stays for
    the rest of the process: orbax's threads may log a failure after the managers
    have closed.
    """
    return record.levelno < logging.ERROR or f"{os.sep}orbax{os.sep}" not in record.pathname
