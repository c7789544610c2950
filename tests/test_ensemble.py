"""Ensembles: one model with itself is that model, beam search over an ensemble is exhaustive
search under the ensemble's distribution, and decode.py drives it with a repeated --workdir."""

import itertools
import os
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.cli import decode as decode_cli
from s2s_jax.data.tokenizer import EOS_ID, PAD_ID
from s2s_jax.decoding import search
from s2s_jax.decoding.inference import Inference, SearchOptions, ensemble_weights, ensemble_weights_flag
from s2s_jax.models.seq2seq import ModelConfig, Seq2Seq
from tests.helpers import TINY_DECODE, decode_flags

DECODE = TINY_DECODE


def make(seed: int, **overrides):
    cfg = dict(
        src_vocab_size=12,
        tgt_vocab_size=12,
        emb_dim=8,
        hidden_size=16,
        num_layers=1,
        dropout=0.0,
        attention="luong_general",
    )
    model = Seq2Seq(ModelConfig(**dict(cfg, **overrides)))
    params = jax.jit(model.init)(jax.random.key(seed), jnp.ones((1, 4), jnp.int32), jnp.ones((1, 4), jnp.int32))[
        "params"
    ]
    return model, params


def sources(n: int, vocab: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(4, vocab, size=rng.integers(1, 9)).tolist() for _ in range(n)]


def as_lists(results):
    return [[c.tokens for c in r] for r in results], [[c.score for c in r] for r in results]


@pytest.mark.parametrize(
    "opts",
    [
        pytest.param(SearchOptions(), marks=pytest.mark.slow),
        SearchOptions(beam_size=3, nbest=2),
        pytest.param(
            SearchOptions(sample=True, nbest=2, temperature=1.3, top_k=5, with_scores=True), marks=pytest.mark.slow
        ),
    ],
    ids=["greedy", "beam", "sample"],
)
def test_an_ensemble_of_a_model_with_itself_is_that_model(opts):
    model, params = make(0)
    srcs = sources(9, 12, seed=1)
    single = Inference(model, DECODE, max_src_len=10)
    pair = Inference([model, model], DECODE, max_src_len=10, weights=[3.0, 1.0])
    want_tokens, want_scores = as_lists(single.run(params, srcs, opts, batch_size=4, seed=5))
    got_tokens, got_scores = as_lists(pair.run((params, params), (srcs, srcs), opts, batch_size=4, seed=5))
    assert got_tokens == want_tokens
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5)
    targets = [t[0] for t in want_tokens]
    np.testing.assert_allclose(
        [c.score for c in pair.score((params, params), (srcs, srcs), targets)],
        [c.score for c in single.score(params, srcs, targets)],
        rtol=1e-5,
        atol=1e-5,
    )


L = 3  # outputs: EOS after 0..L-1 tokens, or L tokens without EOS
V = 6  # target vocabulary: 1 + 5 + 25 + 125 = 156 possible outputs


def all_outputs() -> tuple[np.ndarray, np.ndarray]:
    others = [t for t in range(V) if t != EOS_ID]
    seqs = [list(p) + [EOS_ID] for n in range(L) for p in itertools.product(others, repeat=n)]
    seqs += [list(p) for p in itertools.product(others, repeat=L)]
    tokens = np.full((len(seqs), L), PAD_ID, np.int32)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = s
    return tokens, np.array([len(s) for s in seqs], np.int32)


def member_log_probs(model, params, src, tokens) -> np.ndarray:
    """log p_member(. | source, gold prefix) at every position: [N, L, V], by teacher forcing."""
    n = tokens.shape[0]
    src = np.repeat(np.array([src + [EOS_ID]], np.int32), n, axis=0)
    memory, state = model.apply({"params": params}, src, method=Seq2Seq.encode)
    step = lambda m, s, t: model.apply({"params": params}, m, s, t, method=Seq2Seq.decode_step)  # noqa: E731
    return np.asarray(jax.nn.log_softmax(search.teacher_forced_logits(step, memory, state, jnp.asarray(tokens))))


@pytest.mark.slow
def test_beam_search_over_an_ensemble_equals_exhaustive_search():
    """Two members of different architecture, each reading its own source ids, weights 0.7 / 0.3:
    the n best outputs of beam search are the n best of all 156 outputs under the ensemble's
    distribution softmax(0.7 log p1 + 0.3 log p2), computed here member by member."""
    m1, p1 = make(0, tgt_vocab_size=V)
    m2, p2 = make(1, tgt_vocab_size=V, src_vocab_size=9, hidden_size=12, attention="none", bidirectional=True)
    decode = types.SimpleNamespace(max_len_a=0.0, max_len_b=L, alpha=0.6)
    engine = Inference([m1, m2], decode, max_src_len=10, weights=[0.7, 0.3])
    src1, src2 = sources(4, 12, seed=2), sources(4, 9, seed=3)
    opts = SearchOptions(beam_size=32, nbest=4, alpha=0.6)  # 32 >= the 25 live prefixes before the last step
    results = engine.run((p1, p2), (src1, src2), opts, batch_size=4)
    tokens, lengths = all_outputs()
    for i in range(4):
        logp = 0.7 * member_log_probs(m1, p1, src1[i], tokens) + 0.3 * member_log_probs(m2, p2, src2[i], tokens)
        logp = np.asarray(jax.nn.log_softmax(logp))
        picked = np.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
        total = np.where(np.arange(L)[None] < lengths[:, None], picked, 0.0).sum(1)
        normalised = total / np.asarray(search.length_penalty(lengths, 0.6))
        order = np.argsort(-normalised, kind="stable")[: opts.nbest]
        want = [[int(t) for t in tokens[j, : lengths[j]] if t != EOS_ID] for j in order]
        assert [c.tokens for c in results[i]] == want
        np.testing.assert_allclose([c.score for c in results[i]], normalised[order], rtol=1e-5, atol=1e-5)
        # --score: every output that ends in EOS, under the ensemble's own distribution
        ended = [j for j in range(len(tokens)) if tokens[j, lengths[j] - 1] == EOS_ID]  # all 31 that end in EOS
        assert len(ended) == 31
        scored = engine.score(
            (p1, p2),
            ([src1[i]] * len(ended), [src2[i]] * len(ended)),
            [[int(t) for t in tokens[j, : lengths[j] - 1]] for j in ended],
        )
        np.testing.assert_allclose([c.score for c in scored], total[ended], rtol=1e-5, atol=1e-5)


