"""Model and loss: padding invariance, hand-computed masked loss, decode_step consistency."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.models.seq2seq import ModelConfig, Seq2Seq
from s2s_jax.training.losses import compact_cross_entropy, masked_cross_entropy

V = 11


def make(**overrides):
    cfg = ModelConfig(src_vocab_size=V, tgt_vocab_size=V, emb_dim=6, hidden_size=8, num_layers=2, dropout=0.0)
    cfg = ModelConfig(**{**cfg.__dict__, **overrides})
    model = Seq2Seq(cfg)
    params = jax.jit(model.init)(jax.random.key(0), jnp.ones((1, 3), jnp.int32), jnp.ones((1, 3), jnp.int32))["params"]
    return model, params


SRC = jnp.array([[5, 6, 7, 2, 0], [8, 2, 0, 0, 0]])
TGT_IN = jnp.array([[1, 4, 5, 0], [1, 9, 0, 0]])
TGT_OUT = jnp.array([[4, 5, 2, 0], [9, 2, 0, 0]])

# The quick tier (`-m "not slow"`) checks two variants; CI checks all eight (GRU: test_gru.py and the
# exhaustive beam test on a GRU model run in the quick tier).
VARIANTS = [
    {},
    pytest.param({"bidirectional": True}, marks=pytest.mark.slow),
    pytest.param({"feed_context": True, "tie_embeddings": True}, marks=pytest.mark.slow),
    pytest.param({"attention": "luong_general", "bidirectional": True}, marks=pytest.mark.slow),
    pytest.param({"attention": "bahdanau", "input_feeding": True}, marks=pytest.mark.slow),
    pytest.param({"attention": "luong_dot", "input_feeding": True, "feed_context": True}, marks=pytest.mark.slow),
    pytest.param({"cell": "gru", "attention": "luong_general", "bidirectional": True}, marks=pytest.mark.slow),
    pytest.param(
        {"cell": "gru", "feed_context": True, "input_feeding": True, "attention": "bahdanau"}, marks=pytest.mark.slow
    ),
]


@pytest.mark.parametrize("overrides", VARIANTS)
def test_extra_padding_changes_neither_context_nor_loss(overrides):
    model, params = make(**overrides)
    memory, state = model.apply({"params": params}, SRC, method=Seq2Seq.encode)
    src_more = jnp.pad(SRC, ((0, 0), (0, 4)))
    tgt_in_more, tgt_out_more = jnp.pad(TGT_IN, ((0, 0), (0, 3))), jnp.pad(TGT_OUT, ((0, 0), (0, 3)))
    memory2, state2 = model.apply({"params": params}, src_more, method=Seq2Seq.encode)
    for a, b in zip(jax.tree.leaves(state["carries"]), jax.tree.leaves(state2["carries"])):  # (c, h) or h per layer
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    loss = masked_cross_entropy(model.apply({"params": params}, SRC, TGT_IN), TGT_OUT)
    loss2 = masked_cross_entropy(model.apply({"params": params}, src_more, tgt_in_more), tgt_out_more)
    np.testing.assert_allclose(loss["loss_sum"], loss2["loss_sum"], rtol=1e-6)
    assert float(loss["tokens"]) == float(loss2["tokens"]) == 5.0


def test_context_of_a_row_does_not_depend_on_other_rows():
    model, params = make()
    _, alone = model.apply({"params": params}, SRC[1:, :2], method=Seq2Seq.encode)
    _, together = model.apply({"params": params}, SRC, method=Seq2Seq.encode)
    np.testing.assert_allclose(alone["carries"][-1][1][0], together["carries"][-1][1][1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("overrides", VARIANTS)
def test_decode_step_reproduces_teacher_forced_logits(overrides):
    model, params = make(**overrides)
    full = model.apply({"params": params}, SRC, TGT_IN)
    memory, state = model.apply({"params": params}, SRC, method=Seq2Seq.encode)
    for t in range(TGT_IN.shape[1]):
        logits, state = model.apply({"params": params}, memory, state, TGT_IN[:, t], method=Seq2Seq.decode_step)
        np.testing.assert_allclose(logits[:, 2:], full[:, t, 2:], rtol=1e-5, atol=1e-6)
        assert np.all(np.asarray(logits[:, :2]) == -1e9)  # <pad>, <bos> are never output


def test_scheduled_sampling_with_ratio_one_equals_teacher_forcing_and_zero_differs():
    model, params = make()
    rngs = {"dropout": jax.random.key(1), "sampling": jax.random.key(2)}
    forced = model.apply({"params": params}, SRC, TGT_IN)
    ratio_one = model.apply({"params": params}, SRC, TGT_IN, train=True, teacher_forcing_ratio=1.0, rngs=rngs)
    np.testing.assert_allclose(forced, ratio_one, rtol=1e-6)
    # ratio 0: every input after <bos> is the model's own argmax, i.e. greedy decoding
    free = model.apply({"params": params}, SRC, TGT_IN, train=True, teacher_forcing_ratio=0.0, rngs=rngs)
    memory, state = model.apply({"params": params}, SRC, method=Seq2Seq.encode)
    tokens = TGT_IN[:, 0]
    for t in range(TGT_IN.shape[1]):
        logits, state = model.apply({"params": params}, memory, state, tokens, method=Seq2Seq.decode_step)
        np.testing.assert_allclose(free[:, t, 2:], logits[:, 2:], rtol=1e-5, atol=1e-6)
        tokens = jnp.argmax(logits, -1)
    np.testing.assert_allclose(free[:, 0], forced[:, 0], rtol=1e-6)
    assert not np.allclose(free, forced)


def test_masked_cross_entropy_matches_hand_computation():
    logits = jnp.array([[[0.0, 1.0, 2.0], [1.0, 1.0, 1.0], [5.0, -1.0, 0.0]]])
    targets = jnp.array([[2, 1, 0]])  # last position is padding
    out = masked_cross_entropy(logits, targets)
    expected = -(2.0 - np.log(1 + np.e + np.e**2)) + np.log(3.0)
    np.testing.assert_allclose(out["loss_sum"], expected, rtol=1e-6)
    np.testing.assert_allclose(out["nll_sum"], expected, rtol=1e-6)
    assert float(out["tokens"]) == 2.0
    smoothed = masked_cross_entropy(logits, targets, label_smoothing=0.1)
    logp0 = np.array([0.0, 1.0, 2.0]) - np.log(1 + np.e + np.e**2)
    by_hand = 0.9 * (-logp0[2]) + 0.1 * (-logp0.mean()) + 0.9 * np.log(3.0) + 0.1 * np.log(3.0)
    np.testing.assert_allclose(smoothed["loss_sum"], by_hand, rtol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("num_chunks", [1, 3, 8, 40])
def test_compact_cross_entropy_equals_masked_loss_and_its_gradient(smoothing, num_chunks):
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.standard_normal((4, 7, 5)), jnp.float32)
    weight = jnp.asarray(rng.standard_normal((5, V)), jnp.float32)
    lengths = np.array([7, 1, 3, 0])  # a full row, short rows, an all-padding row
    targets = rng.integers(1, V, (4, 7))
    targets[np.arange(7)[None, :] >= lengths[:, None]] = 0
    targets = jnp.asarray(targets, jnp.int32)

    def full(w, f):
        return masked_cross_entropy(f @ w, targets, smoothing)

    def compact(w, f):
        return compact_cross_entropy(f, targets, lambda h: h @ w, smoothing, num_chunks)

    got, want = jax.jit(compact)(weight, features), jax.jit(full)(weight, features)
    for key in ("loss_sum", "nll_sum", "tokens"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5)
    grad = lambda fn: jax.jit(jax.grad(lambda w, f: fn(w, f)["loss_sum"], argnums=(0, 1)))(weight, features)  # noqa: E731
    for got, want in zip(grad(compact), grad(full)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Padding positions get exactly zero gradient: their logits were never computed.
    assert np.all(np.asarray(grad(compact)[1])[np.asarray(targets) == 0] == 0.0)


def test_compact_cross_entropy_projects_only_blocks_with_real_targets():
    executed = []
    features = jnp.ones((2, 8, 3))
    targets = jnp.zeros((2, 8), jnp.int32).at[0, :3].set(4).at[1, :2].set(5)  # 5 real of 16 positions

    def project(h):
        jax.debug.callback(lambda rows: executed.append(int(rows)), h.shape[0])
        return h @ jnp.ones((3, V))

    out = jax.jit(lambda f: compact_cross_entropy(f, targets, project, num_chunks=4))(features)
    jax.effects_barrier()
    assert float(out["tokens"]) == 5.0
    np.testing.assert_allclose(out["nll_sum"], 5 * np.log(V), rtol=1e-6)
    assert executed == [4, 4]  # blocks of 4 rows: 5 real targets need 2 of the 4 blocks


@pytest.mark.parametrize("overrides", VARIANTS)
def test_features_then_project_equals_logits(overrides):
    model, params = make(**overrides)
    logits = model.apply({"params": params}, SRC, TGT_IN)
    features = model.apply({"params": params}, SRC, TGT_IN, method=Seq2Seq.features)
    projected = model.apply({"params": params}, features, method=Seq2Seq.project)
    np.testing.assert_allclose(projected, logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["bahdanau", "luong_dot", "luong_general"])
def test_attention_weights_are_zero_on_padding_and_rows_sum_to_one(kind):
    model, params = make(attention=kind)
    weights = model.apply({"params": params}, SRC, TGT_IN, method=Seq2Seq.attention_weights)
    mask = np.asarray(SRC != 0)
    assert weights.shape == (2, TGT_IN.shape[1], SRC.shape[1])
    assert np.all(np.asarray(weights)[~np.broadcast_to(mask[:, None, :], weights.shape)] == 0.0)
    np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)
    more = model.apply({"params": params}, jnp.pad(SRC, ((0, 0), (0, 3))), TGT_IN, method=Seq2Seq.attention_weights)
    np.testing.assert_allclose(more[..., : SRC.shape[1]], weights, rtol=1e-6, atol=1e-7)


def test_bidirectional_backward_direction_equals_reverse_pass_over_unpadded_sentence():
    from s2s_jax.models.lstm import LSTMLayer

    model, params = make(bidirectional=True, num_layers=1)
    enc = params["encoder"]
    x = enc["embed"]["embedding"][SRC[1, :2]][None]  # the real tokens of row 1 only
    ref_out, ref_carry = LSTMLayer(8).apply({"params": enc["layer_0_bwd"]}, x[:, ::-1], jnp.ones((1, 2), bool))
    outputs, carries, _ = model.apply(
        {"params": params}, SRC, train=False, method=lambda m, s, train: m.encoder(s, train=train)
    )
    np.testing.assert_allclose(outputs[1, :2, 8:], ref_out[0, ::-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carries[0][1][1][1], ref_carry[1][0], rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(outputs[1, 2:]) == 0.0)
