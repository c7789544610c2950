#!/usr/bin/env python3
"""Kill soak: train the quickstart config while SIGKILLing it at random times, then compare the final
parameters and metrics.jsonl with an uninterrupted run of the same steps; one JSON object.

    .venv/bin/python benchmarks/soak_kill.py                       # ~4-5 min uninterrupted + the soak
    .venv/bin/python benchmarks/soak_kill.py --steps 300 --kills 3 # a quick check

Both runs are `python train.py --config quickstart --workdir W --config.train.num_steps=STEPS
--config.train.checkpoint_every=CHECKPOINT_EVERY` with the same seed, a fresh prepared-corpus cache
($S2S_JAX_CORPUS_CACHE) and a compile cache ($S2S_JAX_CACHE) in the base directory, which the
uninterrupted run (first) fills. The soak launches train.py, SIGKILLs it after a delay drawn
uniformly from [--min-delay, --max-delay] seconds (seeded), reruns it, and so on --kills times; the
next launch then runs to the end. Kills land anywhere: while the corpus is generated or prepared,
while a checkpoint is restored or saved, mid-step, during evaluation.

Why checkpoint_every is lowered from the quickstart's 500: each kill redoes the steps since the
last checkpoint, and 500 steps take longer than a typical gap between kills, so the run would make
no progress. The setting is the same in both runs (it changes which steps are logged, not numbers).

Output: kills survived (every kill followed by a rerun that resumed and, at the end, the same
result), the step each launch resumed from, wall times (the soak's sums every launch, startups
included), and the comparison: the largest absolute difference over all parameters, whether they
are bit-identical, and whether metrics.jsonl is identical without its speed field (tokens_per_sec).
The soak's warning lines are counted by kind (digits as N). `--pause-while FILE` waits, before each launch, while FILE exists (time not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

SPEED_FIELDS = ("tokens_per_sec",)


def train_command(workdir: str, args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        "train.py",
        "--config",
        "quickstart",
        "--workdir",
        workdir,
        f"--config.train.num_steps={args.steps}",
        f"--config.train.checkpoint_every={args.checkpoint_every}",
    ]


def wait_for_quiet(path: str | None) -> float:
    """Seconds spent waiting while `path` exists (another job asked for the CPUs)."""
    start = time.monotonic()
    while path and os.path.exists(path):
        time.sleep(5)
    return time.monotonic() - start


def launch(workdir: str, args: argparse.Namespace, env: dict, log: str) -> subprocess.Popen:
    with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
        return subprocess.Popen(train_command(workdir, args), cwd=REPO, env=env, stdout=out, stderr=err)


def read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def resumed_from(log: str) -> int | None:
    match = re.search(r"Resumed from step (\d+) ", read(f"{log}.out"))
    return int(match.group(1)) if match else None


def fail(message: str, log: str | None = None) -> None:
    tail = read(f"{log}.err")[-3000:] if log else ""
    print(json.dumps({"error": message, "stderr_tail": tail}))
    sys.exit(1)


def uninterrupted(args: argparse.Namespace, env: dict, base: str) -> dict:
    workdir, log = os.path.join(base, "uninterrupted"), os.path.join(base, "logs", "uninterrupted")
    paused = wait_for_quiet(args.pause_while)
    start = time.monotonic()
    proc = launch(workdir, args, env, log)
    if proc.wait() != 0:
        fail(f"the uninterrupted run exited {proc.returncode}", log)
    return {"workdir": workdir, "wall_s": round(time.monotonic() - start, 1), "paused_s": round(paused, 1)}


def soak(args: argparse.Namespace, env: dict, base: str) -> dict:
    """Launch, kill after a random delay, relaunch, ... `args.kills` times; then run to the end."""
    rng = random.Random(args.seed)
    workdir = os.path.join(base, "soaked")
    kills, resumed, warnings, wall, paused = [], [], {}, 0.0, 0.0
    for launch_index in range(args.kills + 1):
        log = os.path.join(base, "logs", f"soak{launch_index:02d}")
        paused += wait_for_quiet(args.pause_while)
        delay = rng.uniform(args.min_delay, args.max_delay) if launch_index < args.kills else None
        start = time.monotonic()
        proc = launch(workdir, args, env, log)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        wall += time.monotonic() - start
        resumed.append(resumed_from(log))
        for line in read(f"{log}.err").splitlines():  # counted by kind: numbers (pids, times) as N
            if line.startswith("warning: "):
                kind = re.sub(r"\b\d+\b", "N", line)
                warnings[kind] = warnings.get(kind, 0) + 1
        if proc.returncode == -signal.SIGKILL:
            kills.append(round(delay, 1))
            continue
        if proc.returncode != 0:
            fail(f"launch {launch_index} exited {proc.returncode} (after {len(kills)} kills)", log)
        break  # finished: the run ended before every kill landed (see kills_survived)
    return {
        "workdir": workdir,
        "kills": kills,
        "resumed_from": resumed,
        "warnings": warnings,
        "wall_s": round(wall, 1),
        "paused_s": round(paused, 1),
    }


def compare(reference: str, soaked: str) -> dict:
    import jax
    import numpy as np

    from s2s_jax.training.train_log import read_metrics
    from s2s_jax.workdir import checkpoints as ckpt_lib

    a, meta_a = ckpt_lib.load_params(reference, "latest")
    b, meta_b = ckpt_lib.load_params(soaked, "latest")
    same_structure = jax.tree.structure(a) == jax.tree.structure(b)
    diffs = (
        [
            float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
        ]
        if same_structure
        else [float("inf")]
    )
    equal = same_structure and all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    def without_speed(workdir: str) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in SPEED_FIELDS} for r in read_metrics(workdir)]

    metrics_a, metrics_b = without_speed(reference), without_speed(soaked)
    return {
        "final_step": [meta_a.get("step"), meta_b.get("step")],
        "params_max_abs_diff": max(diffs),
        "params_bit_identical": bool(equal),
        "metrics_records": [len(metrics_a), len(metrics_b)],
        "metrics_identical": metrics_a == metrics_b,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000, help="train.num_steps of both runs")
    ap.add_argument("--checkpoint-every", type=int, default=100)
    ap.add_argument("--kills", type=int, default=12)
    ap.add_argument("--min-delay", type=float, default=5.0, help="seconds after a launch")
    ap.add_argument("--max-delay", type=float, default=40.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base", default=None, help="directory for workdirs, caches and logs (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the base directory")
    ap.add_argument("--pause-while", default=None, metavar="FILE")
    args = ap.parse_args()

    base = args.base or tempfile.mkdtemp(prefix="s2s-soak-")
    os.makedirs(os.path.join(base, "logs"), exist_ok=True)
    env = dict(
        os.environ,
        JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
        OPENBLAS_NUM_THREADS="1",
        S2S_JAX_CORPUS_CACHE=os.path.join(base, "corpora"),
        S2S_JAX_CACHE=os.path.join(base, "xla"),
    )
    reference = uninterrupted(args, env, base)
    print(f"uninterrupted: {reference['wall_s']} s", file=sys.stderr)
    soaked = soak(args, env, base)
    print(f"soak: {len(soaked['kills'])} kills, {soaked['wall_s']} s", file=sys.stderr)
    result = {
        "config": "quickstart",
        "steps": args.steps,
        "checkpoint_every": args.checkpoint_every,
        "seed": args.seed,
        "kill_delay_s": [args.min_delay, args.max_delay],
        "kills_requested": args.kills,
        "kills_survived": len(soaked["kills"]),
        "kill_after_s": soaked["kills"],
        "launches": len(soaked["resumed_from"]),
        "resumed_from_step": soaked["resumed_from"],
        "uninterrupted_wall_s": reference["wall_s"],
        "soak_wall_s": soaked["wall_s"],
        "paused_s": round(reference["paused_s"] + soaked["paused_s"], 1),
        "warnings": soaked["warnings"],
        **compare(reference["workdir"], soaked["workdir"]),
    }
    print(json.dumps(result))
    if not args.keep and not args.base:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
