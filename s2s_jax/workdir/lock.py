"""One training run per workdir: an exclusive `flock` on WORKDIR/.lock, taken before anything
else in the workdir is written.

The kernel drops a flock when its holder dies however it dies (SIGKILL included), so a
lock is never stale: a second run on a live run's workdir is refused at once, naming the
holder's pid and host (read from the file), and a run that finds the file still naming
a holder that did not release it (it died) takes it over with a warning. On shared
storage flock needs a filesystem that supports it (local disks, NFSv4, Lustre with
`flock`). The processes of one multi-host run share the lock: process 0 holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator

LOCK_NAME = ".lock"


class WorkdirLocked(Exception):
    """Another live process trains in this workdir."""


def _holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        return json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError):
        return {"unreadable": raw[:80].decode("utf-8", "replace")}


def _describe(holder: dict) -> str:
    if "pid" not in holder:
        return "an unknown process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"pid {holder['pid']} on host {holder.get('host', '?')} (since {since})"


@contextlib.contextmanager
def hold(workdir: str, warn: Callable[[str], None], enabled: bool = True) -> Iterator[None]:
    """Holds the workdir's lock for the block; WorkdirLocked if a live process holds it.

    `enabled=False` (the other processes of a multi-host run) does nothing.
    """
    if not enabled:
        yield
        return
    path = os.path.join(workdir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirLocked(
                f"{workdir} is being trained by {_describe(_holder(fd))}: wait for that run to finish or stop it "
                "(SIGTERM checkpoints and exits), then run this command again"
            ) from None
        previous = _holder(fd)
        if previous:
            warn(
                f"taking over the lock of {workdir} from {_describe(previous)}, which ended without releasing it "
                "(killed or crashed); resuming from its last checkpoint"
            )
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode("utf-8"), 0)
        os.fsync(fd)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a clean end: the next run has nothing to take over
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
