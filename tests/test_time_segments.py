"""Skipping padded time steps (s2s_jax/models/time_segments.py) computes what the padded recurrences compute.

Oracles: the profile bounds every row's length (property over random batches, plus hand-picked
profiles), and the segmented recurrences give the padded ones' encoder memory and state, loss,
gradients, a training step's parameters and decoded outputs, for LSTM/GRU, uni-/bidirectional,
with attention and input feeding (whose decoder runs step by step and ignores its profile).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2s_jax.models import time_segments
from s2s_jax.models.seq2seq import ModelConfig, Seq2Seq
from s2s_jax.models.time_segments import Segments, for_batch, for_lengths, for_tokens
from s2s_jax.training.loop import init_train_state, make_accumulating_train_step, make_train_step
from s2s_jax.training.losses import compact_cross_entropy
from s2s_jax.training.optimizers import make_optimizer

V = 40


def test_profile_of_hand_picked_lengths():
    # 8 rows sorted 32 30 28 21 20 17 9 3: the shortest quarter (9, 3) ends by 12, the next (20, 17)
    # by 20, the next (28, 21) by 28, the longest (32, 30) runs to 32.
    assert for_lengths(np.array([3, 21, 32, 9, 20, 28, 17, 30]), 32) == Segments((8, 6, 4, 2), (12, 20, 28, 32))
    # equal bounds merge: the two shortest quarters both end by 8
    assert for_lengths(np.array([8, 8, 8, 8, 30, 30, 31, 31]), 32) == Segments((8, 4), (8, 32))
    # rows all shorter than the width: one segment that stops early
    assert for_lengths(np.array([5, 6, 7, 6]), 16) == Segments((4,), (8,))
    # nothing to skip: the plain padded scan
    assert for_lengths(np.array([16, 13, 14, 15]), 16) is None
    # filler rows (length 0) do not count towards the decision (a bucket's last batch is not worth a
    # compile of its own), but where the real rows earn a profile the filler rows are skipped too
    assert for_lengths(np.array([0, 0, 0, 12]), 12) is None
    assert for_lengths(np.array([0, 6, 0, 5]), 16) == Segments((2,), (8,))
    # too little to skip: 1 step in 16 of the real rows' steps
    assert for_lengths(np.array([16, 15, 16, 16]), 16, grid=1) is None
    assert for_tokens(np.array([[4, 5, 2, 0], [6, 2, 0, 0]])) is None  # width 4 is one grid step


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=70), st.integers(0, 9))
def test_every_row_fits_its_profile(lengths, extra_width):
    lengths = np.array(lengths)
    width = int(lengths.max()) + extra_width
    profile = for_lengths(lengths, width)
    ordered = np.sort(lengths)[::-1]
    if profile is None:
        return
    assert list(profile.rows) == sorted(profile.rows, reverse=True) and profile.rows[0] <= len(lengths)
    assert list(profile.ends) == sorted(set(profile.ends)) and profile.ends[-1] <= width
    for i, length in enumerate(ordered):
        running = [k for k, rows in enumerate(profile.rows) if rows > i]  # the segments that run row i
        assert length <= (profile.ends[running[-1]] if running else 0)


def make(**overrides):
    cfg = ModelConfig(src_vocab_size=V, tgt_vocab_size=V, emb_dim=6, hidden_size=8, num_layers=2, dropout=0.0)
    model = Seq2Seq(ModelConfig(**{**cfg.__dict__, **overrides}))
    params = jax.jit(model.init)(jax.random.key(0), jnp.ones((1, 3), jnp.int32), jnp.ones((1, 3), jnp.int32))["params"]
    return model, params


def batch(rows=9, width=17, seed=3):
    """Random pairs, lengths 1..width (EOS included), in no order; one all-PAD filler row."""
    rng = np.random.default_rng(seed)
    src = np.zeros((rows, width), np.int32)
    tgt_in = np.zeros((rows, 13), np.int32)
    tgt_out = np.zeros((rows, 13), np.int32)
    for r in range(rows - 1):
        n = int(rng.integers(1, width + 1))
        src[r, : n - 1] = rng.integers(3, V, n - 1)
        src[r, n - 1] = 2
        m = int(rng.integers(1, 14))
        tokens = rng.integers(3, V, m - 1)
        tgt_in[r, :m] = np.concatenate([[1], tokens])
        tgt_out[r, :m] = np.concatenate([tokens, [2]])
    return {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out}


# Slow tier: each compiles a gradient through several scans.
VARIANTS = [
    {},
    {"attention": "luong_general", "bidirectional": True},
    {"cell": "gru", "bidirectional": True, "num_layers": 1},
    {"attention": "bahdanau", "input_feeding": True, "feed_context": True, "num_layers": 1},
]


def test_a_decoder_that_runs_step_by_step_gets_no_target_profile():
    """Scheduled sampling and input feeding read no decoder-input profile: none is made (each one compiles)."""
    b = batch()
    both, source_only = for_batch(b), for_batch(b, target=False)
    assert both[1] is not None and source_only == (both[0], None)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", VARIANTS)
def test_segmented_recurrences_equal_the_padded_ones(overrides):
    model, params = make(**overrides)
    b = batch()
    profile = for_batch(b)
    assert all(p is not None and len(p.rows) > 2 for p in profile)  # both sides run several segments
    encode = jax.jit(
        lambda p, src, segments: model.apply({"params": p}, src, segments=segments, method=Seq2Seq.encode),
        static_argnums=2,
    )
    padded, segmented = encode(params, b["src"], None), encode(params, b["src"], profile[0])
    for a, s in zip(jax.tree.leaves(padded), jax.tree.leaves(segmented)):
        np.testing.assert_allclose(a, s, rtol=1e-5, atol=1e-6)

    def loss(p, segments):
        h = model.apply({"params": p}, b["src"], b["tgt_in"], segments=segments, method=Seq2Seq.features)
        project = lambda x: model.apply({"params": p}, x, method=Seq2Seq.project)  # noqa: E731
        out = compact_cross_entropy(h, jnp.asarray(b["tgt_out"]), project)
        return out["loss_sum"]

    value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    (value_p, grads_p), (value_s, grads_s) = (value_and_grad(params, s) for s in (None, profile))
    np.testing.assert_allclose(value_p, value_s, rtol=1e-6)
    for gp, gs in zip(jax.tree.leaves(grads_p), jax.tree.leaves(grads_s)):
        np.testing.assert_allclose(gp, gs, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_a_training_step_with_segments_equals_the_padded_step():
    model, _ = make(attention="luong_general")
    optimizer = make_optimizer_for_test()
    b = batch(seed=3)
    profile = for_batch(b)
    step = make_train_step(model, optimizer)
    results = []
    for segments in (None, profile):
        state = init_train_state(model, optimizer, 0)
        state, metrics = step(state, b, jax.random.key(1), segments=segments)
        results.append((state["params"], float(metrics["loss_sum"])))
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-6)
    for a, s in zip(jax.tree.leaves(results[0][0]), jax.tree.leaves(results[1][0])):
        np.testing.assert_allclose(a, s, rtol=1e-5, atol=1e-6)
    # accumulation passes one profile per micro-batch
    accum = make_accumulating_train_step(model, optimizer)
    halves = [{k: v[:4] for k, v in b.items()}, {k: v[4:] for k, v in b.items()}]
    profiles = tuple(for_batch(h) for h in halves)
    assert all(p is not None for p in profiles)  # each micro-batch skips steps
    results = []
    for segments in (None, profiles):
        state = init_train_state(model, optimizer, 0)
        state, metrics = accum(state, halves, jax.random.key(1), segments=segments)
        results.append((state["params"], float(metrics["loss_sum"])))
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-6)
    for a, s in zip(jax.tree.leaves(results[0][0]), jax.tree.leaves(results[1][0])):
        np.testing.assert_allclose(a, s, rtol=1e-5, atol=1e-6)


def make_optimizer_for_test():
    from s2s_jax.configs import default

    cfg = default.get_config().train
    cfg.lr_schedule, cfg.warmup_steps = "constant", 0
    return make_optimizer(cfg)


def test_rows_come_back_in_input_order():
    lengths = jnp.array([3, 9, 0, 9, 5])
    order, inverse = time_segments.sort_order(lengths)
    assert list(np.asarray(lengths[order])) == [9, 9, 5, 3, 0]
    assert list(np.asarray(order[inverse])) == [0, 1, 2, 3, 4]


@pytest.mark.slow
@pytest.mark.parametrize("opts", ["greedy", "beam"])
def test_decoding_with_segments_equals_the_padded_search(opts):
    import types

    from s2s_jax.decoding.inference import Inference, SearchOptions

    decode = types.SimpleNamespace(max_len_a=1.5, max_len_b=4, beam_size=1, alpha=0.6, batch_size=16)
    options = SearchOptions() if opts == "greedy" else SearchOptions(beam_size=3, nbest=2)
    model, params = make(attention="luong_general", bidirectional=True)
    rng = np.random.default_rng(1)
    sources = [rng.integers(3, V, size=rng.integers(1, 24)).tolist() for _ in range(21)]
    padded = Inference(model, decode, max_src_len=24).run(params, sources, options, batch_size=32)
    skipping = Inference(model, decode, max_src_len=24, skip_padding=True)
    arrays = skipping._arrays((sources,), list(range(21)), 32, [options] * 21, [(0, i) for i in range(21)])
    assert for_tokens(arrays["srcs"][0]) is not None  # this batch does skip steps
    segmented = skipping.run(params, sources, options, batch_size=32)
    assert [[c.tokens for c in r] for r in segmented] == [[c.tokens for c in r] for r in padded]
    np.testing.assert_allclose(
        [[c.score for c in r] for r in segmented], [[c.score for c in r] for r in padded], rtol=1e-5, atol=1e-5
    )
