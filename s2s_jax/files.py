"""Files written whole or not at all, and file digests: the idioms every writer of a workdir,
a prepared corpus or an export shares."""

from __future__ import annotations

import hashlib
import os
import shutil

TEMPORARY_MARK = ".tmp-"  # PATH.tmp-PID: what a writer killed mid-write leaves behind


def temporary_name(path: str) -> str:
    """Where `path` is written before it is renamed into place: beside it (same file system,
    so `os.replace` is atomic) and per process (two writers never share one)."""
    return f"{path}{TEMPORARY_MARK}{os.getpid()}"


def write_atomic(path: str, data: str | bytes) -> None:
    """Writes `data` to `path` so that a reader (or a kill mid-write) sees the old file or the
    new one, never half of one. Text is written as UTF-8 with '\\n' line ends."""
    tmp = temporary_name(path)
    try:
        if isinstance(data, bytes):
            with open(tmp, "wb") as f:
                f.write(data)
        else:
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def copy_atomic(source: str, path: str) -> None:
    """Copies `source` to `path` with `write_atomic`'s guarantee."""
    tmp = temporary_name(path)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def file_digest(path: str, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes, read in blocks (corpora and checkpoints can be large)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
