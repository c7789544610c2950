#!/usr/bin/env python3
"""Decoding speed vs batch size: greedy and beam search, fixed work, one JSON object.

    .venv/bin/python benchmarks/bench_decode.py                      # batches 1, 32, 128; beam 5
    .venv/bin/python benchmarks/bench_decode.py --attention --batch-sizes 1,128

The Multi30k-sized model (emb 256, hidden 512, 2 layers, vocab 8000) with random,
untrained parameters, decoding synthetic sources (torch_ref.py's distribution: lengths
uniform in [10, 32], padded to 32) through s2s_jax.search.greedy_search and
batch_beam_search inside one jit each, exactly as s2s_jax.translator does. EOS is
forbidden for the first `--length` tokens and `--length` is also max_steps, so every
search runs exactly `--length` steps whatever the parameters: the work is fixed.

Keys: results[] = one entry per (mode, batch):
  compile_s      trace + lower + XLA compile, seconds (jit's AOT path: .lower().compile());
                 trace_lower_s is the tracing/lowering part, first_call_s adds the first run.
                 The first entry also carries one-time XLA/LLVM start-up costs.
  sent_per_s     sentences per second, {median, min, max, repeats}
  ms_per_sent    milliseconds per sentence (1000 / sent_per_s), same summary
  steps_run      decoder steps of the longest output (= --length when blocking works)
beam_vs_greedy: {batch: beam ms/sentence / greedy ms/sentence (median)} -- how many
greedy sentences one beam sentence costs (beam K does K rows of decoder work plus top-k).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import _common


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", default="1,32,128", help="comma-separated")
    ap.add_argument("--modes", default="greedy,beam", help="comma-separated subset of greedy,beam")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=1.0, help="GNMT length-penalty exponent (no effect on the work)")
    ap.add_argument("--length", type=int, default=32, help="max_steps; EOS forbidden before it, so exactly this many steps")
    ap.add_argument("--src-len", type=int, default=32, help="padded source length; real lengths uniform in [10, src-len]")
    ap.add_argument("--emb", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--attention", action="store_true", help="model.attention=luong_general")
    ap.add_argument("--input-feed", action="store_true", help="model.input_feeding=True (needs --attention)")
    ap.add_argument("--dtype", default="float32", help="compute dtype: a name in s2s_jax.model.DTYPES")
    ap.add_argument("--unroll", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per (mode, batch)")
    ap.add_argument("--min-sentences", type=int, default=128,
                    help="each repeat decodes ceil(min_sentences / batch) batches (at least 1)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls after the compiling one")
    ap.add_argument("--nbatches", type=int, default=8, help="distinct source batches per batch size (cycled)")
    ap.add_argument("--threads", type=int, default=2, help="CPUs this process may use (affinity); 0 = all")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args(argv)
    if args.input_feed and not args.attention:
        ap.error("--input-feed needs --attention")
    return args


def main(argv=None):
    args = parse_args(argv)
    threads_info = _common.limit_threads(args.threads)

    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np
    from bench import make_batch

    from s2s_jax import search
    from s2s_jax.model import Seq2Seq

    _, model, _ = _common.build_model(
        vocab=args.vocab, emb=args.emb, hidden=args.hidden, layers=args.layers,
        attention="luong_general" if args.attention else "none", input_feeding=args.input_feed,
        unroll=args.unroll, dtype=args.dtype,
    )
    dummy = jnp.ones((1, 4), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(args.seed), dummy, dummy)["params"]
    min_length = args.length  # EOS forbidden among the first `length` tokens -> exactly `length` steps

    def encode_and_step(params, src):
        memory, state = model.apply({"params": params}, src, method=Seq2Seq.encode)
        return functools.partial(model.apply, {"params": params}, method=Seq2Seq.decode_step), memory, state

    @jax.jit
    def greedy(params, src):
        step_fn, memory, state = encode_and_step(params, src)
        _, lengths = search.greedy_search(step_fn, memory, state, max_steps=args.length, min_length=min_length)
        return lengths

    @jax.jit
    def beam(params, src):
        step_fn, memory, state = encode_and_step(params, src)
        _, _, lengths = search.batch_beam_search(
            step_fn, memory, state, beam_size=args.beam, max_steps=args.length,
            alpha=args.alpha, nbest=1, min_length=min_length,
        )
        return lengths[:, 0]

    fns = {"greedy": greedy, "beam": beam}
    modes = [m for m in args.modes.split(",") if m]
    sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    res = {"impl": "s2s_jax", "benchmark": "decode"}
    res.update(_common.environment(threads_info))
    res["config"] = vars(args)
    res["model_config"] = _common.model_summary(model)
    res["params"] = int(sum(x.size for x in jax.tree.leaves(params)))
    results = []
    rng = np.random.default_rng(args.seed)
    for batch in sizes:
        srcs = [jax.device_put(make_batch(rng, batch, args.vocab, args.src_len)[0]) for _ in range(args.nbatches)]
        calls = max(1, math.ceil(args.min_sentences / batch))
        for mode in modes:
            t0 = time.perf_counter()
            lowered = fns[mode].lower(params, srcs[0])  # trace (flax + search code) and lower to HLO
            t1 = time.perf_counter()
            fn = lowered.compile()  # XLA compile; the timed loop calls this executable
            t2 = time.perf_counter()
            jax.block_until_ready(fn(params, srcs[0]))
            timing = {
                "compile_s": round(t2 - t0, 3),
                "trace_lower_s": round(t1 - t0, 3),
                "first_call_s": round(time.perf_counter() - t0, 3),
            }
            for w in range(args.warmup):
                jax.block_until_ready(fn(params, srcs[(w + 1) % len(srcs)]))
            sps, steps = [], set()
            j = 0
            for _ in range(args.repeats):
                outs = []
                t0 = time.perf_counter()
                for _ in range(calls):
                    outs.append(fn(params, srcs[j % len(srcs)]))
                    j += 1
                jax.block_until_ready(outs)
                dt = time.perf_counter() - t0
                sps.append(calls * batch / dt)
                steps.update(int(np.max(np.asarray(o))) for o in outs)
            results.append({
                "mode": mode if mode == "greedy" else f"beam{args.beam}",
                "batch": batch,
                **timing,
                "calls_per_repeat": calls,
                "sent_per_s": _common.summarize(sps),
                "ms_per_sent": _common.summarize([1000.0 / s for s in sps]),
                "steps_run": sorted(steps),
            })
    res["results"] = results
    by = {(r["mode"], r["batch"]): r for r in results}
    res["beam_vs_greedy"] = {
        str(b): round(by[(f"beam{args.beam}", b)]["ms_per_sent"]["median"] / by[("greedy", b)]["ms_per_sent"]["median"], 3)
        for b in sizes
        if (f"beam{args.beam}", b) in by and ("greedy", b) in by
    }
    res["peak_rss_mb"] = _common.peak_rss_mb()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
