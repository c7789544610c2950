"""Training tokens/s of the same train.py command on 1 vs N devices (simulated CPU devices by default).

    python benchmarks/bench_devices.py --devices 1 8 --steps 400

Runs `train.py --config configs/quickstart.py` once per device count in a fresh process
(XLA_FLAGS=--xla_force_host_platform_device_count=N, JAX_PLATFORMS=cpu unless
--platform is given) and prints one JSON line: per device count, the median of the
`tokens_per_sec` windows in metrics.jsonl after the first `--skip` windows (those hold
the compiles), the final train loss and the wall time. Simulated CPU devices share the
machine's cores, so they measure the cost of the partitioned program and its
all-reduces, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(devices: int, steps: int, log_every: int, platform: str, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, S2S_JAX_CACHE="off", OPENBLAS_NUM_THREADS="1")
        if platform == "cpu":
            flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
            env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=flags.strip())
        cmd = [
            sys.executable,
            "train.py",
            "--config=configs/quickstart.py",
            f"--workdir={tmp}/run",
            f"--config.train.num_steps={steps}",
            f"--config.train.log_every={log_every}",
            f"--config.train.eval_every={steps}",
            f"--config.train.checkpoint_every={steps}",
            "--config.data.valid_max_pairs=64",
            *extra,
        ]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(f"train.py on {devices} devices failed:\n{proc.stderr[-3000:]}")
        with open(f"{tmp}/run/metrics.jsonl", encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        layout = next((line for line in proc.stdout.splitlines() if line.startswith("devices:")), "")
        return {"records": records, "wall_s": round(wall, 1), "layout": layout}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--log_every", type=int, default=50)
    parser.add_argument("--skip", type=int, default=2, help="first tokens/s windows left out (compiles)")
    parser.add_argument("--platform", default="cpu", help="cpu (simulated devices) or 'native' (real devices)")
    parser.add_argument("extra", nargs="*", help="more train.py flags, e.g. --config.train.batch_size=128")
    args = parser.parse_args()
    result = {"config": "configs/quickstart.py", "steps": args.steps, "runs": {}}
    for n in args.devices:
        print(f"train.py on {n} device(s) ...", file=sys.stderr, flush=True)
        out = run(n, args.steps, args.log_every, args.platform, args.extra)
        speeds = [r["tokens_per_sec"] for r in out["records"] if "tokens_per_sec" in r][args.skip :]
        losses = [r["train_loss"] for r in out["records"] if "train_loss" in r]
        result["runs"][str(n)] = {
            "tokens_per_sec_median": round(statistics.median(speeds)),
            "tokens_per_sec_windows": [round(s) for s in speeds],
            "final_train_loss": round(losses[-1], 4),
            "wall_s": out["wall_s"],
            "layout": out["layout"],
        }
    base = result["runs"][str(args.devices[0])]["tokens_per_sec_median"]
    for run_result in result["runs"].values():
        run_result["relative_to_first"] = round(run_result["tokens_per_sec_median"] / base, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
