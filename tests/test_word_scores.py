"""Word-level confidence: each search's per-token log-probabilities add up to the score it reports
(before length normalisation) and equal teacher forcing, for greedy, sampling and beam (where
they follow their hypothesis), single models and ensembles, compacted or not; word merging on
hand-made pieces; and decode.py's --word_scores column."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.cli import decode as decode_cli
from s2s_jax.decoding import search, word_scores
from s2s_jax.decoding.inference import BatchShape, Inference, SearchOptions
from tests.helpers import TINY_DECODE, decode_flags, tiny_model

# ---------------------------------------------------------------------------
# The searches on a tiny random RNN in pure JAX (PAD and BOS never emitted)
# ---------------------------------------------------------------------------

PAD, BOS, EOS = 0, 1, 2
V, H = 7, 8
_keys = jax.random.split(jax.random.key(3), 4)
PARAMS = {
    "emb": jax.random.normal(_keys[0], (V, H)),
    "w": jax.random.normal(_keys[1], (H, H)) * 1.2 / np.sqrt(H),
    "out": jax.random.normal(_keys[2], (H, V)) * 1.5,
}
NEVER = jnp.zeros((V,)).at[PAD].set(-1e9).at[BOS].set(-1e9).at[EOS].set(-1.0)


def step_fn(memory, state, tokens):
    h = jnp.tanh(PARAMS["emb"][tokens] + state @ PARAMS["w"])
    return h @ PARAMS["out"] + memory + NEVER, h


def inputs(n: int, seed: int):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.random.normal(k1, (n, V)), 0.5 * jax.random.normal(k2, (n, H))


T = 10
greedy = jax.jit(
    functools.partial(search.greedy_search, step_fn),
    static_argnames=("max_steps", "return_log_prob", "return_token_log_probs", "compact"),
)
sampler = jax.jit(
    functools.partial(search.sample, step_fn),
    static_argnames=("max_steps", "return_log_prob", "return_token_log_probs"),
)
beam = jax.jit(
    functools.partial(search.batch_beam_search, step_fn),
    static_argnames=("beam_size", "max_steps", "nbest", "return_token_log_probs", "compact"),
)
teacher = jax.jit(functools.partial(search.token_log_probs, step_fn))


def check_against_teacher_forcing(memory, state, tokens, lengths, token_logp, total):
    """The values sum to `total`, equal teacher forcing within the length and are 0 after it."""
    tokens, lengths, token_logp = np.asarray(tokens), np.asarray(lengths), np.asarray(token_logp)
    np.testing.assert_allclose(token_logp.sum(-1), total, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(token_logp, teacher(memory, state, tokens, lengths), rtol=1e-5, atol=1e-5)
    assert np.all(token_logp[np.arange(T)[None] >= lengths[:, None]] == 0.0)


@pytest.mark.parametrize("compact", [False, True])
def test_greedy_token_log_probs_sum_to_its_score_and_equal_teacher_forcing(compact):
    n = 100  # above search.COMPACT_MIN_ROWS: compaction moves the rows' values around
    memory, state = inputs(n, 0)
    caps = jnp.asarray(np.random.default_rng(0).integers(1, T + 1, n), jnp.int32)
    tokens, lengths, total, token_logp = greedy(
        memory, state, max_steps=T, max_lengths=caps, return_log_prob=True, return_token_log_probs=True, compact=compact
    )
    check_against_teacher_forcing(memory, state, tokens, lengths, token_logp, total)
    plain = greedy(memory, state, max_steps=T, max_lengths=caps, compact=compact)
    np.testing.assert_array_equal(plain[0], tokens)  # asking for them changes no output


def test_sampled_token_log_probs_sum_to_its_score_and_equal_teacher_forcing():
    n = 24
    memory, state = inputs(n, 1)
    keys = jax.random.split(jax.random.key(5), n)
    tokens, lengths, total, token_logp = sampler(
        memory, state, keys, max_steps=T, return_log_prob=True, return_token_log_probs=True
    )
    check_against_teacher_forcing(memory, state, tokens, lengths, token_logp, total)
    np.testing.assert_array_equal(sampler(memory, state, keys, max_steps=T)[0], tokens)


@pytest.mark.parametrize("compact", [False, True])
def test_beam_token_log_probs_follow_their_hypothesis(compact):
    n, k, nbest = 40, 3, 3  # 40 sentences of 3 beams: above COMPACT_MIN_ROWS decoder rows
    memory, state = inputs(n, 2)
    caps = jnp.asarray(np.random.default_rng(1).integers(2, T + 1, n), jnp.int32)
    tokens, scores, lengths, token_logp = beam(
        memory,
        state,
        beam_size=k,
        max_steps=T,
        max_length=caps,
        alpha=0.0,
        nbest=nbest,
        return_token_log_probs=True,
        compact=compact,
    )
    plain = beam(memory, state, beam_size=k, max_steps=T, max_length=caps, alpha=0.0, nbest=nbest, compact=compact)
    np.testing.assert_array_equal(plain[0], tokens)
    np.testing.assert_array_equal(plain[1], scores)
    scores = np.asarray(scores).reshape(-1)
    found = np.isfinite(scores)
    assert found.sum() > n  # n-best lists, not only the best
    flat = lambda a: np.asarray(a).reshape((n * nbest,) + a.shape[2:])[found]  # noqa: E731
    repeat = lambda a: jnp.repeat(a, nbest, axis=0)[found]  # noqa: E731
    check_against_teacher_forcing(
        repeat(memory), repeat(state), flat(tokens), flat(lengths), flat(token_logp), scores[found]
    )


# ---------------------------------------------------------------------------
# The inference path: single models and ensembles
# ---------------------------------------------------------------------------

DECODE = TINY_DECODE


def trained_like_model(seed: int):
    model, params = tiny_model(seed)
    # A trained model never emits PAD or BOS (outputs are cut at PAD, their values would not be);
    # a larger output layer and EOS bias give outputs of many lengths, some ended by EOS.
    output = params["decoder"]["output"]
    output["kernel"] = 6.0 * output["kernel"]
    output["bias"] = output["bias"].at[PAD].set(-30.0).at[BOS].set(-30.0).at[EOS].set(0.5)
    return model, params


@pytest.fixture(scope="module", params=[1, 2], ids=["single", "ensemble"])
def engine(request):
    members = [trained_like_model(seed) for seed in range(request.param)]
    rng = np.random.default_rng(0)
    sources = [rng.integers(4, 12, size=rng.integers(1, 9)).tolist() for _ in range(16)]
    sources[3] = []
    if request.param == 1:
        (model, params), srcs = members[0], sources
        return Inference(model, DECODE, max_src_len=10), params, srcs
    models, params = zip(*members)
    return Inference(list(models), DECODE, max_src_len=10, weights=[2.0, 1.0]), tuple(params), (sources, sources)


@pytest.mark.parametrize(
    "opts",
    [
        SearchOptions(with_scores=True, token_scores=True),
        SearchOptions(beam_size=3, nbest=2, alpha=0.0, token_scores=True),
        pytest.param(
            SearchOptions(sample=True, nbest=2, temperature=1.5, with_scores=True, token_scores=True),
            marks=pytest.mark.slow,
        ),
    ],
    ids=["greedy", "beam", "sample"],
)
def test_token_scores_sum_to_the_score_and_equal_the_teacher_forced_ones(engine, opts):
    engine, params, sources = engine
    results = engine.run(params, sources, opts, batch_size=4)
    first = sources if isinstance(sources, list) else sources[0]
    ended = []
    for src, candidates in zip(first, results):
        for c in candidates:
            if not src:
                assert c.tokens == [] and c.token_scores == []
                continue
            assert len(c.token_scores) in (len(c.tokens), len(c.tokens) + 1)
            np.testing.assert_allclose(sum(c.token_scores), c.score, rtol=1e-5, atol=1e-5)
            if len(c.token_scores) == len(c.tokens) + 1:  # ended with EOS: scoring it gives the same terms
                ended.append((src, c))
    assert len(ended) >= 3
    members = len(engine.models)
    srcs = [src for src, _ in ended] if members == 1 else ([src for src, _ in ended],) * members
    scored = engine.score(params, srcs, [c.tokens for _, c in ended])
    for (_, c), s in zip(ended, scored):
        np.testing.assert_allclose(s.token_scores, c.token_scores, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # compiles the searches for more batch shapes
@pytest.mark.parametrize("beam_size", [1, 3])
def test_token_scores_do_not_depend_on_the_batch(engine, beam_size):
    engine, params, sources = engine
    opts = SearchOptions(beam_size=beam_size, nbest=beam_size, alpha=0.0, with_scores=True, token_scores=True)
    batched = engine.run(params, sources, opts, batch_size=8)
    for a, b in zip(engine.run(params, sources, opts, batch_size=1), batched):
        assert [c.tokens for c in a] == [c.tokens for c in b]
        for x, y in zip(a, b):
            np.testing.assert_allclose(x.token_scores, y.token_scores, rtol=1e-5, atol=1e-5)
    reordered = engine.run(params, _reversed(sources), opts, batch_size=4)[::-1]
    assert [[c.tokens for c in r] for r in reordered] == [[c.tokens for c in r] for r in batched]


def _reversed(sources):
    return sources[::-1] if isinstance(sources, list) else tuple(member[::-1] for member in sources)


@pytest.mark.slow  # the search-level tests above check the same on the plain searches
def test_token_scores_leave_the_outputs_and_scores_as_they_are(engine):
    engine, params, sources = engine
    for opts in (SearchOptions(with_scores=True), SearchOptions(beam_size=3, nbest=2)):
        plain = engine.run(params, sources, opts)
        with_values = engine.run(params, sources, dataclasses.replace(opts, token_scores=True))
        assert [[(c.tokens, c.score) for c in r] for r in plain] == [
            [(c.tokens, c.score) for c in r] for r in with_values
        ]
        assert all(c.token_scores is None for r in plain for c in r)


def test_a_forced_prefix_counts_as_certain(engine):
    engine, params, sources = engine
    first = sources if isinstance(sources, list) else sources[0]
    prefixes = [[5, 6] if src else [] for src in first]
    results = engine.run(params, sources, SearchOptions(with_scores=True, token_scores=True), prefixes=prefixes)
    for src, (c,) in zip(first, results):
        if src:
            assert c.token_scores[:2] == [0.0, 0.0]
            np.testing.assert_allclose(sum(c.token_scores), c.score, rtol=1e-5, atol=1e-5)


def test_token_scores_and_the_ngram_check_are_compiled_switches():
    plain, asked = SearchOptions(beam_size=3), SearchOptions(beam_size=3, token_scores=True, no_repeat_ngram=3)
    assert plain.compiled_key() == SearchOptions(beam_size=3, no_repeat_ngram=0).compiled_key()
    assert plain.batch_key() == asked.batch_key()  # they share batches
    assert asked.compiled_key() == SearchOptions(beam_size=3, token_scores=True, no_repeat_ngram=5).compiled_key()
    big, small = BatchShape(asked.compiled_key(), 4, (16,)), BatchShape(plain.compiled_key(), 4, (16,))
    assert big.covers(small) and not small.covers(big)


# ---------------------------------------------------------------------------
# Merging pieces into words
# ---------------------------------------------------------------------------


class PieceTable:
    """A stand-in tokenizer: id i is pieces[i]; detokenizing joins the pieces as sentencepiece does."""

    def __init__(self, pieces: list[str]):
        self.table = pieces

    def pieces(self, ids):
        return [self.table[i] for i in ids]

    def detokenize(self, rows):
        return ["".join(self.table[i] for i in row).replace("\u2581", " ").strip() for row in rows]


def test_word_groups_follow_the_word_marker():
    assert word_scores.word_groups(["\u2581a", "b", "\u2581c", "\u2581", "1", "."]) == [[0, 1], [2], [3, 4, 5]]
    assert word_scores.word_groups(["ab", "c", "\u2581d"]) == [[0, 1], [2]]  # the first piece starts a word
    assert word_scores.word_groups([]) == []


def test_words_sum_their_pieces_and_leave_the_eos_term_out():
    table = PieceTable(["<pad>", "<s>", "</s>", "\u2581the", "\u2581ca", "t", "\u2581", "1", "\u2581sat", "."])
    ids = [3, 4, 5, 6, 7, 8, 9]  # "the cat 1 sat."
    log_probs = [-0.1, -0.5, -0.25, -1.0, -0.5, -2.0, -0.125, -0.3]  # one per id, then the EOS's
    got = word_scores.words(table, ids, log_probs)
    assert [w.text for w in got] == ["the", "cat", "1", "sat."]
    assert [w.log_prob for w in got] == [-0.1, -0.75, -1.5, -2.125]
    assert got[1].prob == pytest.approx(np.exp(-0.75))
    assert word_scores.format_probs(got) == " ".join(f"{np.exp(w.log_prob):.3f}" for w in got)
    assert word_scores.words(table, [], [-0.5]) == []


def test_a_piece_that_renders_as_nothing_joins_the_next_word_or_the_last():
    groups = [[0], [1], [2, 3], [4]]
    got = word_scores.merge(["", "a", "b", " "], groups, [-1.0, -2.0, -3.0, -4.0, -5.0])
    assert [(w.text, w.log_prob) for w in got] == [("a", -3.0), ("b", -12.0)]


# ---------------------------------------------------------------------------
# decode.py and the Translator on a trained workdir
# ---------------------------------------------------------------------------


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_decode_word_scores_column_and_the_translators_words(trained_workdir, tmp_path, capsys):
    from s2s_jax.decoding.translator import Translator

    with open(trained_workdir.paths["valid_src"], encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f.readlines()[:5]] + [""]
    source = tmp_path / "in.txt"
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    translator = Translator(trained_workdir.workdir)
    greedy = SearchOptions(with_scores=True, token_scores=True)
    for opts in (SearchOptions(beam_size=3, alpha=0.0, token_scores=True), greedy):
        for (h,) in translator.translate(lines, opts):
            assert " ".join(w.text for w in h.words) == h.text
            eos = h.token_log_probs[-1] if len(h.token_log_probs) > len(h.tokens) else 0.0
            assert sum(w.log_prob for w in h.words) + eos == pytest.approx(h.score, abs=1e-4)
    status = decode_cli.run(decode_flags(trained_workdir.workdir, input=str(source), word_scores=True, beam_size=3))
    out, err = capsys.readouterr()
    assert status == 0, err
    rows = out.splitlines()
    assert len(rows) == len(lines)
    for row in rows:
        text, probs = row.split("\t")
        assert len(probs.split()) == len(text.split())
        assert all(0.0 <= float(p) <= 1.0 for p in probs.split())
    status = decode_cli.run(
        decode_flags(trained_workdir.workdir, input=str(source), word_scores=True, nbest=2, beam_size=3)
    )
    out, err = capsys.readouterr()
    assert status == 0, err
    assert all(len(row.split("\t")) == 5 for row in out.splitlines())
    reference = tmp_path / "ref.txt"
    reference.write_text("".join(row.split("\t")[0] + "\n" for row in rows), encoding="utf-8")
    status = decode_cli.run(
        decode_flags(trained_workdir.workdir, input=str(source), reference=str(reference), score=True, word_scores=True)
    )
    out, err = capsys.readouterr()
    assert status == 0, err
    for row, hyp in zip(out.splitlines(), rows):
        total, _, probs = row.split("\t")
        assert len(probs.split()) == len(hyp.split("\t")[0].split())
        assert float(total) <= 0.0
