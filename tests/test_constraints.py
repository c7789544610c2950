"""Lexically constrained beam search (s2s_jax/decoding/constraints.py) against exhaustive search,
the unconstrained beam, itself across batches, and through Inference, Translator and decode.py.

The search-level "model" is a tiny random RNN over {PAD, BOS, EOS, 3, 4, 5} that never emits PAD
or BOS (logit -inf), so every output up to a few tokens can be enumerated and scored.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.cli import decode as decode_cli
from s2s_jax.cli.decode_constraints import constrained_search
from s2s_jax.data.constraint_files import Term, TermMatcher, read_constraints, read_terminology
from s2s_jax.decoding import constraints as dba
from s2s_jax.decoding import repetition, search
from s2s_jax.decoding.inference import Inference, SearchOptions
from s2s_jax.decoding.translator import Translator
from s2s_jax.errors import DataError
from tests.helpers import TINY_DECODE, decode_flags, tiny_model

PAD, BOS, EOS = 0, 1, 2
V, H = 6, 8
REAL = (3, 4, 5)
_keys = jax.random.split(jax.random.key(7), 4)
PARAMS = {
    "emb": jax.random.normal(_keys[0], (V, H)),
    "w": jax.random.normal(_keys[1], (H, H)) * 1.2 / np.sqrt(H),
    "out": jax.random.normal(_keys[2], (H, V)) * 1.5,
}
BANNED = jnp.zeros((V,)).at[PAD].set(-jnp.inf).at[BOS].set(-jnp.inf).at[EOS].set(-0.5)


def step_fn(memory, state, tokens):
    h = jnp.tanh(PARAMS["emb"][tokens] + state["h"] @ PARAMS["w"] + memory["ctx"])
    return h @ PARAMS["out"] + memory["bias"] + BANNED, {"h": h}


def make_inputs(n: int, seed: int, eos_bias=0.0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    bias = jax.random.normal(k2, (n, V)).at[:, EOS].add(jnp.broadcast_to(jnp.asarray(eos_bias, jnp.float32), (n,)))
    memory = {"ctx": jax.random.normal(k1, (n, H)), "bias": bias}
    return memory, {"h": 0.5 * jax.random.normal(k3, (n, H))}


def rows(tree, idx):
    return jax.tree.map(lambda x: x[np.asarray(idx)], tree)


def beam(memory, state, cons=None, **kwargs):
    """batch_beam_search, jitted per call (tests change COMPACT_MIN_ROWS)."""
    static = ("beam_size", "max_steps", "nbest", "compact", "return_token_log_probs")
    fn = jax.jit(functools.partial(search.batch_beam_search, step_fn), static_argnames=static)
    packed = None if cons is None else jax.tree.map(jnp.asarray, dba.pack(cons))
    return [np.asarray(x) for x in fn(memory, state, constraints=packed, **kwargs)]


def contains(seq, phrase) -> bool:
    return any(tuple(seq[i : i + len(phrase)]) == tuple(phrase) for i in range(len(seq) - len(phrase) + 1))


def matched(seq, phrase) -> int:
    """The phrase's length if seq contains it, else its longest prefix that seq ends with."""
    if contains(seq, phrase):
        return len(phrase)
    return max((n for n in range(len(phrase)) if n == 0 or tuple(seq[-n:]) == tuple(phrase[:n])), default=0)


# ----------------------------------------------------------------------------
# The phrase tracker
# ----------------------------------------------------------------------------


def test_progress_is_the_longest_phrase_prefix_that_ends_the_output():
    """Knuth-Morris-Pratt per phrase: after every token, each phrase's progress is its longest prefix
    the output ends with, or its length once it has appeared (phrases with repeats: 'a a b' in 'a a a b')."""
    rng = random.Random(0)
    for _ in range(30):
        phrases = [[rng.choice((3, 4)) for _ in range(rng.randint(1, 5))] for _ in range(rng.randint(1, 4))]
        phrases = dba.phrase_set(phrases)
        cons = jax.tree.map(lambda x: jnp.asarray(x[0]), dba.pack([phrases]))
        output, progress = [], jnp.zeros(cons.lengths.shape, jnp.int32)
        for _ in range(12):
            output.append(rng.choice((3, 4, 5)))
            progress = dba.advance(cons, progress, jnp.int32(output[-1]))
            want = [matched(output, p) for p in phrases] + [0] * (len(cons.lengths) - len(phrases))
            assert np.asarray(progress).tolist() == want, (phrases, output)


