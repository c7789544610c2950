#!/usr/bin/env python3
"""Decoding speed vs batch size: greedy and beam search, one JSON object.

    .venv/bin/python benchmarks/bench_decode.py                      # batches 1, 32, 128; beam 5
    .venv/bin/python benchmarks/bench_decode.py --attention --batch-sizes 1,128
    .venv/bin/python benchmarks/bench_decode.py --workdir runs/m30k_att \\
        --input ../shared/data/multi30k/test_2016_flickr.de --batch-sizes 32,128 [--no-compact]
    .venv/bin/python benchmarks/bench_decode.py --workdir runs/m30k_att \\
        --input ../shared/data/multi30k/test_2016_flickr.de --batch-sizes 32,128 --rounds 5

Both modes time the path decode.py runs by default: the encoder skips each batch's padded
steps (`model.skip_padding`; `--no-skip-padding` runs them all) and greedy and beam search
compact their rows once half have finished (`--no-compact`: the plain loop). The JSON's
`path` key says which path was timed.

Synthetic (the default): the Multi30k-sized model (emb 256, hidden 512, 2 layers, vocab
8000) with random, untrained parameters, decoding synthetic sources (torch_ref.py's
distribution: lengths uniform in [10, 32], padded to 32) through s2s_jax.decoding.search.greedy_search
and batch_beam_search inside one jit each. EOS is forbidden for the first `--length` tokens
and `--length` is also max_steps, so every search runs exactly `--length` steps whatever the
parameters: the work is fixed, and compaction never triggers (no row finishes early).

Real sentences (`--workdir W --input FILE`): the workdir's trained model ("best" checkpoint)
decodes the file's lines through `Inference.run` (decode.py's batching, length caps and
search; the workdir's decode.alpha unless `--alpha`), so rows finish when the model ends
them and compaction shows. Each (mode, batch) pass compiles its shapes on the first pass.

Keys: results[] = one entry per (mode, batch):
  compile_s      synthetic: trace + lower + XLA compile, seconds (jit's AOT path: .lower().compile());
                 trace_lower_s is the tracing/lowering part, first_call_s adds the first run.
                 The first entry also carries one-time XLA/LLVM start-up costs.
  first_pass_s   real sentences: the first pass over the input (every batch shape compiled, then decoded)
  sent_per_s     sentences per second, {median, min, max, repeats}
  ms_per_sent    milliseconds per sentence (1000 / sent_per_s), same summary
  steps_run      synthetic: decoder steps of the longest output (= --length when blocking works)
  outputs_sha256 real sentences: a digest of every output's tokens (equal with and without compaction)
beam_vs_greedy: {batch: beam ms/sentence / greedy ms/sentence (median)} -- how many
greedy sentences one beam sentence costs (beam K does K rows of decoder work plus top-k).

`--rounds N` measures what compaction gains: N rounds, each one fresh process of this script with
the other flags as given (compaction on) and one with `--no-compact`, their order alternating; it
prints one JSON object instead: per round and (mode, batch) the sent/s ratio compact / plain and
whether the outputs were identical, then their median and range (`summary`); a markdown table on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import sys
import time

import _common
import _rounds


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", default="1,32,128", help="comma-separated")
    ap.add_argument("--modes", default="greedy,beam", help="comma-separated subset of greedy,beam")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="GNMT length-penalty exponent (synthetic: 1.0, no effect on the work; real: decode.alpha)",
    )
    ap.add_argument(
        "--no-compact",
        dest="compact",
        action="store_false",
        help="greedy and beam search run every row to the end (search.py's compact=False)",
    )
    ap.add_argument(
        "--no-skip-padding",
        dest="skip_padding",
        action="store_false",
        help="the encoder runs every padded step (model.skip_padding=False)",
    )
    ap.add_argument("--workdir", help="decode real sentences with this trained workdir (needs --input)")
    ap.add_argument("--input", help="real mode: source sentences, one a line")
    ap.add_argument("--max-sentences", type=int, default=0, help="real mode: the first N lines only (0 = all)")
    ap.add_argument(
        "--length", type=int, default=32, help="max_steps; EOS forbidden before it, so exactly this many steps"
    )
    ap.add_argument(
        "--src-len", type=int, default=32, help="padded source length; real lengths uniform in [10, src-len]"
    )
    ap.add_argument("--emb", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--attention", action="store_true", help="model.attention=luong_general")
    ap.add_argument("--input-feed", action="store_true", help="model.input_feeding=True (needs --attention)")
    ap.add_argument("--dtype", default="float32", help="compute dtype: a name in s2s_jax.models.seq2seq.DTYPES")
    ap.add_argument("--unroll", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per (mode, batch)")
    ap.add_argument(
        "--min-sentences",
        type=int,
        default=128,
        help="synthetic: each repeat decodes ceil(min_sentences / batch) batches (at least 1)",
    )
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls (synthetic) or passes (real) after the first")
    ap.add_argument(
        "--nbatches", type=int, default=8, help="synthetic: distinct source batches per batch size (cycled)"
    )
    ap.add_argument("--threads", type=int, default=2, help="CPUs this process may use (affinity); 0 = all")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="compaction on vs off: N interleaved rounds of fresh processes with and without --no-compact, "
        "reporting the sent/s ratios (0 = one run of the path the flags choose)",
    )
    args = ap.parse_args(argv)
    if args.input_feed and not args.attention:
        ap.error("--input-feed needs --attention")
    if args.rounds < 0 or (args.rounds and not args.compact):
        ap.error("--rounds N (N >= 1) runs both paths itself: drop --no-compact")
    if bool(args.workdir) != bool(args.input):
        ap.error("--workdir and --input go together (real sentences)")
    return args


def synthetic(args, res: dict) -> list[dict]:
    """The fixed-work protocol: random parameters, EOS blocked, every search runs --length steps."""
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np
    from bench import make_batch

    from s2s_jax.decoding import search
    from s2s_jax.models import time_segments
    from s2s_jax.models.seq2seq import Seq2Seq

    _, model, _ = _common.build_model(
        vocab=args.vocab,
        emb=args.emb,
        hidden=args.hidden,
        layers=args.layers,
        attention="luong_general" if args.attention else "none",
        input_feeding=args.input_feed,
        unroll=args.unroll,
        dtype=args.dtype,
    )
    dummy = jnp.ones((1, 4), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(args.seed), dummy, dummy)["params"]
    res["model_config"] = _common.model_summary(model)
    res["params"] = int(sum(x.size for x in jax.tree.leaves(params)))
    min_length = args.length  # EOS forbidden among the first `length` tokens -> exactly `length` steps
    alpha = 1.0 if args.alpha is None else args.alpha

    def encode_and_step(params, src, segments):
        memory, state = model.apply({"params": params}, src, segments=segments, method=Seq2Seq.encode)
        return functools.partial(model.apply, {"params": params}, method=Seq2Seq.decode_step), memory, state

    @functools.partial(jax.jit, static_argnames="segments")
    def greedy(params, src, segments=None):
        step_fn, memory, state = encode_and_step(params, src, segments)
        _, lengths = search.greedy_search(
            step_fn, memory, state, max_steps=args.length, min_length=min_length, compact=args.compact
        )
        return lengths

    @functools.partial(jax.jit, static_argnames="segments")
    def beam(params, src, segments=None):
        step_fn, memory, state = encode_and_step(params, src, segments)
        _, _, lengths = search.batch_beam_search(
            step_fn,
            memory,
            state,
            beam_size=args.beam,
            max_steps=args.length,
            alpha=alpha,
            nbest=1,
            min_length=min_length,
            compact=args.compact,
        )
        return lengths[:, 0]

    fns = {"greedy": greedy, "beam": beam}
    results = []
    rng = np.random.default_rng(args.seed)
    for batch in _sizes(args):
        host = [make_batch(rng, batch, args.vocab, args.src_len)[0] for _ in range(args.nbatches)]
        srcs = [jax.device_put(src) for src in host]
        profiles = [time_segments.for_tokens(src) if args.skip_padding else None for src in host]
        calls = max(1, math.ceil(args.min_sentences / batch))
        for mode in _modes(args):
            results.append(
                {
                    "mode": _mode_name(args, mode),
                    "batch": batch,
                    "calls_per_repeat": calls,
                    **_time_synthetic(args, fns[mode], params, srcs, profiles, calls),
                }
            )
    return results


def _time_synthetic(args, fn, params, srcs, profiles, calls: int) -> dict:
    """Compile (AOT) for the first batch's profile, then for each other profile untimed; warm up; the timed
    repeats call the compiled executables."""
    import jax
    import numpy as np

    t0 = time.perf_counter()
    lowered = fn.lower(params, srcs[0], segments=profiles[0])  # trace (flax + search code) and lower to HLO
    t1 = time.perf_counter()
    executables = {profiles[0]: lowered.compile()}  # XLA compile; the timed loop calls these executables
    t2 = time.perf_counter()
    jax.block_until_ready(executables[profiles[0]](params, srcs[0]))
    timing = {
        "compile_s": round(t2 - t0, 3),
        "trace_lower_s": round(t1 - t0, 3),
        "first_call_s": round(time.perf_counter() - t0, 3),
    }
    for k, profile in enumerate(profiles):  # each batch's time-segment profile, compiled before the timing
        if profile not in executables:
            executables[profile] = fn.lower(params, srcs[k], segments=profile).compile()
    run = [executables[profile] for profile in profiles]
    for w in range(args.warmup):
        k = (w + 1) % len(srcs)
        jax.block_until_ready(run[k](params, srcs[k]))
    sps, steps = [], set()
    j = 0
    for _ in range(args.repeats):
        outs = []
        t0 = time.perf_counter()
        for _ in range(calls):
            k = j % len(srcs)
            outs.append(run[k](params, srcs[k]))
            j += 1
        jax.block_until_ready(outs)
        sps.append(calls * srcs[0].shape[0] / (time.perf_counter() - t0))
        steps.update(int(np.max(np.asarray(o))) for o in outs)
    return {
        **timing,
        "segment_profiles": len(executables),
        "sent_per_s": _common.summarize(sps),
        "ms_per_sent": _common.summarize([1000.0 / s for s in sps]),
        "steps_run": sorted(steps),
    }


def real(args, res: dict) -> list[dict]:
    """The workdir's trained model over the input's lines through Inference.run, decode.py's path."""
    from s2s_jax.data.text import read_lines
    from s2s_jax.decoding.inference import Inference, SearchOptions
    from s2s_jax.decoding.translator import Translator

    translator = Translator(args.workdir, "best")
    lines = read_lines(args.input)
    lines = lines[: args.max_sentences] if args.max_sentences else lines
    sources = translator.members[0].encode_lines(lines, warn=lambda message: None)
    cfg = translator.config.decode
    alpha = cfg.alpha if args.alpha is None else args.alpha
    res["model_config"] = _common.model_summary(translator.model)
    res["data"] = {"input": args.input, "sentences": sum(1 for s in sources if s), "alpha": alpha}
    searches = {"greedy": SearchOptions(), "beam": SearchOptions(beam_size=args.beam, alpha=alpha)}
    results = []
    for batch in _sizes(args):
        for mode in _modes(args):
            engine = Inference(
                translator.model, cfg, translator.max_len, skip_padding=args.skip_padding, compact=args.compact
            )
            results.append(
                {
                    "mode": _mode_name(args, mode),
                    "batch": batch,
                    **_time_real(args, engine, translator.params, sources, searches[mode], batch),
                }
            )
    return results


