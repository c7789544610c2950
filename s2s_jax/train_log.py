"""metrics.jsonl and TensorBoard events in the workdir (one writer for both)."""

from __future__ import annotations

import json
import os

from tensorboardX import SummaryWriter


class TrainLog:
    """Appends one JSON object per logged step; on resume drops lines past the restored step.

    Dropping those lines keeps metrics.jsonl equal to an uninterrupted run's:
    steps after the last checkpoint are recomputed, not duplicated.
    """

    def __init__(self, workdir: str, resume_step: int = 0):
        self.path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                kept = [line for line in f if line.strip() and json.loads(line)["step"] <= resume_step]
            with open(self.path, "w", encoding="utf-8") as f:
                f.writelines(kept)
        self._file = open(self.path, "a", encoding="utf-8")
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, record: dict) -> None:
        self._file.write(json.dumps({"step": step, **record}) + "\n")
        self._file.flush()
        for key, value in record.items():
            self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        self._file.close()
        self._tb.close()


class NullTrainLog:
    """What processes other than 0 log with (nothing): one process writes the workdir's logs."""

    def write(self, step: int, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


def read_metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
