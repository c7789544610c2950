"""The fused CPU recurrence (s2s_jax/kernels) computes what the nn.scan recurrence computes.

Oracles: the scan layers (themselves checked against flax's cells in test_lstm.py/test_gru.py)
with the same parameters: outputs, final states and every gradient, for LSTM and GRU, masks
with ragged and empty rows, no mask, batch 1 and odd sizes, hidden sizes off the kernels'
8- and 32-unit panels; whole models uni-/bidirectional, with attention, against the scan with
and without time segments; vmap; the portable (non-AVX2) build; and the fallback when the
kernel is missing.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.errors import ConfigError
from s2s_jax.kernels import recurrence as kernel
from s2s_jax.models import recurrences
from s2s_jax.models.gru import GRULayer
from s2s_jax.models.lstm import FUSED_MIN_ROWS, LSTMLayer
from s2s_jax.models.seq2seq import ModelConfig, Seq2Seq
from s2s_jax.models.time_segments import for_batch
from s2s_jax.training.losses import compact_cross_entropy
from tests.helpers import cpu_flags

pytestmark = pytest.mark.skipif(not kernel.available(), reason="the fused kernel is not built here")

LAYERS = {"lstm": LSTMLayer, "gru": GRULayer}


def layer_case(cell: str, batch: int, time: int, hidden: int, lengths, seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(keys[0], (batch, time, 5))
    mask = None if lengths is None else jnp.arange(time)[None, :] < jnp.asarray(lengths)[:, None]
    h0 = jax.random.normal(keys[1], (batch, hidden))
    carry = (jax.random.normal(keys[2], (batch, hidden)), h0) if cell == "lstm" else h0
    params = jax.jit(LAYERS[cell](hidden).init)(keys[3], x, mask, carry)["params"]
    if cell == "gru":  # a non-zero recurrent bias, so its gradient path is exercised
        params = {**params, "recurrent": {**params["recurrent"], "bias_n": jnp.linspace(-0.5, 0.5, hidden)}}
    return params, x, mask, carry


CASES = [
    (3, 6, 8, [6, 3, 1]),  # ragged
    (4, 5, 13, [5, 0, 2, 5]),  # an empty row, H off the 8-unit panel
    (1, 4, 40, None),  # batch 1, no mask (the decoder), H off the 32-unit panel
    (7, 9, 33, [9, 8, 1, 4, 9, 2, 6]),  # odd batch: a 3-row tile and a remainder
]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("batch,time,hidden,lengths", CASES)
def test_fused_layer_equals_the_scan_with_its_gradients(cell, batch, time, hidden, lengths):
    params, x, mask, carry = layer_case(cell, batch, time, hidden, lengths)

    def run(fused):
        def loss(p, x, carry):
            layer = LAYERS[cell](hidden, fused=fused, fused_min_rows=1)  # the kernel at every batch size
            out, final = layer.apply({"params": p}, x, mask, carry)
            # weights that differ per position and unit, so every output and state is checked
            w = jnp.cos(jnp.arange(out.size, dtype=jnp.float32).reshape(out.shape))
            return jnp.sum(out * w) + sum(jnp.sum(jnp.sin(s)) for s in jax.tree.leaves(final)), (out, final)

        return jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(params, x, carry)

    (value_s, (out_s, final_s)), grads_s = run(False)
    (value_f, (out_f, final_f)), grads_f = run(True)
    np.testing.assert_allclose(out_f, out_s, rtol=1e-5, atol=1e-6)
    for f, s in zip(jax.tree.leaves(final_f), jax.tree.leaves(final_s)):
        np.testing.assert_allclose(f, s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value_f, value_s, rtol=1e-5)
    assert jax.tree.structure(grads_f) == jax.tree.structure(grads_s)
    for f, s in zip(jax.tree.leaves(grads_f), jax.tree.leaves(grads_s)):
        np.testing.assert_allclose(f, s, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_lengths_past_the_end_are_the_whole_sequence_with_their_gradients(cell):
    """The kernels' public functions clip lengths to [0, T]: a length past T is the whole row, in
    the forward pass and in every gradient (the backward pass reads past no buffer)."""
    batch, time, hidden = 2, 3, 8
    gates = 4 if cell == "lstm" else 3
    keys = jax.random.split(jax.random.key(1), 3)
    x_proj = jax.random.normal(keys[0], (batch, time, gates * hidden))
    w = 0.3 * jax.random.normal(keys[1], (hidden, gates * hidden))
    h0 = jax.random.normal(keys[2], (batch, hidden))

    def loss(x_proj, w, h0, lengths):
        if cell == "lstm":
            out, (c, h) = kernel.lstm(x_proj, w, h0, h0, lengths)
            return jnp.sum(jnp.sin(out)) + jnp.sum(h * c)
        out, h = kernel.gru(x_proj, w, jnp.zeros((hidden,)), h0, lengths)
        return jnp.sum(jnp.sin(out)) + jnp.sum(h * h)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    whole, past = grad(x_proj, w, h0, jnp.array([3, 3])), grad(x_proj, w, h0, jnp.array([5, 7]))
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(past)):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


def test_fused_layer_under_vmap_equals_the_batched_call():
    params, x, mask, carry = layer_case("lstm", 4, 5, 8, [5, 2, 4, 1])
    layer = LSTMLayer(8, fused=True, fused_min_rows=1)
    batched = layer.apply({"params": params}, x, mask, carry)
    one = lambda x, m, c: layer.apply({"params": params}, x[None], m[None], jax.tree.map(lambda a: a[None], c))  # noqa: E731
    mapped = jax.vmap(one)(x, mask, carry)
    for b, m in zip(jax.tree.leaves(batched), jax.tree.leaves(mapped)):
        np.testing.assert_allclose(m.reshape(b.shape), b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_fused_layer_takes_the_kernel_from_its_row_threshold_and_the_scan_below(cell):
    """Small batches (batch-1 decoding, the server's small requests) run the masked scan, which is
    faster there; from FUSED_MIN_ROWS rows the kernel. Either way the same function (tests above)."""
    for rows, kernel_runs in ((1, False), (FUSED_MIN_ROWS - 1, False), (FUSED_MIN_ROWS, True), (40, True)):
        x, mask = jnp.ones((rows, 5, 3)), jnp.ones((rows, 5), bool)
        layer = LAYERS[cell](8, fused=True)
        params = layer.init(jax.random.key(0), x, mask)
        program = str(jax.make_jaxpr(layer.apply)(params, x, mask))
        assert ("ffi_call" in program) == kernel_runs, rows
        assert ("scan" in program) != kernel_runs, rows


V = 40
# Slow tier (each compiles a model's gradient twice); the quick tier runs every cell and direction in
# the layer tests above.
MODEL_VARIANTS = [
    {},
    {"bidirectional": True, "attention": "luong_general"},
    {"cell": "gru", "bidirectional": True},
    {"attention": "bahdanau", "input_feeding": True},
]


def model_batch(seed: int = 0, rows: int = FUSED_MIN_ROWS) -> dict:
    """A ragged batch with enough rows that the fused model's layers run the kernel."""
    rng = np.random.default_rng(seed)
    src_len, tgt_len = rng.integers(1, 12, rows), rng.integers(1, 10, rows)
    src, tgt_in, tgt_out = (np.zeros((rows, w), np.int32) for w in (12, 10, 10))
    for row, (s, t) in enumerate(zip(src_len, tgt_len)):
        src[row, :s] = rng.integers(4, V, s)
        tgt_out[row, :t] = rng.integers(4, V, t)
        tgt_in[row, 0], tgt_in[row, 1:t] = 1, tgt_out[row, : t - 1]
    return {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out}


@pytest.mark.slow
@pytest.mark.parametrize("overrides", MODEL_VARIANTS)
def test_fused_model_equals_the_scan_model_padded_and_segmented(overrides):
    base = ModelConfig(src_vocab_size=V, tgt_vocab_size=V, emb_dim=6, hidden_size=16, num_layers=2, dropout=0.0)
    models = {r: Seq2Seq(ModelConfig(**{**base.__dict__, **overrides, "recurrence": r})) for r in ("scan", "fused")}
    dummy = jnp.ones((1, 3), jnp.int32)
    params = jax.jit(models["scan"].init)(jax.random.key(0), dummy, dummy)["params"]
    b = model_batch()

    def value_and_grad(model, segments):
        def loss(p):
            h = model.apply({"params": p}, b["src"], b["tgt_in"], segments=segments, method=Seq2Seq.features)
            project = lambda x: model.apply({"params": p}, x, method=Seq2Seq.project)  # noqa: E731
            return compact_cross_entropy(h, jnp.asarray(b["tgt_out"]), project)["loss_sum"]

        return jax.value_and_grad(loss)(params)

    def encode(model):
        return model.apply({"params": params}, b["src"], method=Seq2Seq.encode)

    for f, s in zip(jax.tree.leaves(encode(models["fused"])), jax.tree.leaves(encode(models["scan"]))):
        np.testing.assert_allclose(f, s, rtol=1e-5, atol=1e-6)
    fused = value_and_grad(models["fused"], None)
    for segments in (None, for_batch(b)):
        scan = value_and_grad(models["scan"], segments)
        np.testing.assert_allclose(fused[0], scan[0], rtol=1e-5)
        for f, s in zip(jax.tree.leaves(fused[1]), jax.tree.leaves(scan[1])):
            np.testing.assert_allclose(f, s, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("isa", ["generic", "avx2"])
@pytest.mark.slow
def test_each_instruction_set_variant_equals_the_scan_too(isa):
    """The kernels' narrower inner loops (what a CPU without AVX-512 or AVX2 runs), forced in a fresh process."""
    if isa == "avx2" and not {"avx2", "fma"} <= cpu_flags():
        pytest.skip("this CPU has no AVX2/FMA")
    code = (
        f"from s2s_jax.kernels import recurrence as k; assert k.isa() == {isa!r}, k.isa(); "
        "import tests.test_fused_recurrence as t; "
        "t.test_fused_layer_equals_the_scan_with_its_gradients('lstm', *t.CASES[3]); "
        "t.test_fused_layer_equals_the_scan_with_its_gradients('gru', *t.CASES[1]); print('ok')"
    )
    env = {**os.environ, "S2S_JAX_KERNEL_ISA": isa, "JAX_PLATFORMS": "cpu"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_an_unknown_instruction_set_cap_runs_the_generic_loops_and_says_so():
    """A mistyped S2S_JAX_KERNEL_ISA is the narrowest cap, not a silent AVX2 one."""
    code = (
        "from s2s_jax.kernels import int8, recurrence, top_log_probs as t; print(recurrence.isa(), int8.isa(), t.isa())"
    )
    env = {**os.environ, "S2S_JAX_KERNEL_ISA": "AVX2", "JAX_PLATFORMS": "cpu"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["generic"] * 3, done.stderr[-2000:]
    assert done.stderr.count("warning: S2S_JAX_KERNEL_ISA=AVX2 is not one of generic, avx2, avx512, avx512vnni") == 1


def test_auto_takes_the_kernel_here_and_the_scan_without_it(monkeypatch):
    assert recurrences.resolve("auto") == "fused"
    assert recurrences.resolve("scan") == "scan"
    assert recurrences.resolve("auto", jnp.bfloat16) == "scan"  # the kernel computes in float32
    monkeypatch.setattr(kernel, "available", lambda: False)
    monkeypatch.setattr(kernel, "unavailable_reason", lambda: "it was not built when s2s-jax was installed")
    assert recurrences.resolve("auto") == "scan"
    with pytest.raises(ValueError, match="fused: the fused CPU recurrence is missing .it was not built"):
        recurrences.resolve("fused")


def test_a_model_trained_fused_translates_where_the_kernel_cannot_run(trained_workdir, tmp_path, monkeypatch, capsys):
    """Training insists on a recurrence it can run; a trained model loaded to translate runs the scan
    over the same parameters instead, with one warning, and translates as it does with the kernel."""
    from s2s_jax.decoding.translator import Translator

    workdir = str(tmp_path / "fused")
    shutil.copytree(trained_workdir.workdir, workdir)
    path = os.path.join(workdir, "config.json")
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    saved["model"]["recurrence"] = "fused"
    with open(path, "w", encoding="utf-8") as f:
        json.dump(saved, f)
    lines = ["the red cat", "a small dog sees the house"]
    with_kernel = Translator(workdir)
    assert with_kernel.model.config.recurrence == "fused"
    expected = [h[0].text for h in with_kernel.translate(lines)]
    monkeypatch.setattr(kernel, "available", lambda: False)
    monkeypatch.setattr(kernel, "unavailable_reason", lambda: "not built for this test")
    without = Translator(workdir)
    assert without.model.config.recurrence == "scan"
    assert "trained with model.recurrence=fused, but the fused CPU recurrence is missing" in capsys.readouterr().err
    assert [h[0].text for h in without.translate(lines)] == expected


def test_config_check_names_why_fused_cannot_run(monkeypatch):
    from s2s_jax.config import checks
    from s2s_jax.configs import default

    config = default.get_config()
    config.model.recurrence = "fused"
    checks.validate(config)  # runs here
    config.train.dtype = "bfloat16"
    with pytest.raises(ConfigError, match="model.recurrence=fused: .*float32"):
        checks.validate(config)
    config.model.recurrence = "fast"
    with pytest.raises(ConfigError, match="model.recurrence must be one of auto, scan, fused"):
        checks.validate(config)


@pytest.mark.slow
def test_fifty_quickstart_steps_give_the_same_losses_with_either_recurrence(tmp_path):
    """train.py's own loop on the README's quickstart corpus: the logged losses agree to 4 decimals."""
    from s2s_jax.configs import quickstart
    from s2s_jax.training.loop import train_and_evaluate
    from s2s_jax.training.train_log import read_metrics

    losses = {}
    for recurrence in ("scan", "fused"):
        config = quickstart.get_config()
        config.model.recurrence = recurrence
        config.train.num_steps = 50
        config.train.log_every = 10
        config.train.eval_every = config.train.checkpoint_every = 50
        config.decode.beam_size = 1
        config.data.valid_max_pairs = 16  # the final validation is not what this compares
        workdir = str(tmp_path / recurrence)
        train_and_evaluate(config, workdir)
        losses[recurrence] = [(r["step"], r["train_loss"]) for r in read_metrics(workdir) if "train_loss" in r]
    assert [s for s, _ in losses["fused"]] == [10, 20, 30, 40, 50]
    for (step, fused), (_, scan) in zip(losses["fused"], losses["scan"]):
        assert round(fused, 4) == round(scan, 4), (step, fused, scan)