def _time_real(args, engine, params, sources, opts, batch: int) -> dict:
    """The first pass (compiles every shape), the untimed warm-up passes, then the timed ones."""
    t0 = time.perf_counter()
    outputs = engine.run(params, sources, opts, batch_size=batch)
    first_pass_s = round(time.perf_counter() - t0, 3)
    for _ in range(args.warmup):
        engine.run(params, sources, opts, batch_size=batch)
    sentences = sum(1 for s in sources if s)
    sps = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        engine.run(params, sources, opts, batch_size=batch)
        sps.append(sentences / (time.perf_counter() - t0))
    digest = hashlib.sha256(json.dumps([[c.tokens for c in out] for out in outputs]).encode()).hexdigest()
    return {
        "first_pass_s": first_pass_s,
        "sent_per_s": _common.summarize(sps),
        "ms_per_sent": _common.summarize([1000.0 / s for s in sps]),
        "outputs_sha256": digest,
    }


def _sizes(args) -> list[int]:
    return [int(b) for b in args.batch_sizes.split(",") if b]


def _modes(args) -> list[str]:
    return [m for m in args.modes.split(",") if m]


def _mode_name(args, mode: str) -> str:
    return mode if mode == "greedy" else f"beam{args.beam}"


def compaction_round(compact: dict, plain: dict) -> dict:
    """One round of --rounds: per (mode, batch) the sent/s medians, compact / plain, and whether the two
    processes' outputs were identical (real sentences; None for synthetic runs, which have no digest)."""
    by_key = lambda res: {f"{r['mode']}@{r['batch']}": r for r in res["results"]}  # noqa: E731
    on, off = by_key(compact), by_key(plain)
    out = {"sent_per_s": {}, "ratio": {}, "outputs_equal": {}}
    for key in [k for k in on if k in off]:
        a, b = _rounds.median_of(on[key], "sent_per_s"), _rounds.median_of(off[key], "sent_per_s")
        out["sent_per_s"][key] = {"compact": a, "plain": b}
        out["ratio"][key] = _rounds.ratio(a, b)
        digests = on[key].get("outputs_sha256"), off[key].get("outputs_sha256")
        out["outputs_equal"][key] = None if None in digests else digests[0] == digests[1]
    return out


