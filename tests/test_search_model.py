"""Search on the real Seq2Seq (attention included): beam with K >= |V|^L is exhaustive search."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.decoding import search
from s2s_jax.models.seq2seq import ModelConfig, Seq2Seq

V, L = 6, 3  # ids 0..3 are pad/bos/eos/unk; outputs can be 2 (eos), 3, 4, 5


@pytest.fixture(scope="module", params=["none", "luong_general", "gru"])
def model_and_params(request):
    gru = request.param == "gru"  # a GRU (carry h alone) with a bidirectional encoder and attention
    attention = "luong_general" if gru else request.param
    cfg = ModelConfig(
        src_vocab_size=V,
        tgt_vocab_size=V,
        emb_dim=4,
        hidden_size=8,
        num_layers=1,
        dropout=0.0,
        attention=attention,
        input_feeding=attention != "none",
        cell="gru" if gru else "lstm",
        bidirectional=gru,
    )
    model = Seq2Seq(cfg)
    params = jax.jit(model.init)(jax.random.key(3), jnp.ones((1, 3), jnp.int32), jnp.ones((1, 3), jnp.int32))["params"]
    # Sharpen the output layer so hypotheses differ clearly in score.
    params = jax.tree_util.tree_map_with_path(lambda path, x: x * 3.0 if "output" in str(path) else x, params)
    return model, params


def all_outputs():
    """Every sequence of length <= L over the output ids: ends with EOS, or has length L."""
    outs = []
    for n in range(1, L + 1):
        for seq in itertools.product([2, 3, 4, 5], repeat=n):
            if 2 in seq[:-1]:
                continue
            if seq[-1] == 2 or n == L:
                outs.append(list(seq))
    return outs


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_search_on_seq2seq_equals_exhaustive_search(model_and_params, alpha):
    model, params = model_and_params
    src = jnp.array([[3, 4, 5, 2, 0], [5, 2, 0, 0, 0]])
    memory, state = model.apply({"params": params}, src, method=Seq2Seq.encode)
    step_fn = functools.partial(model.apply, {"params": params}, method=Seq2Seq.decode_step)
    tokens, scores, lengths = jax.jit(
        functools.partial(search.batch_beam_search, step_fn, beam_size=128, max_steps=L, alpha=alpha, nbest=3)
    )(memory, state)
    outs = all_outputs()
    padded = jnp.array([o + [0] * (L - len(o)) for o in outs])
    lens = jnp.array([len(o) for o in outs])
    for row in range(src.shape[0]):

        def repeat_row(x, row=row):
            return jnp.repeat(x[row : row + 1], len(outs), 0)

        mem, st = jax.tree.map(repeat_row, memory), jax.tree.map(repeat_row, state)
        logp = search.sequence_log_prob(step_fn, mem, st, padded, lens)
        brute = np.asarray(logp / search.length_penalty(lens, alpha))
        order = np.argsort(-brute)[:3]
        for rank, index in enumerate(order):
            assert list(np.asarray(tokens[row, rank, : lens[index]])) == outs[index]
            np.testing.assert_allclose(scores[row, rank], brute[index], rtol=1e-5)
