"""metrics.jsonl and the TensorBoard events (s2s_jax/training/train_log.py): what a resumed run keeps, and a
full disk (a small tmpfs), which raises OSError naming the file at the write that hit it."""

from __future__ import annotations

import errno
import glob
import os
import struct

import pytest
from tensorboardX.proto import event_pb2

from s2s_jax.training.train_log import TrainLog, read_metrics
from tests.helpers import fill_disk, tmpfs


def read_events(directory: str) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in the one event file of `directory` (TFRecord framing:
    length, its CRC, the Event, its CRC)."""
    (path,) = glob.glob(os.path.join(directory, "events.out.tfevents.*"))
    with open(path, "rb") as f:
        data = f.read()
    scalars, at = [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
        scalars += [(event.step, value.tag, value.simple_value) for value in event.summary.value]
        at += 12 + length + 4
    return scalars


def test_the_log_writes_metrics_and_tensorboard_scalars_and_a_resume_drops_later_steps(tmp_path):
    log = TrainLog(str(tmp_path))
    for step in (5, 10, 15):
        log.write(step, {"train_loss": step / 10, "valid_bleu": float(step)})
    log.close()
    assert read_events(str(tmp_path / "tensorboard")) == [
        (step, tag, pytest.approx(value))
        for step in (5, 10, 15)
        for tag, value in (("train_loss", step / 10), ("valid_bleu", float(step)))
    ]
    with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 20, "train_lo')  # a write cut short
    TrainLog(str(tmp_path), resume_step=10).close()
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [5, 10]


def test_a_full_disk_while_logging_names_the_file_and_loses_no_complete_line(tmp_path):
    with tmpfs(tmp_path / "disk", 1 << 20) as disk:
        log = TrainLog(disk)
        log.write(5, {"train_loss": 1.5})
        filler = fill_disk(disk)
        with pytest.raises(OSError) as raised:
            for step in range(10, 100_000, 5):  # until a file needs a new page of the disk
                log.write(step, {"train_loss": 1.25, "valid_bleu": 3.5})
        assert raised.value.errno == errno.ENOSPC
        assert raised.value.filename in (os.path.join(disk, "metrics.jsonl"), os.path.join(disk, "tensorboard"))
        log.close()  # the error was raised once; closing does not raise it again
        os.remove(filler)
        TrainLog(disk, resume_step=10).close()  # a rerun resuming from step 10 drops the rest (and a torn line)
        assert read_metrics(disk) == [
            {"step": 5, "train_loss": 1.5},
            {"step": 10, "train_loss": 1.25, "valid_bleu": 3.5},
        ]
