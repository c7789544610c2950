#!/usr/bin/env python3
"""s2s-jax speed on torch_ref.py's protocol (../shared/bench/README.md): one JSON line.

    .venv/bin/python benchmarks/bench.py                       # plain model
    .venv/bin/python benchmarks/bench.py --attention           # Luong "general" attention
    .venv/bin/python benchmarks/bench.py --attention --input-feed
    .venv/bin/python benchmarks/bench.py --dtype bfloat16 --unroll 4

Same model sizes, data, optimiser, thread count, warm-up/repeat structure and metrics as
the PyTorch reference, run through the project's own code: configs/default.py ->
s2s_jax.models.seq2seq.make_model, s2s_jax.training.optimizers.make_optimizer, s2s_jax.training.loop.make_train_step for training, and
s2s_jax.decoding.search.greedy_search / batch_beam_search for decoding.

Keys (the reference's names where it has them):
  train_tok_per_s      real (non-pad) target tokens per second over full optimiser steps
  train_step_ms        wall milliseconds per step
  greedy_sent_per_s    batched greedy decoding, encoder included, EOS blocked -> exactly maxlen steps
  beam_sent_per_s      beam search (beam 5), same EOS blocking
  *_gflops_model       achieved GFLOP/s on the reference FLOP model (real tokens only)
  train_gflops_padded  the same counting every padded position
  train_gflops         = train_gflops_model medians, with train_peak_fraction = / peak_gflops
  compile_s            first train step, compile included; greedy_compile_s / beam_compile_s likewise
  peak_rss_mb          peak resident memory of the process

Timing differences from the reference, all deliberate and listed here:
* jax dispatches asynchronously; each timed repeat ends with block_until_ready on the
  train state / decoder outputs, so all its work is inside the timed interval (the
  reference instead syncs every step with loss.item()). Losses are read after timing.
* Batches are made once with numpy and put on the device before timing, as the
  reference builds its tensors once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import _common  # noqa: F401  (puts the repository on sys.path)

PAD, BOS, EOS = 0, 1, 2


def make_batch(rng, B: int, V: int, maxlen: int = 32, minlen: int = 10):
    """torch_ref.make_batch with numpy.

    Same semantics and draw order (src lengths, tgt lengths, src tokens, tgt tokens),
    but numpy's PCG64 cannot reproduce torch's Philox/MT stream bit for bit, so the
    batches have the reference's *distribution* (lengths uniform in [minlen, maxlen],
    target length counting EOS, tokens uniform in [3, V), PAD-padded to maxlen), not its
    exact tokens. The lengths (what the work depends on) average 21 either way.
    Returns (src, src_len, tgt_in, tgt_out, tgt_len) as int32 numpy arrays.
    """
    import numpy as np

    src_len = rng.integers(minlen, maxlen + 1, size=B)
    tgt_len = rng.integers(minlen, maxlen + 1, size=B)
    pos = np.arange(maxlen)[None, :]
    src = rng.integers(3, V, size=(B, maxlen))
    src = np.where(pos >= src_len[:, None], PAD, src)
    tgt = rng.integers(3, V, size=(B, maxlen))
    tgt = np.where(pos == tgt_len[:, None] - 1, EOS, tgt)
    tgt = np.where(pos >= tgt_len[:, None], PAD, tgt)
    tgt_in = np.concatenate([np.full((B, 1), BOS), tgt[:, :-1]], axis=1)
    as32 = lambda x: np.ascontiguousarray(x, dtype=np.int32)  # noqa: E731
    return as32(src), as32(src_len), as32(tgt_in), as32(tgt), as32(tgt_len)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # torch_ref.py's flags, same names and defaults
    ap.add_argument("--attention", action="store_true", help="Luong global attention (model.attention=luong_general)")
    ap.add_argument("--input-feed", action="store_true", help="Luong input feeding (model.input_feeding=True)")
    ap.add_argument(
        "--score",
        choices=["general", "dot"],
        default="general",
        help="Luong score with --attention: general -> luong_general, dot -> luong_dot",
    )
    _common.add_protocol_size_flags(ap)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--steps", type=int, default=10, help="training steps per timed repeat")
    ap.add_argument(
        "--warmup", type=int, default=3, help="untimed training steps (the first compiles; at least 1 is run)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nbatches", type=int, default=8, help="distinct synthetic batches (cycled)")
    ap.add_argument("--decode-batches", type=int, default=4, help="greedy batches per repeat")
    ap.add_argument("--decode-warmup", type=int, default=2, help="untimed greedy batches (the first compiles)")
    ap.add_argument("--beam", type=int, default=5, help="0 = skip beam search")
    ap.add_argument("--beam-batches", type=int, default=1, help="beam batches per repeat")
    ap.add_argument(
        "--alpha",
        type=float,
        default=1.0,
        help="length-penalty exponent (ours is GNMT ((5+len)/6)^alpha, the reference's "
        "len^alpha; the search does the same work either way)",
    )
    ap.add_argument(
        "--min-len",
        type=int,
        default=None,
        help="reference semantics: EOS may first appear as token number min_len "
        "(default maxlen, so every run decodes exactly maxlen steps; 0 = no blocking)",
    )
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="after the timed repeats, trace 2 training steps with jax.profiler into DIR and add "
        "the ops that hold the time (profile_top_ops) to the JSON",
    )
    ap.add_argument("--threads", type=int, default=2, help="CPUs this process may use (affinity); 0 = all")
    ap.add_argument("--seed", type=int, default=1234)
    # ours
    ap.add_argument("--dtype", default="float32", help="compute dtype: a name in s2s_jax.models.seq2seq.DTYPES")
    ap.add_argument("--unroll", type=int, default=1, help="nn.scan unroll of the LSTM recurrences")
    ap.add_argument(
        "--recurrence",
        default="auto",
        choices=("auto", "scan", "fused"),
        help="model.recurrence: the fused CPU kernel, nn.scan, or auto (fused on one CPU device where built)",
    )
    ap.add_argument(
        "--no-skip-padding",
        dest="skip_padding",
        action="store_false",
        help="run the recurrences over every padded step (model.skip_padding=False)",
    )
    ap.add_argument(
        "--peak-gflops",
        type=float,
        default=None,
        help="matmul peak for the *_peak_fraction keys (default: measure a jitted float32 "
        "2048^3 matmul in this process for ~1 s; 0 = skip)",
    )
    args = ap.parse_args(argv)
    if args.min_len is None:
        args.min_len = args.maxlen
    return args


def main(argv=None):
    args = parse_args(argv)
    threads_info = _common.limit_threads(args.threads)

    import functools

    import jax
    import numpy as np

    from s2s_jax.decoding import search
    from s2s_jax.models import time_segments
    from s2s_jax.models.seq2seq import Seq2Seq
    from s2s_jax.training import loop

    attention = ("luong_general" if args.score == "general" else "luong_dot") if args.attention else "none"
    if args.input_feed and not args.attention:
        sys.exit("--input-feed needs --attention (as in torch_ref.py, where it is ignored without it)")
    _, model, optimizer = _common.build_model(
        vocab=args.vocab,
        emb=args.emb,
        hidden=args.hidden,
        layers=args.layers,
        dropout=args.dropout,
        attention=attention,
        input_feeding=args.input_feed,
        unroll=args.unroll,
        dtype=args.dtype,
        recurrence=args.recurrence,
    )
    # the fused recurrences skip each row's padding themselves: no time-segment profiles (as train.py)
    args.skip_padding = args.skip_padding and not model.config.fused
    train_step_flops, greedy_flops, beam_flops, flop_source = _common.load_flop_model()
    fkw = dict(
        E=args.emb,
        H=args.hidden,
        V=args.vocab,
        layers=args.layers,
        attention=args.attention,
        input_feed=args.input_feed,
        score=args.score,
        padded_len=args.maxlen,
    )

    res = {"impl": "s2s_jax"}
    res.update(_common.environment(threads_info))
    res["config"] = {k: v for k, v in vars(args).items()}
    res["model_config"] = _common.model_summary(model)
    res["flop_model"] = flop_source

    peak = args.peak_gflops
    if peak is None:
        peak = _common.measure_matmul_peak()
        res["peak_gflops_source"] = "measured: jitted float32 2048^3 matmul, median of 3 x 0.3 s, this process"
    else:
        res["peak_gflops_source"] = "--peak-gflops"
    res["peak_gflops"] = peak

    rng = np.random.default_rng(args.seed)
    host_batches = [make_batch(rng, args.batch, args.vocab, args.maxlen) for _ in range(args.nbatches)]
    batches = [
        {"src": jax.device_put(s), "tgt_in": jax.device_put(ti), "tgt_out": jax.device_put(to)}
        for s, _, ti, to, _ in host_batches
    ]
    # each batch's (source, decoder input) time-segment profiles, as train.py computes them (None = padded
    # recurrences), and the source's alone for decoding, as decode.py computes it
    segments = [
        time_segments.for_batch({"src": s, "tgt_in": ti}) if args.skip_padding else None
        for s, _, ti, _, _ in host_batches
    ]
    src_segments = [time_segments.for_tokens(s) if args.skip_padding else None for s, *_ in host_batches]
    res["segment_profiles"] = sorted({repr(p) for p in segments})
    src_lens = [b[1].tolist() for b in host_batches]
    tgt_lens = [b[4].tolist() for b in host_batches]
    ntoks = [int(b[4].sum()) for b in host_batches]

    t0 = time.perf_counter()
    state = loop.init_train_state(model, optimizer, args.seed)
    jax.block_until_ready(state)
    res["init_s"] = round(time.perf_counter() - t0, 3)
    res["params"] = int(sum(x.size for x in jax.tree.leaves(state["params"])))
    train_step = loop.make_train_step(model, optimizer)
    base_key = jax.random.key(args.seed)

    # ---- training
    i = 0
    metrics = []
    for w in range(max(args.warmup, 1)):  # at least one: the compile is never timed
        t0 = time.perf_counter()
        state, m = train_step(state, batches[i % len(batches)], base_key, segments=segments[i % len(batches)])
        if w == 0:
            jax.block_until_ready((state, m))
            res["compile_s"] = round(time.perf_counter() - t0, 3)
        metrics.append(m)
        i += 1
    compiled = {segments[k % len(batches)] for k in range(i)}
    for k, profile in enumerate(segments):  # every other profile compiles before the timing too
        if profile not in compiled:
            state, m = train_step(state, batches[k], base_key, segments=profile)
            metrics.append(m)
            compiled.add(profile)
    jax.block_until_ready(state)
    tps, step_ms, gf_model, gf_padded = [], [], [], []
    for _ in range(args.repeats):
        ntok = fm = fp = 0
        t0 = time.perf_counter()
        for _ in range(args.steps):
            k = i % len(batches)
            state, m = train_step(state, batches[k], base_key, segments=segments[k])
            metrics.append(m)
            ntok += ntoks[k]
            i += 1
        jax.block_until_ready(state)
        dt = time.perf_counter() - t0
        for k in range(i - args.steps, i):  # FLOP bookkeeping outside the timed interval
            fm += train_step_flops(src_lens[k % len(batches)], tgt_lens[k % len(batches)], **fkw)
            fp += train_step_flops(src_lens[k % len(batches)], tgt_lens[k % len(batches)], padded=True, **fkw)
        tps.append(ntok / dt)
        step_ms.append(1000 * dt / args.steps)
        gf_model.append(fm / dt / 1e9)
        gf_padded.append(fp / dt / 1e9)
    host = jax.device_get(metrics)
    losses = [float(m["loss_sum"]) / max(float(m["tokens"]), 1.0) for m in host]
    res["train_tok_per_s"] = _common.summarize(tps)
    res["train_step_ms"] = _common.summarize(step_ms)
    res["train_loss_first_last"] = [round(losses[0], 4), round(losses[-1], 4)]
    res["train_nonfinite_steps"] = int(sum(int(m["nonfinite"]) for m in host))
    res["train_gflops_model"] = _common.summarize(gf_model)
    res["train_gflops_padded"] = _common.summarize(gf_padded)
    res["train_gflops"] = res["train_gflops_model"]["median"]
    if peak:
        res["train_peak_fraction"] = round(res["train_gflops"] / peak, 4)
        res["train_peak_fraction_padded"] = round(res["train_gflops_padded"]["median"] / peak, 4)

    if args.profile:

        def two_steps():
            nonlocal state
            for k in range(2):
                state, _ = train_step(state, batches[k], base_key, segments=segments[k])
            jax.block_until_ready(state)

        res["profile_top_ops"] = _common.profile_top_ops(two_steps, args.profile)

    if not args.skip_decode:
        params = state["params"]
        # Reference: EOS blocked while t + 1 < min_len (t from 0), i.e. EOS may be token
        # number min_len. Ours forbids EOS among the first `min_length` tokens, so the
        # same rule is min_length = min_len - 1. Either way, with min_len = maxlen every
        # search runs exactly maxlen steps. (The reference also never emits PAD/BOS; our
        # search does not mask them, which does not change the work done.)
        min_length = max(args.min_len - 1, 0)

        def encode_and_step(params, src, segments):
            memory, dec_state = model.apply({"params": params}, src, segments=segments, method=Seq2Seq.encode)
            step_fn = functools.partial(model.apply, {"params": params}, method=Seq2Seq.decode_step)
            return step_fn, memory, dec_state

        @functools.partial(jax.jit, static_argnames="segments")
        def greedy(params, src, segments=None):
            step_fn, memory, dec_state = encode_and_step(params, src, segments)
            return search.greedy_search(step_fn, memory, dec_state, max_steps=args.maxlen, min_length=min_length)

        @functools.partial(jax.jit, static_argnames="segments")
        def beam(params, src, segments=None):
            step_fn, memory, dec_state = encode_and_step(params, src, segments)
            _, _, lengths = search.batch_beam_search(
                step_fn,
                memory,
                dec_state,
                beam_size=args.beam,
                max_steps=args.maxlen,
                alpha=args.alpha,
                nbest=1,
                min_length=min_length,
            )
            return lengths[:, 0]

        def warm_profiles(fn, compiled: set) -> None:
            """Runs `fn` once, untimed, on a batch of each profile not compiled yet."""
            for k, profile in enumerate(src_segments):
                if profile not in compiled:
                    jax.block_until_ready(fn(params, batches[k]["src"], profile))
                    compiled.add(profile)

        # ---- greedy
        j = 0
        for w in range(max(args.decode_warmup, 1)):
            t0 = time.perf_counter()
            jax.block_until_ready(greedy(params, batches[w % len(batches)]["src"], src_segments[w % len(batches)]))
            if w == 0:
                res["greedy_compile_s"] = round(time.perf_counter() - t0, 3)
        warm_profiles(greedy, {src_segments[w % len(batches)] for w in range(max(args.decode_warmup, 1))})
        sps, gfl, steps_run = [], [], []
        for _ in range(args.repeats):
            nsent, outs = 0, []
            t0 = time.perf_counter()
            for _ in range(args.decode_batches):
                k = j % len(batches)
                outs.append((k, greedy(params, batches[k]["src"], src_segments[k])[1]))
                nsent += args.batch
                j += 1
            jax.block_until_ready([o for _, o in outs])
            dt = time.perf_counter() - t0
            fl = 0
            for k, lengths in outs:
                steps = int(np.max(np.asarray(lengths)))  # the loop runs until the longest row ends
                steps_run.append(steps)
                fl += greedy_flops(src_lens[k], steps, **fkw)
            sps.append(nsent / dt)
            gfl.append(fl / dt / 1e9)
        res["greedy_sent_per_s"] = _common.summarize(sps)
        res["greedy_steps_run"] = sorted(set(steps_run))
        res["greedy_gflops_model"] = _common.summarize(gfl)

        # ---- beam
        if args.beam > 0:
            t0 = time.perf_counter()
            jax.block_until_ready(beam(params, batches[0]["src"], src_segments[0]))
            res["beam_compile_s"] = round(time.perf_counter() - t0, 3)
            warm_profiles(beam, {src_segments[0]})
            sps, gfl, steps_run = [], [], []
            for _ in range(args.repeats):
                nsent, outs = 0, []
                t0 = time.perf_counter()
                for _ in range(args.beam_batches):
                    k = j % len(batches)
                    outs.append((k, beam(params, batches[k]["src"], src_segments[k])))
                    nsent += args.batch
                    j += 1
                jax.block_until_ready([o for _, o in outs])
                dt = time.perf_counter() - t0
                fl = 0
                for k, lengths in outs:
                    # Longest best hypothesis: equals the steps run when EOS is blocked to maxlen.
                    steps = int(np.max(np.asarray(lengths)))
                    steps_run.append(steps)
                    fl += beam_flops(src_lens[k], steps, args.beam, **fkw)
                sps.append(nsent / dt)
                gfl.append(fl / dt / 1e9)
            res["beam_sent_per_s"] = _common.summarize(sps)
            res["beam_steps_run"] = sorted(set(steps_run))
            res["beam_gflops_model"] = _common.summarize(gfl)

    res["peak_rss_mb"] = _common.peak_rss_mb()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
