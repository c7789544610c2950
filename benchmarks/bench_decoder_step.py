#!/usr/bin/env python3
"""One decoder time step's recurrence, XLA against the fused kernel called for one step: one JSON object.

    .venv/bin/python benchmarks/bench_decoder_step.py                       # LSTM and GRU, H=512
    .venv/bin/python benchmarks/bench_decoder_step.py --rows 1,5,128,640 --rounds 7

During search every decoder step is a single time step, which runs in XLA (`h @ W_hh`, then the gate
update), never in the fused kernel: the kernel's time loop buys nothing at T = 1 and it packs W_hh
afresh on every call. This measures whether a single-step kernel would pay before one is written
(issue 29): the XLA step exactly as the model runs it (`lstm._Recurrence` / `gru._Recurrence` through
flax), against `kernels.recurrence.lstm` / `gru` over a length-1 sequence (W_hh packed inside the
call, as a single-step kernel without pre-packed weights would). Rows: 1 (greedy, batch 1), 5 (beam
5, batch 1), 128 (greedy at the protocol's batch), 640 (beam 5 at batch 128). Each round times
`--calls` jitted calls of each side in turn, in this one process; the JSON has per-rows medians,
min, max and each round's figure, in microseconds per step (`_common.summarize`), and their ratio
(kernel / XLA, `_rounds.spread` of the rounds: < 1 means the kernel is faster).
"""

from __future__ import annotations

import argparse
import json
import time

import _common
import _rounds


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--rows", default="1,5,128,640", help="comma-separated batch rows")
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=200, help="jitted calls per side per round")
    ap.add_argument("--threads", type=int, default=2, help="CPUs this process may use (affinity); 0 = all")
    return ap.parse_args(argv)


def step_functions(cell: str, rows: int, hidden: int):
    """(xla, its arguments, fused, its arguments): jitted single steps of `cell` over `rows` rows,
    each returning the new hidden state [rows, hidden], with the same random weights and state."""
    import jax
    import jax.numpy as jnp

    from s2s_jax.kernels import recurrence as kernel
    from s2s_jax.models import gru, lstm

    gates = {"lstm": 4, "gru": 3}[cell]
    keys = jax.random.split(jax.random.key(0), 4)
    x_proj = jax.random.normal(keys[0], (rows, gates * hidden), jnp.float32)
    h = jax.random.normal(keys[1], (rows, hidden), jnp.float32) * 0.5
    c = jax.random.normal(keys[2], (rows, hidden), jnp.float32) * 0.5
    ones = jnp.ones((rows,), jnp.int32)
    if cell == "lstm":
        module = lstm._Recurrence(hidden)
        params = module.init(keys[3], (c, h), (x_proj, None))
        xla = jax.jit(lambda p, x, h, c: module.apply(p, (c, h), (x, None))[1])
        fused = jax.jit(lambda w, x, h, c: kernel.lstm(x[:, None], w, h, c, ones)[0][:, 0])
        return xla, (params, x_proj, h, c), fused, (params["params"]["kernel"], x_proj, h, c)
    module = gru._Recurrence(hidden)
    params = module.init(keys[3], h, (x_proj, None))
    xla = jax.jit(lambda p, x, h: module.apply(p, h, (x, None))[1])
    fused = jax.jit(lambda w, b, x, h: kernel.gru(x[:, None], w, b, h, ones)[0][:, 0])
    return xla, (params, x_proj, h), fused, (params["params"]["kernel"], params["params"]["bias_n"], x_proj, h)


def main(argv=None) -> None:
    args = parse_args(argv)
    threads = _common.limit_threads(args.threads)
    import jax.numpy as jnp

    from s2s_jax.kernels import recurrence as kernel

    if not kernel.available():
        raise SystemExit(f"error: the fused recurrence kernel is not built here: {kernel.unavailable_reason()}")
    H = args.hidden
    results = []
    for cell in args.cells.split(","):
        for rows in [int(r) for r in args.rows.split(",")]:
            xla, xla_args, fused, fused_args = step_functions(cell, rows, H)
            want, got = xla(*xla_args), fused(*fused_args)
            max_diff = float(jnp.max(jnp.abs(want - got)))
            times = {"xla": [], "fused": []}
            for _ in range(args.rounds):
                for name, fn, a in (("xla", xla, xla_args), ("fused", fused, fused_args)):
                    fn(*a).block_until_ready()
                    t0 = time.perf_counter()
                    for _ in range(args.calls):
                        out = fn(*a)
                    out.block_until_ready()
                    times[name].append(1e6 * (time.perf_counter() - t0) / args.calls)
            ratios = [_rounds.ratio(f, x) for f, x in zip(times["fused"], times["xla"])]
            results.append(
                {
                    "cell": cell,
                    "rows": rows,
                    "us_per_step": {name: _common.summarize(v) for name, v in times.items()},
                    "fused_over_xla": _rounds.spread(ratios),
                    "max_abs_diff": max_diff,
                }
            )
    out = {"hidden": H, "rounds": args.rounds, "calls": args.calls, "isa": kernel.isa(), "results": results}
    out.update(_common.environment(threads))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
