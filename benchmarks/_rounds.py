"""Interleaved rounds of benchmark processes, and the statistics of their ratios (not a benchmark itself).

On a shared machine one process's figures move by up to 40% from the next one's, so a comparison
runs both sides in fresh processes, alternating, for several rounds, and reports each round's
ratio with the median and range over the rounds. The statistics here are pure functions; `run_json`
is the one place that starts a process.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import time


class RunError(RuntimeError):
    """A benchmark process failed or printed no JSON line; the message is one line for `error:`."""


def run_json(cmd: list[str], label: str) -> dict:
    """Runs `cmd` in a fresh process and returns the last JSON object it printed on stdout.

    Progress goes to stderr: the label before, the wall time after. Its own stderr is kept
    and shown (the last lines) only when it fails. The result gains `load_before`, the machine's
    load average when the process started.
    """
    load = load_average()
    print(f"[{time.strftime('%H:%M:%S')}] load {load} {label}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(f"  {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise RunError(f"{label} exited with {proc.returncode}: {tail}")
    result = last_json_object(proc.stdout)
    if result is None:
        raise RunError(f"{label} printed no JSON object on stdout")
    return {**result, "load_before": load}


def load_average() -> float | None:
    """The 1-minute load average: well above the CPUs a run uses, the machine was shared and the figures are noise
    (PyTorch's OpenMP threads slowed 10-20x on a 2-core machine at load 8-11; XLA's far less)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def last_json_object(stdout: str) -> dict | None:
    """The last line of `stdout` that parses as a JSON object, or None."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def drop_option(argv: list[str], name: str) -> list[str]:
    """`argv` without `name VALUE` and `name=VALUE`: a driver's own option removed before it reruns itself."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def rotated(items: list, k: int) -> list:
    """`items` started at position k (mod len): round k runs its contenders in this order, so no
    contender is always first (the first process of a round tends to see a different machine)."""
    if not items:
        return []
    k %= len(items)
    return items[k:] + items[:k]


def median_of(result: dict, key: str) -> float | None:
    """The median of a `{median, min, max, repeats}` figure in a bench JSON, or None where it is absent."""
    value = result.get(key)
    if isinstance(value, dict):
        value = value.get("median")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs, rounded to 3 places; None when either side is missing or theirs is not positive."""
    if ours is None or theirs is None or theirs <= 0:
        return None
    return round(ours / theirs, 3)


def spread(values: list[float | None]) -> dict:
    """`{median, min, max, rounds}` over the rounds that have a value (`rounds` counts them)."""
    xs = [x for x in values if x is not None]
    if not xs:
        return {"median": None, "min": None, "max": None, "rounds": 0}
    return {"median": round(statistics.median(xs), 3), "min": min(xs), "max": max(xs), "rounds": len(xs)}


def format_spread(s: dict) -> str:
    """`1.05× (0.98–1.12×, 5 rounds)`, or `—` with no rounds."""
    if not s["rounds"]:
        return "—"
    rounds = f"{s['rounds']} round" + ("s" if s["rounds"] != 1 else "")
    return f"{s['median']:.2f}× ({s['min']:.2f}–{s['max']:.2f}×, {rounds})"
