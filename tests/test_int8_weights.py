"""int8 weights in the model (s2s_jax/models/int8_weights.py): conversion, closeness to float32,
kernel == pure-JAX path for whole models, batch invariance, and the Translator / decode.py option."""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.decoding import search
from s2s_jax.decoding.inference import Inference, SearchOptions
from s2s_jax.kernels import int8
from s2s_jax.models import int8_weights
from s2s_jax.models.seq2seq import ModelConfig, Seq2Seq
from tests.helpers import TINY_DECODE, decode_flags

ARCHITECTURES = {
    "lstm_plain": dict(cell="lstm", attention="none", num_layers=2),
    "gru_bi_luong_tied": dict(
        cell="gru", attention="luong_general", bidirectional=True, tie_embeddings=True, emb_dim=16
    ),
    "lstm_bi_bahdanau_feed": dict(cell="lstm", attention="bahdanau", bidirectional=True, input_feeding=True),
}


def _model(seed: int = 0, **overrides) -> tuple[Seq2Seq, dict]:
    fields = dict(src_vocab_size=40, tgt_vocab_size=40, emb_dim=24, hidden_size=32, num_layers=1, dropout=0.0)
    model = Seq2Seq(ModelConfig(**{**fields, "recurrence": "scan", **overrides}))
    tokens = jnp.ones((1, 4), jnp.int32)
    return model, jax.jit(model.init)(jax.random.key(seed), tokens, tokens)["params"]


