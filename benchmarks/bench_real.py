#!/usr/bin/env python3
"""Training speed on a real corpus through the project's own data pipeline: one JSON line.

    .venv/bin/python benchmarks/bench_real.py \
        --src ../shared/data/multi30k/train.de --tgt ../shared/data/multi30k/train.en
    .venv/bin/python benchmarks/bench_real.py --src A --tgt B --epochs 1      # time a whole epoch

Pipeline (what `train.py` does, minus validation): s2s_jax.data.text.stream_parallel ->
clean_pairs (NFKC, counted empty pairs) -> a joint sentencepiece model trained by
s2s_jax.data.tokenizer.train_tokenizer in a temporary directory -> encode -> filter_by_length
(--max-len) -> s2s_jax.data.batching.BucketedBatches (2-D length buckets) ->
TrainIterator -> the jit train step of s2s_jax.training.loop, given each batch's time-segment
profile (s2s_jax.models.time_segments.for_batch) as train.py does by default (`model.skip_padding`;
`--no-skip-padding` times the padded recurrences). The JSON's `path` key says which.

Timing: one untimed step per distinct (batch shape, time-segment profile) of the timed
batches compiles everything first; then
--steps steps from the start of epoch 0 are timed (host-side batch assembly included,
as in real training), and seconds per epoch = measured seconds per step x batches per
epoch (EXTRAPOLATED; `epoch_s_extrapolated: true`). With --epochs N, N whole epochs are
timed instead and epoch_s is measured.

Keys:
  epoch_s, epoch_s_extrapolated   seconds per epoch; whether it was extrapolated
  train_tok_per_s                 real (non-pad) target tokens (EOS included) per second
  train_step_ms                   mean wall milliseconds per step
  padding_efficiency.bucketed     real tokens / array slots, src and tgt, of our batches over
                                  a whole epoch (all-PAD filler rows of part-full batches counted)
  padding_efficiency.plain        the same pairs shuffled (same seed) and cut into batches of the
                                  same size, each padded to its own longest src/tgt (last
                                  batch: its real rows only) -- a typical dynamic-shape loader
  padding_efficiency.fixed        every batch padded to the corpus's longest src/tgt (one shape)
  padding_efficiency.timed        real/slots over the batches actually timed
  distinct_shapes                 our (S, T) batch shapes; plain_distinct_shapes is how many shapes
                                  the plain loader would compile under jit
  compiled_programs               distinct (shape, time-segment profile) pairs of the timed batches
                                  = train-step compiles (= distinct_shapes with --no-skip-padding)
  train_step_cache_size           compiled variants the jitted train step holds (cross-check)
  compile_s                       per shape, the compiling steps' seconds (all its profiles); compile_s_total
  train_gflops_model              achieved GFLOP/s on peak.py's FLOP model at the real lengths
  prep_s                          seconds spent reading, training sentencepiece, encoding, bucketing
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time

import _common


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", required=True, help="source side, one sentence a line")
    ap.add_argument("--tgt", required=True, help="target side, line-aligned with --src")
    ap.add_argument("--max-pairs", type=int, default=0, help="use only the first N pairs (0 = all)")
    ap.add_argument("--lowercase", action="store_true")
    ap.add_argument("--vocab-size", type=int, default=8000, help="joint sentencepiece vocabulary")
    ap.add_argument("--spm-model-type", default="unigram")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--num-buckets", type=int, default=8)
    ap.add_argument("--pad-multiple", type=int, default=2, help="configs/default.py's data.pad_multiple")
    ap.add_argument("--max-len", type=int, default=64, help="pairs with a side longer than this are dropped")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, default=50, help="timed steps (epoch time extrapolated)")
    g.add_argument("--epochs", type=int, default=0, help="time this many whole epochs instead")
    ap.add_argument("--emb", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.0, help="0 as in the reference protocol (multi30k.py uses 0.3)")
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--attention", action="store_true", help="model.attention=luong_general")
    ap.add_argument("--input-feed", action="store_true", help="model.input_feeding=True (needs --attention)")
    ap.add_argument("--dtype", default="float32", help="compute dtype: a name in s2s_jax.models.seq2seq.DTYPES")
    ap.add_argument("--unroll", type=int, default=1)
    ap.add_argument(
        "--no-skip-padding",
        dest="skip_padding",
        action="store_false",
        help="run the recurrences over every padded step (model.skip_padding=False)",
    )
    ap.add_argument("--threads", type=int, default=2, help="CPUs this process may use (affinity); 0 = all")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.input_feed and not args.attention:
        ap.error("--input-feed needs --attention")
    return args


def _plain_efficiency(src_lens, tgt_lens, batch: int, seed: int) -> dict:
    """Shuffled fixed-size batches, each padded to its own longest row (lengths incl. EOS/BOS)."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(src_lens))
    s, t = np.asarray(src_lens)[order], np.asarray(tgt_lens)[order]
    slots_s = slots_t = 0
    shapes = set()
    for i in range(0, len(order), batch):
        bs, bt = s[i : i + batch], t[i : i + batch]
        slots_s += len(bs) * int(bs.max())
        slots_t += len(bt) * int(bt.max())
        shapes.add((int(bs.max()), int(bt.max())))
    return {
        "src": round(float(s.sum()) / slots_s, 4),
        "tgt": round(float(t.sum()) / slots_t, 4),
        "distinct_shapes_unpadded": len(shapes),
    }


