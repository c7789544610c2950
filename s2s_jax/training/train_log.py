"""metrics.jsonl and TensorBoard events in the workdir (one writer for both)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Iterator

from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2
from tensorboardX.summary import scalar

from s2s_jax.files import write_atomic


class TrainLog:
    """Appends one JSON object per logged step; on resume drops lines past the restored step.

    Dropping those lines keeps metrics.jsonl equal to an uninterrupted run's:
    steps after the last checkpoint are recomputed, not duplicated. A last line
    without its newline is what a write cut short (a full disk, a kill) leaves;
    it is dropped too.

    Both files are written and flushed in the calling thread, so a failed write
    (a full disk) raises OSError naming the file at the step that hit it.
    tensorboardX's SummaryWriter writes from a thread of its own: an error there
    ends that thread with a traceback, later events pile up in its queue, and once
    the queue is full the training loop blocks forever. Its synchronous
    EventsWriter writes the same event files.
    """

    def __init__(self, workdir: str, resume_step: int = 0):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._failed = False
        with _naming(self.path):
            if os.path.exists(self.path):
                with open(self.path, encoding="utf-8") as f:
                    lines = [line for line in f if line.endswith("\n") and line.strip()]
                kept = [line for line in lines if json.loads(line)["step"] <= resume_step]
                write_atomic(self.path, "".join(kept))  # a kill while rewriting keeps the old history
            self._file = open(self.path, "a", encoding="utf-8")
        self._tb_dir = os.path.join(workdir, "tensorboard")
        with _naming(self._tb_dir):
            os.makedirs(self._tb_dir, exist_ok=True)
            self._tb = EventsWriter(os.path.join(self._tb_dir, "events"))

    def write(self, step: int, record: dict) -> None:
        try:
            with _naming(self.path):
                self._file.write(json.dumps({"step": step, **record}) + "\n")
                self._file.flush()
            with _naming(self._tb_dir):
                for key, value in record.items():
                    self._tb.write_event(event_pb2.Event(wall_time=time.time(), step=step, summary=scalar(key, value)))
                self._tb.flush()
        except OSError:
            self._failed = True
            raise

    def close(self) -> None:
        """Closes both files; after a failed write, without raising that error a second time."""
        errors = []
        for path, close in ((self.path, self._file.close), (self._tb_dir, self._tb.close)):
            try:
                with _naming(path):
                    close()
            except OSError as err:
                errors.append(err)
        if errors and not self._failed:
            raise errors[0]


@contextlib.contextmanager
def _naming(path: str) -> Iterator[None]:
    """Re-raises an OSError without a file name (a failed write or flush) as one naming `path`."""
    try:
        yield
    except OSError as err:
        if err.filename:
            raise
        raise OSError(err.errno, err.strerror or str(err), path) from err


class NullTrainLog:
    """What processes other than 0 log with (nothing): one process writes the workdir's logs."""

    def write(self, step: int, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


def read_metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