def _batch(rows: int = 4, width: int = 9, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    src = rng.integers(3, 40, (rows, width)).astype(np.int32)
    for row in range(rows):
        src[row, rng.integers(2, width + 1) :] = 0
    return src


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_converted_parameters_are_what_the_int8_model_declares(name):
    model, params = _model(**ARCHITECTURES[name])
    qmodel, qparams = int8_weights.quantized(model, params)
    tokens = jnp.ones((1, 4), jnp.int32)
    declared = jax.eval_shape(lambda: qmodel.init(jax.random.key(0), tokens, tokens)["params"])
    shapes = lambda tree: jax.tree.map(lambda x: (x.shape, jnp.dtype(x.dtype).name), tree)  # noqa: E731
    assert shapes(qparams) == shapes(declared)
    kinds = {jnp.dtype(x.dtype).name for x in jax.tree.leaves(qparams)}
    assert kinds == {"int8", "float32"}
    assert qmodel.config.int8 and qmodel.config.recurrence == "scan" and not model.config.int8


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_int8_logits_are_close_to_float32(name):
    """int8 per column and per input row: each logit within a few percent of the float's range."""
    model, params = _model(**ARCHITECTURES[name])
    qmodel, qparams = int8_weights.quantized(model, params)
    src = _batch()
    real = (src != 0)[..., None]
    full = model.apply({"params": params}, src, src)
    approx = qmodel.apply({"params": qparams}, src, src)
    error = float(jnp.max(jnp.where(real, jnp.abs(full - approx), 0)))
    assert 0 < error < 0.05 * float(jnp.max(jnp.abs(full)))


@pytest.mark.slow
def test_whole_model_kernel_equals_pure_jax_path(monkeypatch):
    """The compiled kernel and the dot_general path give the same search: the same hypotheses, scores
    within float rounding (a few encoder outputs differ in the last bit between the two paths, which
    beam search's top_log_probs kernel, summing in double, passes on; XLA's float32 sum hid it)."""
    if not int8.available():
        pytest.skip(f"the int8 kernel is not built: {int8.unavailable_reason()}")
    model, params = _model(**ARCHITECTURES["gru_bi_luong_tied"])
    qmodel, qparams = int8_weights.quantized(model, params)
    src = _batch(rows=3)

    def beam():
        memory, state = qmodel.apply({"params": qparams}, src, method=Seq2Seq.encode)
        step = lambda m, s, t: qmodel.apply({"params": qparams}, m, s, t, method=Seq2Seq.decode_step)  # noqa: E731
        return jax.jit(
            lambda memory, state: search.batch_beam_search(step, memory, state, beam_size=3, max_steps=8, nbest=3)
        )(memory, state)

    with_kernel = jax.tree.map(np.asarray, beam())
    monkeypatch.setattr(int8, "int8_cpu", None)
    without = jax.tree.map(np.asarray, beam())
    tokens, scores, lengths = with_kernel
    np.testing.assert_array_equal(tokens, without[0])
    np.testing.assert_array_equal(lengths, without[2])
    np.testing.assert_allclose(scores, without[1], rtol=1e-6)


def test_int8_search_is_batch_invariant():
    """Each input row is quantized on its own, so a sentence's output does not depend on its batch."""
    model, params = _model(**ARCHITECTURES["lstm_plain"])
    qmodel, qparams = int8_weights.quantized(model, params)
    inference = Inference(qmodel, TINY_DECODE, 12)
    sources = [list(row[row != 0]) for row in _batch(rows=6, seed=3)]
    opts = SearchOptions(beam_size=3, with_scores=True)
    together = inference.run(qparams, sources, opts, batch_size=8)
    alone = [inference.run(qparams, [s], opts, batch_size=1)[0] for s in sources]
    for a, b in zip(together, alone):
        assert a[0].tokens == b[0].tokens
        assert a[0].score == pytest.approx(b[0].score, rel=1e-5)


def test_bfloat16_model_is_refused():
    model, params = _model(dtype=jnp.bfloat16)
    with pytest.raises(ValueError, match="float32"):
        int8_weights.quantized(model, params)


def test_decode_int8_flag(trained_workdir, monkeypatch, capsys):
    """decode.py --int8 translates the run's validation sources and scores close to float32."""
    from s2s_jax.cli import decode

    source = trained_workdir.paths["valid_src"]
    outputs = {}
    for int8_flag in (False, True):
        flags = decode_flags(trained_workdir.workdir, input=source, beam_size=1, int8=int8_flag)
        assert decode.run(flags) == 0
        outputs[int8_flag] = capsys.readouterr().out.splitlines()
    assert len(outputs[True]) == len(outputs[False]) > 0
    same = sum(a == b for a, b in zip(outputs[True], outputs[False]))
    assert same >= 0.5 * len(outputs[False]), (same, len(outputs[False]))


def test_translator_int8_scores_close_to_float(trained_workdir):
    from s2s_jax.decoding.translator import Translator

    lines = io.open(trained_workdir.paths["valid_src"], encoding="utf-8").read().splitlines()[:8]
    full, quantized = Translator(trained_workdir.workdir), Translator(trained_workdir.workdir, int8=True)
    assert quantized.model.config.int8 and not full.model.config.int8
    texts = [h[0].text for h in full.translate(lines, SearchOptions())]
    a = full.score(lines, texts)
    b = quantized.score(lines, texts)
    for x, y in zip(a, b):
        assert y.per_token == pytest.approx(x.per_token, abs=0.05)


@pytest.mark.parametrize("tied", [False, True])
def test_int8_shortlist_columns_equal_the_full_int8_layer(tied):
    """A shortlist gathers columns of the int8 matrix and their scales: each row is quantized the same
    way and each column's integer sum is the same, so the logits are the full layer's, bit for bit."""
    overrides = dict(tie_embeddings=True, emb_dim=16) if tied else {}
    model, params = _model(**overrides)
    qmodel, qparams = int8_weights.quantized(model, params)
    h = jax.random.normal(jax.random.key(5), (3, 32))
    ids = jnp.array([2, 7, 3, 39, 11, 0], jnp.int32)
    full = qmodel.apply({"params": qparams}, h, method=Seq2Seq.project)
    layer = qmodel.apply({"params": qparams}, ids, method=lambda m, i: m.decoder.output_layer(i))
    restricted = qmodel.apply({"params": qparams}, h, method=lambda m, x: m.decoder.project(x, layer))
    np.testing.assert_array_equal(np.asarray(restricted), np.asarray(full)[:, np.asarray(ids)])


def test_int8_without_its_kernel_says_so_once(monkeypatch, capsys):
    """Where the int8 kernel did not build, int8 runs as XLA's int8 dot (slower than float32): a
    user asking for --int8 is told, once, not left to find it slower."""
    model, params = _model()
    monkeypatch.setattr(int8, "available", lambda: False)
    monkeypatch.setattr(int8, "unavailable_reason", lambda: "not built for this test")
    int8_weights.quantized(model, params)
    int8_weights.quantized(model, params)
    err = capsys.readouterr().err
    assert err.count("warning: the int8 CPU kernel is missing (not built for this test)") == 1, err