def test_pack_pads_to_powers_of_two_and_refuses_too_many_tokens():
    packed = dba.pack([[[3, 4, 5]], [[3], [4], [3]], []])
    assert packed.tokens.shape == (3, 2, 4)  # 2 distinct phrases at most, 3 tokens padded to 4
    assert packed.lengths.tolist() == [[3, 0], [1, 1], [0, 0]]
    assert dba.pack([[]]).tokens.shape == (1, dba.MIN_SIZE, dba.MIN_SIZE)
    dba.pack([[[3] * dba.MAX_TOKENS]])
    with pytest.raises(ValueError, match=f"33 constraint tokens, at most {dba.MAX_TOKENS}"):
        dba.pack([[], [[3] * 20, [4] * 13]])


# ----------------------------------------------------------------------------
# (a) Against exhaustive search
# ----------------------------------------------------------------------------

L = 5  # every output up to 5 tokens: 3^0 + ... + 3^4 ending in EOS, 3^5 cut at the cap


def all_outputs():
    seqs = [list(p) + [EOS] for n in range(L) for p in itertools.product(REAL, repeat=n)]
    seqs += [list(p) for p in itertools.product(REAL, repeat=L)]
    tokens = np.full((len(seqs), L), PAD, np.int32)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = s
    return seqs, tokens, np.asarray([len(s) for s in seqs], np.int32)


SEQS, ALL_TOKENS, ALL_LENGTHS = all_outputs()
seq_logp = jax.jit(functools.partial(search.sequence_log_prob, step_fn))


def exhaustive(memory, state, phrases, alpha):
    """Every output of one sentence: (tokens without EOS, normalised score, matched constraint tokens)."""
    n = len(SEQS)
    logp = np.asarray(seq_logp(rows(memory, [0] * n), rows(state, [0] * n), ALL_TOKENS, ALL_LENGTHS))
    scores = logp / ((5.0 + ALL_LENGTHS) / 6.0) ** alpha
    words = [[t for t in s if t != EOS] for s in SEQS]
    return words, scores, [bank(w, phrases) for w in words]


def bank(words, phrases) -> int:
    """Matched constraint tokens: the met phrases' and the longest partial match."""
    met = sum(len(p) for p in phrases if contains(words, p))
    return met + max((matched(words, p) for p in phrases if not contains(words, p)), default=0)


CONSTRAINT_SETS = [[[4]], [[3, 4]], [[5], [3, 3]], [[4, 4, 3]], [[3, 5], [5, 4]], [[3], [4], [5]]]


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_wide_constrained_beam_is_exhaustive_search_over_the_outputs_that_contain_the_constraints(alpha):
    """With a beam wider than the number of outputs, the n best of the constrained search are the n
    best of all outputs (up to L tokens) that contain every phrase, scores included."""
    nbest, n = 4, len(CONSTRAINT_SETS)
    memory, state = make_inputs(n, seed=3)
    tokens, scores, lengths, met = beam(
        memory, state, CONSTRAINT_SETS, beam_size=256, max_steps=L, nbest=nbest, alpha=alpha
    )
    assert met.all()
    for i, phrases in enumerate(CONSTRAINT_SETS):
        words, all_scores, _ = exhaustive(rows(memory, [i]), rows(state, [i]), phrases, alpha)
        good = [j for j in range(len(words)) if all(contains(words[j], p) for p in phrases)]
        good.sort(key=lambda j: -all_scores[j])
        assert len(good) > nbest
        got = [[t for t in tokens[i, r, : lengths[i, r]] if t != EOS] for r in range(nbest)]
        assert got == [words[j] for j in good[:nbest]], phrases
        np.testing.assert_allclose(scores[i], [all_scores[j] for j in good[:nbest]], rtol=1e-5, atol=1e-5)
    # The constraints do change the answer: unconstrained, some best outputs lack them.
    free = beam(memory, state, beam_size=256, max_steps=L, nbest=1, alpha=alpha)
    assert (free[0][:, 0] != tokens[:, 0]).any()


