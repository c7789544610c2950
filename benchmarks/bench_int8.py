"""The int8 matmul kernel (s2s_jax/kernels/int8.py) against XLA's float32 dot, per shape and ISA.

    python benchmarks/bench_int8.py [--repeats 300]

Prints one JSON object: for each shape [M, K] x [K, N] the median microseconds of one jitted
call (after warm-up) of XLA's float32 jnp.dot, the int8 pure-JAX path (lax.dot_general on
int8) and the kernel with each instruction-set variant this CPU has (each in a fresh process:
S2S_JAX_KERNEL_ISA is read once per process). The decoder's serving shapes: one row
(batch-1 greedy), 5 rows (beam 5) and 64 rows; the output layer [256, 8000].
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHAPES = [(1, 512, 1536), (1, 1536, 512), (1, 256, 8000), (5, 512, 1536), (64, 512, 1536)]
ISAS = ("generic", "avx2", "avx512vnni")


def median_us(fn, args, repeats: int) -> float:
    """Median wall time of fn(*args) in microseconds, each call waited for."""
    import jax

    for _ in range(5):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e6, 1)


def measure(kinds: list[str], repeats: int) -> dict:
    """{shape: {kind: us}} in this process; kinds among "float32", "xla_int8", "kernel"."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from s2s_jax.kernels import int8

    rng = np.random.default_rng(0)
    calls = {
        "float32": jax.jit(jnp.dot),
        "xla_int8": jax.jit(lambda x, m: int8._reference(x, m)),
        "kernel": jax.jit(int8.matmul),
    }
    out = {}
    for m, k, n in SHAPES:
        x = jnp.asarray(rng.normal(size=(m, k)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(k, n)), jnp.float32)
        q = jax.block_until_ready(int8.quantize(w))
        reps = max(20, repeats // max(1, m // 8))
        out[f"{m}x{k}x{n}"] = {kind: median_us(calls[kind], (x, w if kind == "float32" else q), reps) for kind in kinds}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--only", choices=["float32+xla_int8", "kernel"], help=argparse.SUPPRESS)  # a child run
    args = parser.parse_args()
    from s2s_jax.kernels import int8

    if args.only:
        print(json.dumps({"isa": int8.isa(), "us": measure(args.only.split("+"), args.repeats)}))
        return

    result = {"isa_here": int8.isa(), "repeats": args.repeats, "us": measure(["float32", "xla_int8"], args.repeats)}
    for isa in ISAS if int8.available() else ():
        env = {**os.environ, "S2S_JAX_KERNEL_ISA": isa, "JAX_PLATFORMS": "cpu"}
        cmd = [sys.executable, __file__, "--only", "kernel", "--repeats", str(args.repeats)]
        child = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        got = json.loads(child.stdout.strip().splitlines()[-1])
        for shape, times in got["us"].items():  # a CPU without `isa` runs a narrower one: keyed by what ran
            result["us"][shape][got["isa"]] = times["kernel"]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