def main(argv=None):
    args = parse_args(argv)
    threads_info = _common.limit_threads(args.threads)

    import jax
    import numpy as np

    from s2s_jax.data import batching
    from s2s_jax.data import text as text_lib
    from s2s_jax.data.tokenizer import PAD_ID, train_tokenizer
    from s2s_jax.models import time_segments
    from s2s_jax.training import loop

    res = {"impl": "s2s_jax", "benchmark": "real"}
    res.update(_common.environment(threads_info))
    res["config"] = vars(args)
    res["path"] = {"skip_padding": args.skip_padding}
    prep = {}

    # ---- text -> ids -> buckets, the way s2s_jax.data.training_data.prepare does it
    t0 = time.perf_counter()
    pairs = list(text_lib.stream_parallel(args.src, args.tgt))
    if args.max_pairs:
        pairs = pairs[: args.max_pairs]
    pairs, stats = text_lib.clean_pairs(pairs, args.lowercase)
    prep["read_clean"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="s2s_bench_spm_") as tmp:
        t0 = time.perf_counter()
        tok = train_tokenizer(
            [s for s, _ in pairs] + [t for _, t in pairs], f"{tmp}/spm", args.vocab_size, args.spm_model_type
        )
        prep["spm_train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        src_ids = tok.tokenize([s for s, _ in pairs])
        tgt_ids = tok.tokenize([t for _, t in pairs])
        prep["encode"] = time.perf_counter() - t0
        vocab = tok.vocab_size
    t0 = time.perf_counter()
    keep = text_lib.filter_by_length(src_ids, tgt_ids, args.max_len, stats)
    src_ids, tgt_ids = [src_ids[i] for i in keep], [tgt_ids[i] for i in keep]
    batches = batching.BucketedBatches(src_ids, tgt_ids, args.batch, args.num_buckets, args.seed, args.pad_multiple)
    prep["bucketing"] = time.perf_counter() - t0
    res["prep_s"] = {k: round(v, 3) for k, v in prep.items()}
    res["data"] = {
        "filter": stats.summary(),
        "pairs": batches.num_pairs,
        "vocab_size": vocab,
        "batches_per_epoch": batches.num_batches,
    }

    src_lens = np.array([len(x) + 1 for x in src_ids])  # + EOS, as in the batches
    tgt_lens = np.array([len(x) + 1 for x in tgt_ids])  # + EOS (tgt_out) / BOS (tgt_in)
    plain = _plain_efficiency(src_lens, tgt_lens, args.batch, args.seed)
    n_batches_fixed = math.ceil(len(src_lens) / args.batch)
    res["padding_efficiency"] = {
        "bucketed": batches.padding_efficiency(),
        "plain": {"src": plain["src"], "tgt": plain["tgt"]},
        "fixed": {
            "src": round(float(src_lens.sum()) / (n_batches_fixed * args.batch * int(src_lens.max())), 4),
            "tgt": round(float(tgt_lens.sum()) / (n_batches_fixed * args.batch * int(tgt_lens.max())), 4),
        },
    }
    res["distinct_shapes"] = len(batches.shapes)
    res["shapes"] = batches.shapes
    res["plain_distinct_shapes"] = plain["distinct_shapes_unpadded"]

    # ---- model, optimiser, train step: the project's own
    _, model, optimizer = _common.build_model(
        vocab=vocab,
        emb=args.emb,
        hidden=args.hidden,
        layers=args.layers,
        dropout=args.dropout,
        attention="luong_general" if args.attention else "none",
        input_feeding=args.input_feed,
        unroll=args.unroll,
        dtype=args.dtype,
    )
    res["model_config"] = _common.model_summary(model)
    train_step_flops, _, _, flop_source = _common.load_flop_model()
    res["flop_model"] = flop_source
    fkw = dict(
        E=args.emb,
        H=args.hidden,
        V=vocab,
        layers=args.layers,
        attention=args.attention,
        input_feed=args.input_feed,
        score="general",
    )
    state = loop.init_train_state(model, optimizer, args.seed)
    train_step = loop.make_train_step(model, optimizer, label_smoothing=args.label_smoothing)
    base_key = jax.random.key(args.seed)

    def profile(batch):  # the batch's time-segment profiles, as train.py computes them (None = padded)
        return time_segments.for_batch(batch) if args.skip_padding else None

    # ---- compile every program the timed steps run first (one step per distinct shape and profile), untimed
    n_steps = args.epochs * batches.num_batches if args.epochs else args.steps
    epochs = math.ceil(n_steps / batches.num_batches)
    timed = [(epoch, bucket, rows) for epoch in range(epochs) for bucket, rows in batches.plan(epoch)][:n_steps]
    compiled, compile_s = set(), {}
    for epoch, bucket, rows in timed:
        batch = batches.make_batch(bucket, rows, epoch)
        program = (bucket, profile(batch))
        if program in compiled:
            continue
        compiled.add(program)
        t0 = time.perf_counter()
        state, m = train_step(state, batch, base_key, segments=program[1])
        jax.block_until_ready((state, m))
        shape = "%dx%d" % batches.shapes[bucket]
        compile_s[shape] = round(compile_s.get(shape, 0.0) + time.perf_counter() - t0, 3)
    res["compile_s"] = compile_s
    res["compile_s_total"] = round(sum(compile_s.values()), 3)
    res["compiled_programs"] = len(compiled)

    # ---- timed steps from the start of epoch 0
    iterator = batching.TrainIterator(batches)
    ntok = real_s = real_t = slots_s = slots_t = 0
    metrics, epoch_times, lengths = [], [], []
    t_start = t_epoch = time.perf_counter()
    for step in range(n_steps):
        batch = next(iterator)
        tgt_mask = batch["tgt_out"] != PAD_ID
        ntok += int(tgt_mask.sum())
        state, m = train_step(state, batch, base_key, segments=profile(batch))
        metrics.append(m)
        src_mask = batch["src"] != PAD_ID
        real_s += int(src_mask.sum())
        real_t += int(tgt_mask.sum())
        slots_s += src_mask.size
        slots_t += tgt_mask.size
        lengths.append((src_mask.sum(1), tgt_mask.sum(1)))  # FLOPs counted after timing
        if args.epochs and (step + 1) % batches.num_batches == 0:
            jax.block_until_ready(state)
            now = time.perf_counter()
            epoch_times.append(round(now - t_epoch, 3))
            t_epoch = now
    jax.block_until_ready(state)
    dt = time.perf_counter() - t_start
    flops = sum(train_step_flops(ls.tolist(), lt.tolist(), **fkw) for ls, lt in lengths)
    host = jax.device_get(metrics)
    losses = [float(x["loss_sum"]) / max(float(x["tokens"]), 1.0) for x in host]

    res["timed_steps"] = n_steps
    res["timed_s"] = round(dt, 3)
    res["train_step_ms"] = round(1000 * dt / n_steps, 2)
    res["train_tok_per_s"] = round(ntok / dt, 2)
    if args.epochs:
        res["epoch_s"] = round(float(np.median(epoch_times)), 3)
        res["epoch_s_all"] = epoch_times
        res["epoch_s_extrapolated"] = False
    else:
        res["epoch_s"] = round(dt / n_steps * batches.num_batches, 3)
        res["epoch_s_extrapolated"] = True
    res["padding_efficiency"]["timed"] = {"src": round(real_s / slots_s, 4), "tgt": round(real_t / slots_t, 4)}
    res["train_gflops_model"] = round(flops / dt / 1e9, 2)
    res["train_loss_first_last"] = [round(losses[0], 4), round(losses[-1], 4)]
    res["train_nonfinite_steps"] = int(sum(int(x["nonfinite"]) for x in host))
    try:
        res["train_step_cache_size"] = int(train_step._cache_size())
    except AttributeError:
        res["train_step_cache_size"] = None
    res["peak_rss_mb"] = _common.peak_rss_mb()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
