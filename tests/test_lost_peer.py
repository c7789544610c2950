"""A run of two train.py processes (jax.distributed on loopback) when one of them is killed after
the first checkpoint: the other exits non-zero within the heartbeat timeout with one `error:` line
naming the lost process and how to resume, and rerunning both ends bit-identical to an
uninterrupted two-process run. Plus the pieces of s2s_jax/workdir/lost_peer.py on their own.
"""

import os
import signal
import subprocess
import sys
import time
import types

import pytest

from s2s_jax import parallel
from s2s_jax.workdir import lost_peer
from tests.helpers import cli_cache, free_port, write_tiny_corpus
from tests.test_reliability import FLAGS, SLOW_TRAIN, assert_same_params, wait_for, without_speed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEARTBEAT = 10  # --heartbeat_timeout of these runs: bounds every survivor's wait
EXIT_WITHIN = 3 * HEARTBEAT  # seconds; a killed process is noticed at once, a hung one after HEARTBEAT
TIMEOUT = 300  # for whole runs


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("lost_peer")
    paths = write_tiny_corpus(str(base))
    flags = FLAGS + [f"--config.data.{key}={path}" for key, path in paths.items()]
    return types.SimpleNamespace(base=base, flags=flags + [f"--heartbeat_timeout={HEARTBEAT}"])