def test_constraints_that_do_not_fit_return_the_best_partial_output_flagged():
    """Phrases longer than the length cap: no output contains them; the search returns the output
    (cut at the cap) with the most constraint tokens matched, best score among those, flagged."""
    phrases = [[3, 4, 5], [4, 4, 4]]  # 6 tokens (they cannot overlap) > L
    memory, state = make_inputs(3, seed=4)
    tokens, scores, lengths, met = beam(memory, state, [phrases] * 3, beam_size=256, max_steps=L, alpha=0.0)
    assert not met.any() and (lengths[:, 0] == L).all()
    for i in range(3):
        words, all_scores, all_met = exhaustive(rows(memory, [i]), rows(state, [i]), phrases, 0.0)
        cut = [j for j in range(len(words)) if len(words[j]) == L]
        best = max(cut, key=lambda j: (all_met[j], all_scores[j]))
        assert tokens[i, 0].tolist() == words[best]
        np.testing.assert_allclose(scores[i, 0], all_scores[best], rtol=1e-5, atol=1e-5)


def test_phrases_that_start_alike_are_all_placed_by_a_narrow_beam():
    """Two long phrases with the same first token: a beam of 4 must step along one, then the other
    (the bank counts the longest partial match, not every phrase the token starts)."""
    vocab, hidden = 30, 16
    k = jax.random.split(jax.random.key(0), 4)
    emb, w, out = (
        jax.random.normal(k[0], (vocab, hidden)),
        jax.random.normal(k[1], (hidden, hidden)) * 0.5,
        jax.random.normal(k[2], (hidden, vocab)),
    )

    def wide_step(memory, state, tokens):
        h = jnp.tanh(emb[tokens] + state["h"] @ w + memory["c"])
        return (h @ out).at[:, :2].set(-jnp.inf), {"h": h}

    memory, state = {"c": jax.random.normal(k[3], (4, hidden))}, {"h": jnp.zeros((4, hidden))}
    phrases = [[5, 6, 7, 8, 9, 10, 11], [5, 12, 13, 14, 7, 15]]
    packed = jax.tree.map(jnp.asarray, dba.pack([phrases] * 4))
    tokens, _, lengths, met = search.batch_beam_search(
        wide_step, memory, state, beam_size=4, max_steps=15, constraints=packed
    )
    assert np.asarray(met).all()
    for row, n in zip(np.asarray(tokens[:, 0]), np.asarray(lengths[:, 0])):
        assert all(contains(row[:n].tolist(), p) for p in phrases)


# ----------------------------------------------------------------------------
# (b) No constraints: today's beam search
# ----------------------------------------------------------------------------

N, T = 32, 9
MEMORY, STATE = make_inputs(N, seed=1, eos_bias=np.linspace(-2, 3, N))
CAPS = jnp.asarray(np.random.default_rng(0).integers(1, T + 1, N), jnp.int32)


@pytest.mark.parametrize("compact_rows", [64, pytest.param(4, marks=pytest.mark.slow)])
def test_without_phrases_the_constrained_search_is_the_unconstrained_one(monkeypatch, compact_rows):
    """Sentences with no phrase run through the constrained code (bank allocation, candidates,
    finished ranking) pick exactly what batch_beam_search picks: tokens, lengths and scores bit for
    bit, the n-best order and empty slots included, with and without compaction stages."""
    monkeypatch.setattr(search, "COMPACT_MIN_ROWS", compact_rows)
    kwargs = dict(max_length=CAPS, beam_size=4, max_steps=T, nbest=3, alpha=jnp.linspace(0, 1.5, N))
    plain = beam(MEMORY, STATE, **kwargs)
    constrained = beam(MEMORY, STATE, [[]] * N, **kwargs)
    for a, b in zip(plain, constrained):
        np.testing.assert_array_equal(a, b)
    assert constrained[3].all()
    assert len(set(plain[2][:, 0].tolist())) > 4  # sentences of many lengths


# ----------------------------------------------------------------------------
# (d) Batch and order invariance, early stopping, compaction
# ----------------------------------------------------------------------------


def random_constraints(n: int, seed: int) -> list[list[list[int]]]:
    rng = random.Random(seed)
    return [[[rng.choice(REAL) for _ in range(rng.randint(1, 4))] for _ in range(rng.randint(0, 3))] for _ in range(n)]


CONS = random_constraints(N, seed=2)
BEAM_KW = dict(beam_size=5, max_steps=T, nbest=2, alpha=0.6)


@pytest.fixture(scope="module")
def constrained_out():
    return beam(MEMORY, STATE, CONS, max_length=CAPS, **BEAM_KW)