def test_ensemble_weights_are_checked():
    assert ensemble_weights(None, 4) == (0.25,) * 4
    assert ensemble_weights([3, 1], 2) == (0.75, 0.25)
    for bad in ([1.0], [1.0, -1.0], [0.0, 0.0], [float("nan"), 1.0]):
        with pytest.raises(ValueError, match="ensemble weights"):
            ensemble_weights(bad, 2)
    assert ensemble_weights_flag(None, 2) is None and ensemble_weights_flag(["3", "1"], 2) == [3.0, 1.0]
    for bad, message in (
        (["1"], "--ensemble_weights has 1 weights for 2 --workdir"),
        (["1", "x"], "--ensemble_weights must be numbers, got 1,x"),
        (["1", "-1"], "ensemble weights must be finite"),
    ):
        with pytest.raises(ValueError, match=message):
            ensemble_weights_flag(bad, 2)


# ---------------------------------------------------------------------------
# decode.py / Translator on trained workdirs
# ---------------------------------------------------------------------------


def decode(capsys, workdirs, **overrides):
    status = decode_cli.run(decode_flags(list(workdirs), **overrides))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def lines_file(trained_workdir, tmp_path_factory):
    path = tmp_path_factory.mktemp("ensemble") / "in.txt"
    with open(trained_workdir.paths["valid_src"], encoding="utf-8") as f:
        path.write_text("".join(f.readlines()[:6]), encoding="utf-8")
    return str(path)


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_decode_with_the_same_workdir_twice_matches_one(trained_workdir, lines_file, capsys):
    wd = trained_workdir.workdir
    for extra in ({}, {"nbest": 2, "beam_size": 3}):
        status, one, err = decode(capsys, [wd], input=lines_file, **extra)
        assert status == 0, err
        status, two, err = decode(capsys, [wd, wd], input=lines_file, ensemble_weights=["2", "1"], **extra)
        assert status == 0, err
        assert two == one
    status, one, _ = decode(capsys, [wd], input=lines_file, print_alignment="soft")
    status2, two, _ = decode(capsys, [wd, wd], input=lines_file, print_alignment="soft", ensemble_weights=["3", "1"])
    assert status == status2 == 0 and two == one  # the members' word alignments, averaged
    refs = trained_workdir.paths["valid_tgt"]
    ref_file = os.path.join(os.path.dirname(lines_file), "ref.txt")
    with open(refs, encoding="utf-8") as f:
        open(ref_file, "w", encoding="utf-8").write("".join(f.readlines()[:6]))
    status, one, _ = decode(capsys, [wd], input=lines_file, reference=ref_file, score=True)
    status2, two, _ = decode(capsys, [wd, wd], input=lines_file, reference=ref_file, score=True)
    assert status == status2 == 0
    np.testing.assert_allclose(
        [[float(x) for x in row.split("\t")] for row in two.splitlines()],
        [[float(x) for x in row.split("\t")] for row in one.splitlines()],
        atol=2e-4,
    )


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_members_must_share_the_target_vocabulary(trained_workdir, lines_file, tmp_path, capsys):
    from s2s_jax.data.tokenizer import train_tokenizer

    other = str(tmp_path / "other")
    shutil.copytree(trained_workdir.workdir, other)
    model = "spm.model" if os.path.exists(os.path.join(other, "spm.model")) else "spm_tgt.model"
    with open(trained_workdir.paths["train_tgt"], encoding="utf-8") as f:
        train_tokenizer(f.read().split("\n"), os.path.join(other, model[: -len(".model")]), vocab_size=40)
    status, _, err = decode(capsys, [trained_workdir.workdir, other], input=lines_file)
    assert status == 1
    assert err.count("\n") == 1 and err.startswith("error: ensemble members need the same target vocabulary: ")
    assert trained_workdir.workdir in err and other in err


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_a_missing_member_is_an_error_not_dropped(trained_workdir, lines_file, tmp_path, capsys):
    missing = str(tmp_path / "nope")
    status, _, err = decode(capsys, [trained_workdir.workdir, missing], input=lines_file)
    assert status == 1 and err.startswith("error: ") and missing in err
    status, _, err = decode(capsys, [trained_workdir.workdir] * 2, input=lines_file, ensemble_weights=["1"])
    assert status == 1 and err == "error: --ensemble_weights has 1 weights for 2 --workdir\n"