def launch(env, workdir, slow=False) -> list[subprocess.Popen]:
    """train.py as two processes of one run (process 0 first), each with its own compile cache."""
    port = free_port()
    head = ["-c", SLOW_TRAIN] if slow else ["train.py"]
    procs = []
    for pid in range(2):
        process_env = dict(
            os.environ,
            JAX_PLATFORMS="cpu",
            OPENBLAS_NUM_THREADS="1",
            S2S_JAX_CACHE=cli_cache(pid),
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(pid),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, *head, *env.flags, f"--workdir={workdir}"],
                cwd=ROOT,
                env=process_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def finish(procs, timeout=TIMEOUT) -> list[tuple[str, str]]:
    """Each process's (stdout, stderr); kills what is still running after `timeout` seconds."""
    try:
        return [proc.communicate(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture(scope="module")
def reference(env):
    """The uninterrupted two-process run that every interrupted one must reproduce."""
    workdir = env.base / "reference"
    procs = launch(env, workdir)
    outputs = finish(procs)
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    return workdir


def kill_after_checkpoint(env, workdir, step: int, victim: int) -> str:
    """Starts both processes (slowed), SIGKILLs `victim` once checkpoint `step` is committed and checks
    how the other one ends; process 0's stdout."""
    procs = launch(env, workdir, slow=True)
    try:
        wait_for(workdir / "checkpoints" / str(step), procs[0], timeout=TIMEOUT)
        procs[victim].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        survivor = procs[1 - victim]
        survivor.wait(timeout=EXIT_WITHIN)
        seconds = time.monotonic() - killed_at
    finally:
        outputs = finish(procs, timeout=EXIT_WITHIN)
    err = outputs[1 - victim][1]
    # 1: the survivor's collective failed first (train.py's exit); -SIGABRT: JAX's runtime ended it.
    assert survivor.returncode in (1, -signal.SIGABRT), err[-3000:]
    lost = "process 1" if victim == 1 else "process 0 (the coordinator)"
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"error: lost {lost} of this 2-process run ("), lines[0]
    assert lost_peer.newest_checkpoint(str(workdir)) == step, "the kill came too late to test anything"
    assert f"Run the same command again on all 2 processes: training resumes from step {step}," in lines[0]
    if survivor.returncode == -signal.SIGABRT:  # the runtime's own message reaches the user too
        assert "Terminating process because the JAX distributed service detected fatal errors" in err
    print(f"{lost} killed: the other exited {survivor.returncode} after {seconds:.1f} s: {lines[0]}")
    return outputs[0][0]


@pytest.mark.slow
def test_a_killed_process_stops_the_other_and_both_resume_exactly(env, reference):
    """Process 1 killed after checkpoint 10: process 0's next collective fails and it exits 1 with
    the line. Rerun, and process 0 (the coordinator) killed after checkpoint 20: JAX's runtime aborts
    process 1, whose stderr keeps the runtime's message and gets the line after it (relayed, see
    s2s_jax/workdir/lost_peer.py). The last rerun ends bit-identical to the uninterrupted run."""
    workdir = env.base / "killed"
    kill_after_checkpoint(env, workdir, 10, victim=1)
    assert "Resumed from step 10 " in kill_after_checkpoint(env, workdir, 20, victim=0)

    procs = launch(env, workdir)
    outputs = finish(procs)
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    assert "Resumed from step 20 " in outputs[0][0]
    assert_same_params(reference, workdir)
    assert without_speed(workdir) == without_speed(reference)


# ---------------------------------------------------------------------------
# The pieces, in-process
# ---------------------------------------------------------------------------

GLOO = (
    "INTERNAL: Error dispatching computation: Gloo all-reduce failed: [external/gloo/gloo/transport/"
    "tcp/pair.cc:538] Read error [127.0.0.1]:34955: Connection reset by peer"
)
# The status part of the runtime's abort (client.h:80), as jax 0.10.2 words it in each case.
ABORTS = {
    "process 1": "UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):\n1\nThe tasks have",
    "process 2": "INTERNAL: Barrier failed because: task is set to ERROR: UNAVAILABLE: Task 2 heartbeat timeout.",
    "process 0 (the coordinator)": "UNAVAILABLE: Failed to send RPC to coordination service. Either the leader task",
}


def test_collective_errors_name_the_lost_process():
    assert lost_peer.describe(RuntimeError(GLOO), 0, 2) == "process 1"
    assert lost_peer.describe(RuntimeError(GLOO), 1, 2) == "process 0 (the coordinator)"
    assert lost_peer.describe(RuntimeError(GLOO), 0, 4) == "a process at 127.0.0.1:34955"
    assert lost_peer.describe(RuntimeError(GLOO), 0, 1) is None
    assert lost_peer.describe(ValueError("operands could not be broadcast"), 0, 2) is None
    assert lost_peer.cause(RuntimeError(GLOO)) == GLOO[GLOO.index("Gloo") :]


@pytest.mark.parametrize("lost, status", ABORTS.items(), ids=list(ABORTS))
def test_runtime_aborts_name_the_lost_process(lost, status):
    text = f"{lost_peer._RUNTIME_ABORT.decode()}. This most likely ... absl::Status: {status}"
    assert lost_peer.lost_in_runtime_abort(text, process_id=3) == lost


def test_the_message_says_where_training_resumes(tmp_path):
    start = lost_peer.message("process 1", 2, str(tmp_path), "why")
    assert start.startswith("error: lost process 1 of this 2-process run (why); it died")
    assert "training starts again (no checkpoint was completed yet)" in start
    for step in ("10", "20", "20.orbax-checkpoint-tmp-3"):  # a half-written step does not count
        os.makedirs(tmp_path / "checkpoints" / step)
    assert "training resumes from step 20, the last checkpoint every process completed" in (
        lost_peer.message("process 1", 2, str(tmp_path), "why")
    )


def relay(text: bytes, workdir) -> bytes:
    helper = [sys.executable, "-I", lost_peer.__file__, "1", "2", str(workdir)]
    return subprocess.run(helper, input=text, capture_output=True, timeout=60, check=True).stdout


def test_the_stderr_relay_copies_and_adds_the_line_after_a_runtime_abort(tmp_path):
    plain = b"train: 10/30 \r\xff not UTF-8\nwarning: something\n" * 5000  # several pipe reads
    assert relay(plain, tmp_path) == plain
    abort = (
        f"F1201 client.h:80] {lost_peer._RUNTIME_ABORT.decode()}. absl::Status: "
        f"{ABORTS['process 0 (the coordinator)']}\n*** Check failure stack trace: ***\n"
    ).encode()
    out = relay(plain + abort, tmp_path)
    assert out.startswith(plain + abort)
    assert out[len(plain + abort) :].decode().startswith("error: lost process 0 (the coordinator) of this 2-process")
    # train.py's own line (a failed collective) racing the runtime's abort: the relay adds no second one.
    own = b"error: lost process 1 of this 2-process run (Gloo AllGather failed: ...); ...\n"
    for both in (plain + abort + own, plain + own + abort):
        assert relay(both, tmp_path) == both


def test_the_heartbeat_timeout_reaches_jax_distributed_initialize(monkeypatch):
    import jax

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    env = {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert parallel.maybe_initialize_distributed(False, env, heartbeat_timeout=7)
    assert parallel.maybe_initialize_distributed(False, env)
    assert calls == [
        {"heartbeat_timeout_seconds": 7, "num_processes": 2, "process_id": 1},
        {"heartbeat_timeout_seconds": lost_peer.DEFAULT_HEARTBEAT_TIMEOUT, "num_processes": 2, "process_id": 1},
    ]