def test_constrained_outputs_contain_their_phrases_unless_flagged(constrained_out):
    tokens, scores, lengths, met = constrained_out
    for i, phrases in enumerate(CONS):
        for r in range(BEAM_KW["nbest"]):
            words = [t for t in tokens[i, r, : lengths[i, r]] if t != EOS]
            if met[i, r]:
                assert all(contains(words, p) for p in phrases)
                assert tokens[i, r, lengths[i, r] - 1] == EOS or lengths[i, r] == CAPS[i]
            else:
                assert lengths[i, r] == CAPS[i] and not all(contains(words, p) for p in phrases)
    assert met[:, 0].sum() > N // 2 and not met[:, 0].all()  # most fit their caps, some do not
    assert np.all(np.diff(np.where(met, scores, -np.inf)[met[:, 1]], axis=1) <= 0)


@pytest.mark.slow
def test_constrained_search_is_batch_and_order_invariant(constrained_out, monkeypatch):
    """A sentence's output does not depend on the other sentences of its batch, their phrases (which
    set the padded phrase count and length) or their order; with compaction stages too."""
    tokens, scores, lengths, met = constrained_out
    for i in (0, 5, 17, 31):
        alone = beam(rows(MEMORY, [i]), rows(STATE, [i]), [CONS[i]], max_length=CAPS[i : i + 1], **BEAM_KW)
        np.testing.assert_array_equal(alone[0][0], tokens[i])
        np.testing.assert_array_equal(alone[2][0], lengths[i])
        np.testing.assert_array_equal(alone[3][0], met[i])
        np.testing.assert_allclose(alone[1][0], scores[i], rtol=1e-5)
    monkeypatch.setattr(search, "COMPACT_MIN_ROWS", 5)  # stages of 32, 16, 8, 4, 2 and 1 sentences
    perm = np.random.default_rng(1).permutation(N)
    shuffled = beam(rows(MEMORY, perm), rows(STATE, perm), [CONS[i] for i in perm], max_length=CAPS[perm], **BEAM_KW)
    for got, want in zip(shuffled, constrained_out):
        np.testing.assert_array_equal(got, want[perm]) if got.dtype != np.float32 else np.testing.assert_allclose(
            got, want[perm], rtol=1e-5
        )


def test_token_log_probs_ride_with_the_constrained_hypotheses(constrained_out):
    """With token log-probabilities asked, the constrained search finds the same outputs, and each
    output's token terms are the model's log-probabilities of its tokens (teacher forcing), whose
    sum over the length penalty is its score."""
    tokens, scores, lengths, token_logp, met = beam(
        MEMORY, STATE, CONS, max_length=CAPS, return_token_log_probs=True, **BEAM_KW
    )
    np.testing.assert_array_equal(tokens, constrained_out[0])
    np.testing.assert_array_equal(met, constrained_out[3])
    np.testing.assert_allclose(scores, constrained_out[1], rtol=1e-5)
    for r in range(BEAM_KW["nbest"]):
        forced = np.asarray(search.token_log_probs(step_fn, MEMORY, STATE, tokens[:, r], lengths[:, r]))
        np.testing.assert_allclose(token_logp[:, r], forced, rtol=1e-4, atol=1e-5)
        penalty = ((5.0 + lengths[:, r]) / 6.0) ** BEAM_KW["alpha"]
        np.testing.assert_allclose(token_logp[:, r].sum(axis=1) / penalty, scores[:, r], rtol=1e-4)


def test_no_repeat_ngram_holds_in_the_constrained_search_too():
    """No output of the constrained search repeats a 2-gram, even where a phrase would need it (that
    output is then partial, flagged); the others contain their phrases."""
    tokens, scores, lengths, met = beam(MEMORY, STATE, CONS, max_length=CAPS, no_repeat_ngram=2, **BEAM_KW)
    for i, phrases in enumerate(CONS):
        for r in range(BEAM_KW["nbest"]):
            words = [t for t in tokens[i, r, : lengths[i, r]] if t != EOS]
            if not np.isfinite(scores[i, r]):
                continue
            assert repetition.repeated_ngrams(words, 2) == []
            assert not met[i, r] or all(contains(words, p) for p in phrases)
    assert met[:, 0].sum() > N // 4


