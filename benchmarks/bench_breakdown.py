"""Where a training step's time goes: per-part timings on the reference protocol's batch.

    .venv/bin/python benchmarks/bench_breakdown.py                 # plain model, B=128, lengths 10-32
    .venv/bin/python benchmarks/bench_breakdown.py --attention
    .venv/bin/python benchmarks/bench_breakdown.py --recurrence scan   # the nn.scan recurrences
    .venv/bin/python benchmarks/bench_breakdown.py --attention --cell gru --bidirectional --layers 1 \
        --batch 160 --maxlen 20                       # multi30k_tuned's model on a batch of its size

Times, each jitted on its own and run forward + backward, the parts of
`training.make_train_step` for one synthetic batch drawn as in bench.py:

* `encoder`: the embedding + recurrent encoder (gradient w.r.t. its parameters);
* `decoder`: the decoder's recurrent layers (+ attention) up to the output layer's input,
  given the encoder's outputs (gradient w.r.t. the decoder's parameters and them);
* `output_loss`: the output layer + masked cross-entropy at real target
  positions (`losses.compact_cross_entropy`);
* `optimizer`: gradient norm, clipping + Adam and the non-finite guard on all parameters;
* `train_step`: the real jitted step, for comparison with the sum of the parts;

and the float32 rate XLA reaches on each part's dominant matmul shape alone
(`matmul_gflops`), which bounds what that part can reach. One JSON line on stdout.

The recurrences run as train.py runs them by default (`--recurrence auto`: the fused CPU kernel
where it is built; `scan` or `fused` to choose): given the batch's time-segment
profiles (`model.skip_padding`, s2s_jax.models.time_segments.for_batch) they skip the padded
steps; `--no-skip-padding` times the padded recurrences. The JSON's `path` key says which.
The matmul FLOP counts (`gflops`) count every padded position either way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
from bench import make_batch  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attention", action="store_true")
    ap.add_argument("--cell", choices=["lstm", "gru"], default="lstm", help="model.cell")
    ap.add_argument("--bidirectional", action="store_true", help="model.bidirectional (the encoder)")
    _common.add_protocol_size_flags(ap)
    ap.add_argument("--recurrence", choices=["auto", "scan", "fused"], default="auto", help="model.recurrence")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per part (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument(
        "--no-skip-padding",
        dest="skip_padding",
        action="store_false",
        help="run the recurrences over every padded step (model.skip_padding=False)",
    )
    return ap.parse_args(argv)


def time_fn(fn, *args, repeats: int) -> dict:
    """Compiles with the first call, then times `repeats` calls; milliseconds."""
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t0) * 1e3)
    return _common.summarize(times)


def main(argv=None):
    args = parse_args(argv)
    threads_info = _common.limit_threads(args.threads)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from s2s_jax.models import time_segments
    from s2s_jax.models.seq2seq import Seq2Seq
    from s2s_jax.training import loop
    from s2s_jax.training.losses import compact_cross_entropy

    _, model, optimizer = _common.build_model(
        vocab=args.vocab,
        emb=args.emb,
        hidden=args.hidden,
        layers=args.layers,
        attention="luong_general" if args.attention else "none",
        recurrence=args.recurrence,
        cell=args.cell,
        bidirectional=args.bidirectional,
    )
    state = loop.init_train_state(model, optimizer, args.seed)
    params = state["params"]
    src, _, tgt_in, tgt_out, tgt_len = make_batch(np.random.default_rng(args.seed), args.batch, args.vocab, args.maxlen)
    # the batch's (source, decoder input) time-segment profiles, as train.py computes them (None = padded)
    segments = time_segments.for_batch({"src": src, "tgt_in": tgt_in}) if args.skip_padding else None
    src_segments, tgt_segments = segments or (None, None)
    src, tgt_in, tgt_out = jnp.asarray(src), jnp.asarray(tgt_in), jnp.asarray(tgt_out)
    project = loop.output_layer(model)

    def encode(p, src):
        return model.apply({"params": p}, src, segments=src_segments, method=Seq2Seq.encode)

    @jax.jit
    def encoder_part(p, src, cotangent):
        (memory, dec_state), vjp = jax.vjp(lambda p: encode(p, src), p)
        return vjp(cotangent)

    def decoder_features(p, memory, dec_state, tgt_in):
        def run(module, memory, dec_state, tgt_in):
            h, _, _ = module.decoder(tgt_in, memory, dec_state, train=False, features=True, segments=tgt_segments)
            return h

        return model.apply({"params": p}, memory, dec_state, tgt_in, method=run)

    @jax.jit
    def decoder_part(p, memory, dec_state, tgt_in, cotangent):
        h, vjp = jax.vjp(lambda p, m, s: decoder_features(p, m, s, tgt_in), p, memory, dec_state)
        return vjp(cotangent)

    @jax.jit
    def output_part(p, features, tgt_out):
        def loss(p, f):
            out = compact_cross_entropy(f, tgt_out, project(p))
            return out["loss_sum"] / out["tokens"]

        return jax.grad(loss, argnums=(0, 1))(p, features)

    @jax.jit
    def optimizer_part(opt_state, grads, p):  # as in training.make_train_step
        finite = jnp.isfinite(optax.tree.norm(grads))
        updates, new_opt_state = optimizer.update(grads, opt_state, p)
        new_p = optax.apply_updates(p, updates)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        return jax.tree.map(keep, new_p, p), jax.tree.map(keep, new_opt_state, opt_state)

    memory, dec_state = jax.jit(encode)(params, src)
    enc_cotangent = jax.tree.map(jnp.ones_like, (memory, dec_state))
    features = jax.jit(decoder_features)(params, memory, dec_state, tgt_in)
    grads = jax.tree.map(jnp.ones_like, params)
    train_step = loop.make_train_step(model, optimizer)
    batch = {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out}
    key = jax.random.key(0)

    parts = {
        "encoder": time_fn(encoder_part, params, src, enc_cotangent, repeats=args.repeats),
        "decoder": time_fn(
            decoder_part, params, memory, dec_state, tgt_in, jnp.ones_like(features), repeats=args.repeats
        ),
        "output_loss": time_fn(output_part, params, features, tgt_out, repeats=args.repeats),
        "optimizer": time_fn(optimizer_part, state["opt_state"], grads, params, repeats=args.repeats),
    }
    step_times = []
    state, metrics = train_step(state, batch, key, segments=segments)
    jax.block_until_ready(metrics)
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        state, metrics = train_step(state, batch, key, segments=segments)
        jax.block_until_ready(metrics)
        step_times.append((time.perf_counter() - t0) * 1e3)

    # Forward matmul FLOPs of each part (x3 for forward + backward), padded as executed.
    B, S, T, E, H, V, L = args.batch, args.maxlen, args.maxlen, args.emb, args.hidden, args.vocab, args.layers
    G, D = (4 if args.cell == "lstm" else 3), (2 if args.bidirectional else 1)  # gates; encoder directions
    M = D * H  # the encoder's output width (attention's memory)

    def per_token(first_input: int, later_input: int) -> int:
        return sum(2 * (first_input if layer == 0 else later_input) * G * H + 2 * H * G * H for layer in range(L))

    real_targets = int(tgt_len.sum())
    flops = {
        # Luong "general"'s keys are projected once per source position (2MH) by Seq2Seq.encode
        "encoder": 3 * B * S * (D * per_token(E, M) + (2 * M * H if args.attention else 0)),
        # Luong "general": scores + context (2 * 2SM) and the [context; h] combine (2(M+H)H) per target position
        "decoder": 3 * B * T * (per_token(E, H) + (4 * S * M + 2 * (M + H) * H if args.attention else 0)),
        # the compact loss projects whole row blocks: count the rows it projects
        "output_loss": 3 * 2 * H * V * (-(-real_targets // (B * T // 8)) * (B * T // 8)),
    }
    for name, f in flops.items():
        parts[name]["gflops"] = round(f / (parts[name]["median"] * 1e6), 1)

    res = {"impl": "s2s_jax", "benchmark": "breakdown"}
    res.update(_common.environment(threads_info))
    res["config"] = vars(args)
    res["path"] = {
        "recurrence": model.config.recurrence,
        "skip_padding": args.skip_padding,
        "segment_profiles": repr(segments),
    }
    res["parts_ms"] = parts
    res["sum_of_parts_ms"] = round(sum(p["median"] for p in parts.values()), 1)
    res["train_step_ms"] = _common.summarize(step_times)
    res["matmul_gflops"] = {
        "recurrent_step_%dx%dx%d" % (B, H, G * H): _common.measure_matmul_rate(B, H, G * H),
        "input_projection_%dx%dx%d" % (B * S, E, G * H): _common.measure_matmul_rate(B * S, E, G * H),
        "output_layer_%dx%dx%d" % (B * T // 8, H, V): _common.measure_matmul_rate(B * T // 8, H, V),
        "square_2048": _common.measure_matmul_peak(),
    }
    res["peak_rss_mb"] = _common.peak_rss_mb()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