def compaction_table(rounds: list[dict], summary: dict) -> str:
    """Markdown: the ratio compact / plain per round and (mode, batch), then median (min–max)."""
    keys = list(summary)
    lines = ["| round | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for r in rounds:
        cells = ["—" if r["ratio"].get(k) is None else f"{r['ratio'][k]:.2f}×" for k in keys]
        lines.append(f"| {r['round']} | " + " | ".join(cells) + " |")
    lines.append("| all | " + " | ".join(_rounds.format_spread(summary[k]) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def compare_compaction(args, argv: list[str]) -> dict:
    """--rounds: this script in fresh processes, compaction on and off alternating, and the ratios."""
    base = [sys.executable, __file__, *_rounds.drop_option(argv, "--rounds")]
    cmds = {"compact": base, "plain": [*base, "--no-compact"]}
    rounds = []
    for k in range(args.rounds):
        res = {n: _rounds.run_json(cmds[n], f"round {k + 1}/{args.rounds} {n}") for n in _rounds.rotated(list(cmds), k)}
        load = {n: r.get("load_before") for n, r in res.items()}
        rounds.append({"round": k + 1, **compaction_round(res["compact"], res["plain"]), "load_before": load})
    keys = [f"{_mode_name(args, m)}@{b}" for b in _sizes(args) for m in _modes(args)]
    summary = {key: _rounds.spread([r["ratio"].get(key) for r in rounds]) for key in keys}
    print(compaction_table(rounds, summary), file=sys.stderr)
    return {
        "benchmark": "decode_compaction",
        "commands": {n: shlex.join(c) for n, c in cmds.items()},
        "rounds": rounds,
        "summary": summary,
        "outputs_equal": all(v is not False for r in rounds for v in r["outputs_equal"].values()),
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.rounds:
        try:
            print(json.dumps(compare_compaction(args, argv)))
        except _rounds.RunError as e:
            sys.exit(f"error: {e}")
        return
    threads_info = _common.limit_threads(args.threads)
    res = {"impl": "s2s_jax", "benchmark": "decode"}
    res.update(_common.environment(threads_info))
    res["config"] = vars(args)
    res["path"] = {
        "sources": "real sentences, Inference.run" if args.workdir else "synthetic, EOS blocked",
        "skip_padding": args.skip_padding,
        "compact": args.compact,
    }
    results = real(args, res) if args.workdir else synthetic(args, res)
    res["results"] = results
    by = {(r["mode"], r["batch"]): r for r in results}
    res["beam_vs_greedy"] = {
        str(b): round(
            by[(f"beam{args.beam}", b)]["ms_per_sent"]["median"] / by[("greedy", b)]["ms_per_sent"]["median"], 3
        )
        for b in _sizes(args)
        if (f"beam{args.beam}", b) in by and ("greedy", b) in by
    }
    res["peak_rss_mb"] = _common.peak_rss_mb()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
