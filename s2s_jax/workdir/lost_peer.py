"""A run of several processes when one of them dies: every other process exits, non-zero, with one
`error:` line that names the lost process and says how to resume.

What jax 0.10.2 does on CPU (gloo collectives), measured with two processes on one machine:

- a process killed on a host that stays up (its sockets close): the others' next collective raises
  at once (``Gloo AllGather failed: ... Connection closed by peer``). train.py recognises it
  (`describe`), prints the line and leaves with ``os._exit(1)`` (`exit_lost`): a normal exit would
  wait in ``jax.distributed.shutdown``'s barrier for the dead process until the heartbeat timeout
  and then abort with a stack trace.
- the coordinator (process 0) killed: JAX's runtime aborts the others at once, from a C++ thread:
  ``F... client.h:80] Terminating process because the JAX distributed service detected fatal errors.
  ... Failed to send RPC to coordination service. Either the leader task was preempted/died ...``.
- a process that hangs or whose host vanishes (no socket closes): collectives wait; after the
  heartbeat timeout (``jax.distributed.initialize(heartbeat_timeout_seconds=...)``, train.py's
  ``--heartbeat_timeout``) the coordination service declares it dead and the runtime aborts every
  other process the same way (``The following tasks are unhealthy (stopped sending heartbeats): 1``;
  a stopped coordinator: ``DEADLINE_EXCEEDED`` on its heartbeat RPC). With the default 60 s, a
  SIGSTOPped process 1 or 0 ended the other after 47-48 s; a killed one, after 0.2-0.5 s.

The runtime's abort gives Python no hook: the distributed client's ``missed_heartbeat_callback``
cannot be used from Python in jaxlib 0.10.2 (its ``absl::Status`` argument has no Python conversion;
the process dies of ``std::bad_cast``), and a Python SIGABRT handler never runs. So `relay_stderr` sends the
process's stderr through a small helper process (this file run as a script, standard library only)
that copies it unchanged and, when the runtime's abort message went by, adds the same `error:` line
after it once the process is gone. Either way the heartbeat timeout bounds how long a survivor waits.

Orbax commits a checkpoint only after every process has written its part, so the newest committed
step is one that every process completed: rerunning all processes resumes from it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

# Seconds without a heartbeat after which JAX's coordination service declares a process dead and
# the runtime stops the others (train.py --heartbeat_timeout); JAX's own default is 100. 60 keeps a
# survivor's exit well under two minutes; heartbeats come from a C++ thread, so long Python work or
# a long compile does not delay them.
DEFAULT_HEARTBEAT_TIMEOUT = 60

# Errors of a collective or of the coordination service whose cause is a process that is gone.
_LOST_ERROR = re.compile(
    r"Gloo [\w-]+ failed|Connection (closed|reset) by peer|Socket closed|coordination service|heartbeat", re.I
)
_PEER_ADDRESS = re.compile(r"\[([0-9A-Fa-f.:]+)\]:(\d+)")

# What the runtime's abort (see the module docstring) says, and who it names.
_RUNTIME_ABORT = b"Terminating process because the JAX distributed service detected fatal errors"
_TASK_TIMED_OUT = re.compile(r"Task (\d+) heartbeat timeout")
_UNHEALTHY_TASKS = re.compile(r"unhealthy \(stopped sending heartbeats\):\s*((?:\d+\s*)+)")
_COORDINATOR_GONE = re.compile(r"leader task|Failed to send RPC to coordination service|CoordinationService/Heartbeat")

_OWN_LINE = b"error: lost "  # how `message` starts: one such line per process is enough
_relays: list[subprocess.Popen] = []  # relay_stderr's helper


def newest_checkpoint(workdir: str) -> int | None:
    """The newest committed step in WORKDIR/checkpoints (orbax renames a step's directory to its
    number only once every process has written its part), or None."""
    try:
        steps = [int(name) for name in os.listdir(os.path.join(workdir, "checkpoints")) if name.isdigit()]
    except OSError:
        return None
    return max(steps, default=None)


def message(lost: str, num_processes: int, workdir: str, cause: str) -> str:
    """The `error:` line: which process was lost, why we know, and how to resume."""
    step = newest_checkpoint(workdir)
    resume = (
        f"resumes from step {step}, the last checkpoint every process completed"
        if step is not None
        else "starts again (no checkpoint was completed yet)"
    )
    return (
        f"error: lost {lost} of this {num_processes}-process run ({cause}); it died or its host is "
        f"unreachable. Run the same command again on all {num_processes} processes: training {resume} "
        f"in {workdir}/checkpoints"
    )


def describe(err: BaseException, process_id: int, num_processes: int) -> str | None:
    """Who is lost, when `err` (raised by a collective or the coordination service in a run of
    several processes) says a process is gone ("process 1"); None for any other error."""
    text = str(err)
    if num_processes < 2 or not _LOST_ERROR.search(text):
        return None
    if num_processes == 2:
        return f"process {1 - process_id}" + (" (the coordinator)" if process_id == 1 else "")
    address = _PEER_ADDRESS.search(text)
    return f"a process at {address.group(1)}:{address.group(2)}" if address else "another process"


def cause(err: BaseException, limit: int = 200) -> str:
    """The first line of `err`'s message from its failed collective on ("Gloo AllGather failed: ...
    Connection closed by peer [10.0.0.2]:4242"; XLA prefixes layers of "Error dispatching
    computation"), cut to `limit` characters."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    if match := re.search(r"Gloo [\w-]+ failed", text):
        text = text[match.start() :]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def exit_lost(err: BaseException, lost: str, num_processes: int, workdir: str) -> None:
    """Prints the `error:` line for `err` and ends the process with status 1 at once.

    ``os._exit``: a normal exit runs jax.distributed.shutdown, whose barrier waits for the lost
    process until the heartbeat timeout and then aborts; nothing else is left to save (a checkpoint
    needs every process).
    """
    sys.stdout.flush()
    print(message(lost, num_processes, workdir, cause(err)), file=sys.stderr, flush=True)
    os._exit(1)