def test_early_stopping_fires_and_does_not_change_the_constrained_outputs(monkeypatch):
    """A sentence stops once no live hypothesis can beat its K-th finished complete one (sentences of
    short outputs do, well before their cap); searching each to its cap instead finds the same outputs."""
    calls = []

    def counting(memory, state, tokens):
        jax.debug.callback(lambda: calls.append(None))
        return step_fn(memory, state, tokens)

    memory, state = make_inputs(8, seed=5, eos_bias=3.0)
    phrases = [[[REAL[i % 3]], [REAL[i % 2], REAL[i % 3]]] for i in range(8)]  # one padded shape for all

    def each_alone():
        fn = jax.jit(functools.partial(search.batch_beam_search, counting), static_argnames=("beam_size", "max_steps"))
        steps, outs = [], []
        for i in range(8):
            calls.clear()
            packed = jax.tree.map(jnp.asarray, dba.pack([phrases[i]]))
            outs.append(
                jax.block_until_ready(
                    fn(rows(memory, [i]), rows(state, [i]), constraints=packed, beam_size=3, max_steps=12)
                )
            )
            steps.append(len(calls))
        return steps, outs

    steps, outs = each_alone()
    monkeypatch.setattr(dba, "floor", lambda s, cons: jnp.float32(-jnp.inf))
    full_steps, full_outs = each_alone()
    assert min(steps) < 8 and full_steps == [12] * 8, (steps, full_steps)
    for got, want in zip(full_outs, outs):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------
# Constraint files
# ----------------------------------------------------------------------------


