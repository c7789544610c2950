"""One training run per workdir (s2s_jax/workdir/lock.py): a live holder refuses a second run at
once, naming its pid and host; a dead holder's lock is taken over with a warning."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from s2s_jax.workdir.lock import LOCK_NAME, WorkdirLocked, hold
from tests.helpers import ROOT, TINY_TRAIN_FLAGS, write_tiny_corpus


def test_a_held_workdir_refuses_a_second_holder(tmp_path):
    warnings = []
    with hold(str(tmp_path), warnings.append):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(WorkdirLocked, match=f"pid {os.getpid()} on host {socket.gethostname()}"):
            with hold(str(tmp_path), warnings.append):
                pass
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released cleanly: nothing to take over
    with hold(str(tmp_path), warnings.append):
        pass
    assert warnings == []


def test_a_dead_holders_lock_is_taken_over_with_a_warning(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 4242424, "host": "gone", "since": 0}))
    warnings = []
    with hold(str(tmp_path), warnings.append):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert len(warnings) == 1 and "pid 4242424 on host gone" in warnings[0] and "taking over" in warnings[0]


def test_other_processes_of_a_multihost_run_do_not_take_it(tmp_path):
    warnings = []
    with hold(str(tmp_path), warnings.append):
        held = (tmp_path / LOCK_NAME).read_text()
        with hold(str(tmp_path), warnings.append, enabled=False):  # process 1 of the run that process 0 locked for
            assert (tmp_path / LOCK_NAME).read_text() == held
        assert (tmp_path / LOCK_NAME).read_text() == held  # process 0's record is intact...
        with pytest.raises(WorkdirLocked, match=f"pid {os.getpid()} on host"):  # ...and so is its lock
            with hold(str(tmp_path), warnings.append):
                pass
    assert warnings == []


@pytest.mark.slow
def test_train_py_refuses_a_live_runs_workdir_and_takes_over_a_killed_one(tmp_path):
    paths = write_tiny_corpus(str(tmp_path))
    workdir = tmp_path / "run"
    flags = [f for f in TINY_TRAIN_FLAGS if "num_steps" not in f] + ["--config.train.num_steps=100000"]
    args = [sys.executable, "train.py", "--config=configs/default.py", f"--workdir={workdir}", *flags]
    args += [f"--config.data.{key}={path}" for key, path in paths.items()]
    env = dict(os.environ, S2S_JAX_CACHE="off", JAX_PLATFORMS="cpu")
    first = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(workdir.glob("checkpoints/[0-9]*")):  # the first run has a committed checkpoint
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        started = time.monotonic()
        second = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert time.monotonic() - started < 30  # refused at once, not after loading data
        assert second.returncode == 1
        assert "Traceback" not in second.stderr
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith("error:") and f"pid {first.pid} on host {socket.gethostname()}" in last, last
        assert first.poll() is None  # the live run goes on
        decoded = subprocess.run(
            [sys.executable, "decode.py", f"--workdir={workdir}", "--checkpoint=latest"],
            cwd=ROOT,
            env=env,
            input="the red cat\n",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert decoded.returncode == 0 and len(decoded.stdout.splitlines()) == 1, decoded.stderr[-2000:]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    resumed = subprocess.run(
        [*args, "--config.train.num_steps=45"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"taking over the lock of {workdir} from pid {first.pid}" in resumed.stderr
    assert (workdir / LOCK_NAME).read_text() == ""