def relay_stderr(process_id: int, num_processes: int, workdir: str) -> subprocess.Popen | None:
    """Routes this process's stderr (fd 2, C++ logs included) through a helper process that copies
    it and adds the `error:` line after a runtime abort (see the module docstring).

    Call once, after jax.distributed.initialize, in a command-line run only (it replaces fd 2 for
    the rest of the process). The helper ignores SIGINT and SIGTERM, so that Ctrl-C or a scheduler's
    SIGTERM to the process group lets training checkpoint and report through it; it exits when this
    process's end of the pipe closes. If it cannot start, stderr stays as it is.
    """
    args = [sys.executable, "-I", os.path.abspath(__file__), str(process_id), str(num_processes), workdir]
    read_end, write_end = os.pipe()
    try:
        helper = subprocess.Popen(args, stdin=read_end, stdout=sys.stderr.fileno(), close_fds=True)
    except OSError as err:
        print(f"warning: stderr relay not started ({err}); a runtime abort will lack the resume hint", file=sys.stderr)
        os.close(write_end)
        return None
    finally:
        os.close(read_end)
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    _relays.append(helper)  # held for the life of the process (a collected Popen warns while it runs)
    return helper


def lost_in_runtime_abort(text: str, process_id: int) -> str:
    """Who the runtime's abort message names as lost."""
    if match := _TASK_TIMED_OUT.search(text):
        return f"process {match.group(1)}"
    if match := _UNHEALTHY_TASKS.search(text):
        tasks = [int(t) for t in match.group(1).split() if int(t) != process_id]
        if tasks:
            return "process " + ", ".join(map(str, tasks))
    if _COORDINATOR_GONE.search(text):
        return "process 0 (the coordinator)"
    return "another process"


def _relay_main(process_id: int, num_processes: int, workdir: str) -> None:
    """The helper: stdin (the training process's stderr) to stdout (the real stderr), unchanged."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    tail = b""  # the runtime's abort message, from its start, for naming the lost process
    seen = False
    reported, recent = False, b""  # whether train.py printed its own `error: lost` line (a race with the abort)
    out = sys.stdout.buffer
    while chunk := os.read(0, 65536):
        try:
            out.write(chunk)
            out.flush()
        except OSError:  # the real stderr is gone: keep draining, so the process never blocks on it
            pass
        recent = (recent + chunk)[-(len(_OWN_LINE) + 65536) :]
        reported = reported or _OWN_LINE in recent
        if seen:
            tail = (tail + chunk)[:16384]
            continue
        tail = (tail + chunk)[-(len(_RUNTIME_ABORT) + 65536) :]
        if (at := tail.find(_RUNTIME_ABORT)) >= 0:
            seen, tail = True, tail[at:]
    if seen and not reported:
        lost = lost_in_runtime_abort(tail.decode("utf-8", "replace"), process_id)
        cause = "JAX's distributed runtime ended this process, see its message above"
        out.write((message(lost, num_processes, workdir, cause) + "\n").encode())
        out.flush()


if __name__ == "__main__":
    _relay_main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