def test_constraints_file_gives_each_input_line_its_phrases(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("ein Hund\tred\n\n  blue  \n", encoding="utf-8")
    assert read_constraints(str(path), 3) == [["ein Hund", "red"], [], ["blue"]]


@pytest.mark.parametrize(
    "content, lines, message",
    [
        ("a\nb\n", 3, r"c.tsv:2: 2 lines of constraints for an input of 3 lines"),
        ("a\nb\nc\nd\n", 3, r"c.tsv:4: 4 lines of constraints for an input of 3 lines"),
        ("a\nb\t\tc\n\n", 3, r"c.tsv:2: phrase 2 is empty"),
    ],
)
def test_a_bad_constraints_file_is_one_error_naming_file_and_line(tmp_path, content, lines, message):
    path = tmp_path / "c.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_constraints(str(path), lines)


@pytest.mark.parametrize(
    "content, message",
    [
        ("Hund\tdog\nKatze cat\n", r"d.tsv:2: expected 'source term<TAB>target term'"),
        ("Hund\tdog\n\nHaus\thouse\tthing\n", r"d.tsv:3: expected"),
        ("Hund\t \n", r"d.tsv:1: expected"),
        ("Hund\tdog\nHund\thound\n", r"d.tsv:2: the source term 'Hund' is already on line 1"),
    ],
)
def test_a_bad_terminology_file_is_one_error_naming_file_and_line(tmp_path, content, message):
    path = tmp_path / "d.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_terminology(str(path))


def test_terms_match_whole_words_after_normalisation_longest_first():
    terms = [Term("Hund", "dog", 1), Term("roter Hund", "red dog", 2), Term("Katze", "cat", 3)]
    match = TermMatcher(terms, lambda texts: [t.lower() for t in texts])
    found = match(["Ein ROTER Hund.", "Hunde und Katzen", "die Katze, der Hund", ""])
    assert [[t.target for t in row] for row in found] == [["red dog"], [], ["cat", "dog"], []]


# ----------------------------------------------------------------------------
# Through Inference (tiny seq2seq models, an ensemble too)
# ----------------------------------------------------------------------------

DECODE = TINY_DECODE


@pytest.fixture(scope="module")
def tiny():
    model, params = tiny_model(0)
    rng = np.random.default_rng(0)
    sources = [rng.integers(4, 12, size=rng.integers(1, 9)).tolist() for _ in range(11)]
    sources[4] = []
    phrases = [[rng.integers(4, 12, size=rng.integers(1, 3)).tolist() for _ in range(i % 3)] for i in range(11)]
    phrases[4] = [[5]]  # an empty source with a phrase: an empty output that lacks it
    return Inference(model, DECODE, max_src_len=10), params, sources, phrases


def as_lists(results):
    return [[(c.tokens, c.constraints_met) for c in r] for r in results], [[c.score for c in r] for r in results]


@pytest.mark.slow
def test_inference_keeps_unconstrained_sources_on_the_plain_search_and_is_batch_invariant(tiny):
    """Sources without phrases get what a run without constraints gives them, those with phrases get
    outputs that contain them (or say they do not), whatever the batch size and order."""
    engine, params, sources, phrases = tiny
    opts = SearchOptions(beam_size=3, nbest=2)
    plain = engine.run(params, sources, opts, batch_size=16)
    one_by_one = engine.run(params, sources, opts, batch_size=1, constraints=phrases)
    batched = engine.run(params, sources, opts, batch_size=16, constraints=phrases)
    reordered = engine.run(params, sources[::-1], opts, batch_size=4, constraints=phrases[::-1])[::-1]
    for got in (batched, reordered):
        assert as_lists(got)[0] == as_lists(one_by_one)[0]
        np.testing.assert_allclose(as_lists(got)[1], as_lists(one_by_one)[1], rtol=1e-5, atol=1e-5)
    for i, (src, wanted) in enumerate(zip(sources, phrases)):
        if not wanted:
            assert batched[i] == plain[i]
            continue
        for c in batched[i]:
            assert c.constraints_met == (bool(src) and all(contains(c.tokens, p) for p in wanted)), i
    assert batched[4][0].tokens == [] and not batched[4][0].constraints_met
    assert sum(r[0].constraints_met for i, r in enumerate(batched) if phrases[i]) >= 5


def test_an_ensemble_searches_with_constraints_too(tiny):
    _, _, sources, phrases = tiny
    (m1, p1), (m2, p2) = tiny_model(1), tiny_model(2)
    engine = Inference([m1, m2], DECODE, max_src_len=10, weights=[2, 1])
    out = engine.run((p1, p2), (sources, sources), SearchOptions(beam_size=3), constraints=phrases)
    for (best,), wanted, src in zip(out, phrases, sources):
        if src and best.constraints_met:
            assert all(contains(best.tokens, p) for p in wanted)
    assert sum(r[0].constraints_met for i, r in enumerate(out) if phrases[i] and sources[i]) >= 5


@pytest.mark.parametrize(
    "opts, constraints, message",
    [
        (SearchOptions(), [[[5]]] * 11, "constraints need beam search with beam_size >= 2"),
        (SearchOptions(sample=True, with_scores=True), [[[5]]] * 11, "constraints need beam search"),
        (SearchOptions(beam_size=2), [[[5]]] * 10, "10 constraint lists for 11 sources"),
        (SearchOptions(beam_size=2), [[]] * 10 + [[[5] * 20, [6] * 13]], "source 10: its constraints have 33"),
    ],
)
def test_inference_refuses_constraints_it_cannot_search(tiny, opts, constraints, message):
    engine, params, sources, _ = tiny
    with pytest.raises(ValueError, match=message):
        engine.run(params, sources, opts, constraints=constraints)
    engine.run(params, sources, opts, constraints=[[]] * 11)  # no phrase at all: nothing to refuse


# ----------------------------------------------------------------------------
# Translator and decode.py on the trained toy model (train.py, ~20 s)
# ----------------------------------------------------------------------------

SENTENCES = ["the red cat sees a dog", "a small house", "the big car likes the blue dog", "dog"]


@pytest.mark.slow
def test_constraints_of_pieces_never_seen_together_come_out_verbatim(trained_workdir):
    """Phrases whose pieces never follow each other in the training targets (made-up words from the
    toy language's letters) appear in the detokenized translation exactly as given."""
    translator = Translator(trained_workdir.workdir)
    wanted = [["godtac"], ["oder"], [], ["tacod"]]
    wanted[0].append("esuoh")  # 13 pieces with "godtac", the cap of line 1 is 15
    warnings = []
    hyps = translator.translate(
        SENTENCES, SearchOptions(beam_size=4, nbest=2), constraints=wanted, warn=warnings.append
    )
    pieces = translator.tgt_tokenizer.pieces
    assert len(translator.constraint_ids([["godtac"]])[0][0]) > 1  # several pieces
    for line, phrases, h in zip(SENTENCES, wanted, hyps):
        for phrase in phrases:
            assert phrase in h[0].text, (line, phrase, h[0].text, pieces(h[0].tokens))
        assert h[0].constraints_met
    assert warnings == []
    plain = translator.translate(SENTENCES, SearchOptions(beam_size=4, nbest=2))
    assert [h[0].text for h in hyps][2] == plain[2][0].text  # no phrases: the plain beam's translation
    assert all(p not in h[0].text for ps, h in zip(wanted, plain) for p in ps)


def decode(capsys, workdir, **overrides):
    status = decode_cli.run(decode_flags(workdir, **overrides))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def input_file(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.slow
def test_decode_constraints_and_terminology(trained_workdir, input_file, tmp_path, capsys):
    cons, terms = tmp_path / "c.tsv", tmp_path / "t.tsv"
    cons.write_text("godtac\n\nesuoh\n\n", encoding="utf-8")
    terms.write_text("big car\tracgib\ndog\tgodo\nsmall houses\tesuohllams\n", encoding="utf-8")
    status, out, err = decode(
        capsys, trained_workdir.workdir, input=input_file, constraints=str(cons), terminology=str(terms), beam_size=3
    )
    assert status == 0 and err == "", err
    lines = out.splitlines()
    assert "godtac" in lines[0] and "godo" in lines[0].split()  # "dog" is a whole word of line 1: the term matches
    assert "esuohllams" not in lines[1]  # "small houses" is not in "a small house"
    assert "esuoh" in lines[2] and "racgib" in lines[2] and "godo" in lines[2].split()
    assert "godo" in lines[3].split()


@pytest.mark.slow
@pytest.mark.parametrize(
    "files, flags, message",
    [
        ({"c": "a\nb\n"}, {}, r"error: {c}:2: 2 lines of constraints for an input of 4 lines"),
        ({"c": "a\nb\t\n\n\n"}, {}, r"error: {c}:2: phrase 2 is empty"),
        ({"c": "\n\n" + "dog " * 40 + "\n\n"}, {}, r"error: {c}:3: the phrases have \d+ target tokens, at most 32"),
        ({"t": "dog\tgodo\ncar racgib\n"}, {}, r"error: {t}:2: expected 'source term<TAB>target term'"),
        ({"t": "dog\t" + "godo " * 40 + "\n"}, {}, r"error: {t}:1: the target term has \d+ tokens, at most 32"),
        ({"c": "a\n\n\n\n"}, {"beam_size": 1}, r"error: --constraints and --terminology need beam search"),
        ({"t": "dog\tgodo\n"}, {"sample": True}, r"error: --constraints and --terminology need beam search"),
    ],
)
def test_a_bad_constraints_or_terminology_file_is_one_error_line(
    trained_workdir, input_file, tmp_path, capsys, files, flags, message
):
    paths = {}
    for key, content in files.items():
        paths[key] = str(tmp_path / f"{key}.tsv")
        open(paths[key], "w", encoding="utf-8").write(content)
    overrides = {"beam_size": 3, "constraints": paths.get("c"), "terminology": paths.get("t"), **flags}
    status, out, err = decode(capsys, trained_workdir.workdir, input=input_file, **overrides)
    assert status == 1 and out == ""
    assert len(err.splitlines()) == 1 and re.match(message.format(**paths), err), err


@pytest.mark.slow
def test_constraints_that_cannot_fit_the_length_cap_warn_naming_the_line(trained_workdir, input_file, tmp_path, capsys):
    cons = tmp_path / "c.tsv"
    cons.write_text("\n\n\n" + "godo " * 8 + "\n", encoding="utf-8")  # line 4 ("dog"): a cap of 7 tokens
    status, out, err = decode(capsys, trained_workdir.workdir, input=input_file, constraints=str(cons), beam_size=3)
    assert status == 0 and len(out.splitlines()) == 4
    assert err.splitlines() == [
        "warning: line 4: no translation with every constraint fits within the length cap; "
        "the best partial one is returned"
    ]


# ----------------------------------------------------------------------------
# The server (a serve.py process on the trained toy model)
# ----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_server_takes_constraints_per_text(trained_workdir):
    from tests.serving_helpers import Server

    translator = Translator(trained_workdir.workdir)
    args = ("--max_batch=4", "--beam_sizes=1,3", "--max_nbest=2")
    server = Server(trained_workdir.workdir, *args, cache=trained_workdir.cache).wait_ready()
    try:
        texts, wanted = SENTENCES[:3], [["godtac"], [], ["racgib", "oder"]]
        response = server.post({"text": texts, "beam_size": 3, "nbest": 2, "constraints": wanted})
        assert response.status_code == 200, response.text
        got = response.json()["translations"]
        want = translator.translate(texts, SearchOptions(beam_size=3, nbest=2, with_scores=True), constraints=wanted)
        assert [t["text"] for t in got] == [h[0].text for h in want]
        assert [t["constraints_met"] for t in got] == [True, None, True]
        assert "godtac" in got[0]["text"] and "racgib" in got[2]["text"] and "oder" in got[2]["text"]
        partial = server.post({"text": "dog", "beam_size": 3, "constraints": [["godo " * 8]]}).json()
        assert partial["translations"][0]["constraints_met"] is False
        # What the schema cannot say is not an error (as nbest above the beam size widens the beam):
        # texts past the lists have none; constraints make a beam search of at least 2 (beam 1 widens to
        # 3 here, sampling is ignored); phrases past the cap of 32 tokens are left out.
        fewer = server.post({"text": texts, "beam_size": 3, "constraints": [["godtac"]]}).json()["translations"]
        assert [t["constraints_met"] for t in fewer] == [True, None, None]
        plain = translator.translate(texts[2:], SearchOptions(beam_size=3))[0][0].text
        assert fewer[0]["text"] == got[0]["text"] and fewer[2]["text"] == plain
        beam3 = translator.translate(texts[:1], SearchOptions(beam_size=3), constraints=[["godtac"]])[0][0].text
        plain_b = translator.translate(texts[1:2], SearchOptions(beam_size=3))[0][0].text
        for settings in ({"beam_size": 1}, {"sample": True, "seed": 1}, {}):
            one = server.post({"text": texts[0], "constraints": [["godtac"]], **settings}).json()["translations"][0]
            assert one["text"] == beam3 and one["constraints_met"] is True, settings
        capped = server.post({"text": texts[0], "beam_size": 3, "constraints": [["godtac", "dog " * 40]]}).json()
        assert capped["translations"][0]["text"] == beam3 and capped["translations"][0]["constraints_met"] is False
        # Only a text with constraints is beam-searched: the others sample as they would without them.
        # (a seed whose sample of text 1 differs from its beam search, so that the two are told apart)
        sampled = next(
            request
            for request in ({"text": texts[:2], "sample": True, "seed": s} for s in range(8))
            if server.post(request).json()["translations"][1]["text"] != plain_b
        )
        mixed = server.post({**sampled, "constraints": [["godtac"]]}).json()["translations"]
        alone = server.post(sampled).json()["translations"]
        assert mixed[0]["text"] == beam3 and mixed[0]["constraints_met"] is True
        assert mixed[1]["text"] == alone[1]["text"] and mixed[1]["constraints_met"] is None
        dropped = server.post({"text": texts[0], "beam_size": 3, "constraints": [["dog " * 40]]}).json()
        assert dropped["translations"][0]["constraints_met"] is False  # its only phrase left out: not met either
        for payload in ({"text": "a", "constraints": [["a"] * 9]}, {"text": "a", "constraints": [["a" * 201]]}):
            response = server.post(payload)
            assert response.status_code == 422 and response.json()["field"].startswith("constraints"), response.text
        assert server.post({"text": "a", "beam_size": 1, "constraints": [[" "]]}).status_code == 200  # no phrase
    finally:
        assert server.stop() == 0, server.output


def test_the_benchmark_picks_one_or_two_reference_words_the_output_lacks():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "constraints.py"
    spec = importlib.util.spec_from_file_location("constraints_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    outputs = ["A dog runs on the grass.", "Two men.", "A cat."]
    refs = ["A brown dog runs across the lawn.", "Two men.", "The cat sleeps, a cat."]
    picked = bench.pick_constraints(outputs, refs, seed=0)
    assert picked == bench.pick_constraints(outputs, refs, seed=0)
    assert 1 <= len(picked[0]) <= 2 and set(picked[0]) <= {"brown", "across", "lawn"}
    assert picked[1] == [] and set(picked[2]) <= {"The", "sleeps"}


@pytest.mark.parametrize("flag", ["mbr", "split_sentences"])
def test_decode_refuses_constraints_with_what_would_undo_them(flag):
    """A line's constraints hold for its one search: not with MBR's ranking or a line cut in sentences."""
    flags = types.SimpleNamespace(constraints="c.txt", terminology=None, mbr=0, split_sentences=False)
    setattr(flags, flag, 16 if flag == "mbr" else True)
    with pytest.raises(ValueError, match=f"not with --{flag}"):
        constrained_search(flags, SearchOptions(beam_size=5))
