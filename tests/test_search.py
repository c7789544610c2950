"""Search against brute force, a plain-Python beam, greedy, and itself across batch shapes.

The "model" is a tiny random RNN in pure JAX: logits depend on the whole
prefix (through the recurrent state) and on a per-row memory, and PAD/BOS are
never emitted (logit -1e9), so the real outputs are {EOS, 3, 4, 5}.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.decoding import search

PAD, BOS, EOS = 0, 1, 2
V, H, M = 6, 8, 3
REAL = (3, 4, 5)

_keys = jax.random.split(jax.random.key(0), 4)
PARAMS = {
    "emb": jax.random.normal(_keys[0], (V, H)),
    "w": jax.random.normal(_keys[1], (H, H)) * 1.2 / np.sqrt(H),
    "p": jax.random.normal(_keys[2], (M, H)),
    "out": jax.random.normal(_keys[3], (H, V)) * 1.5,
}
# Never PAD or BOS; EOS a little less likely, for longer outputs.
BANNED = jnp.zeros((V,)).at[PAD].set(-1e9).at[BOS].set(-1e9).at[EOS].set(-1.0)


def step_fn(memory, state, tokens):
    """Two state leaves (an RNN state and a decaying sum of inputs), so beam gathers a pytree."""
    x = PARAMS["emb"][tokens]
    h = jnp.tanh(x + state["h"] @ PARAMS["w"] + memory["ctx"] @ PARAMS["p"])
    s = 0.5 * state["s"] + x
    logits = (h + 0.3 * s) @ PARAMS["out"] + memory["bias"] + BANNED
    return logits, {"h": h, "s": s}


def make_inputs(n, seed, bias_scale=1.0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    bias_scale = jnp.broadcast_to(jnp.asarray(bias_scale, jnp.float32), (n,))[:, None]
    memory = {
        "ctx": jax.random.normal(k1, (n, M)),
        "bias": jax.random.normal(k2, (n, V)) * bias_scale,
    }
    state = {"h": 0.5 * jax.random.normal(k3, (n, H)), "s": jnp.zeros((n, H))}
    return memory, state


def rows(tree, idx):
    """Row `idx` (an int drops the batch dim; a list keeps it)."""
    idx = np.asarray(idx)
    return jax.tree.map(lambda x: x[idx], tree)


def repeat_rows(tree, n):
    return jax.tree.map(lambda x: jnp.repeat(x, n, axis=0), tree)


# Module-level jitted functions: each (static args, shapes) compiles once for the file.
greedy = jax.jit(
    functools.partial(search.greedy_search, step_fn), static_argnames=("max_steps", "min_length", "return_log_prob")
)
beam_one = jax.jit(
    functools.partial(search.beam_search, step_fn),
    static_argnames=("beam_size", "max_steps", "nbest", "min_length"),
)
beam_batch = jax.jit(
    functools.partial(search.batch_beam_search, step_fn),
    static_argnames=("beam_size", "max_steps", "nbest", "min_length"),
)
sampler = jax.jit(
    functools.partial(search.sample, step_fn),
    static_argnames=("max_steps", "top_k", "top_p", "min_length", "return_log_prob"),
)


def sample_shared(rng, **kwargs):
    """Samples the shared batch (below) with its caps."""
    return sampler(MEMORY, STATE, rng, max_steps=T, max_lengths=CAPS, **kwargs)


seq_logp = jax.jit(functools.partial(search.sequence_log_prob, step_fn))
tf_logits = jax.jit(functools.partial(search.teacher_forced_logits, step_fn))

# The shared batch: 32 rows with very different memories and length caps.
N, T = 32, 8
MEMORY, STATE = make_inputs(N, seed=1, bias_scale=jnp.linspace(0.1, 3.0, N))
CAPS = jnp.asarray(np.random.default_rng(0).integers(1, T + 1, N), jnp.int32)


def lp(lengths, alpha):
    return ((5.0 + np.asarray(lengths, np.float64)) / 6.0) ** alpha


def check_ended_properly(tokens, lengths, caps, min_length=0):
    """Each row: no PAD/EOS before its end, EOS or its cap at the end, PAD after it."""
    tokens, lengths, caps = np.asarray(tokens), np.asarray(lengths), np.asarray(caps)
    for row, length, cap in zip(tokens, lengths, caps):
        assert 0 <= length <= cap
        assert np.all(row[length:] == PAD)
        assert not np.any(np.isin(row[: max(length - 1, 0)], (PAD, EOS)))
        if length:
            assert row[length - 1] == EOS or length == cap
            assert row[length - 1] != PAD
            if row[length - 1] == EOS:
                assert length > min_length


def check_is_argmax(memory, state, tokens, lengths, min_length=0):
    """Re-run the model on the output prefix: every emitted token is that step's argmax."""
    logits = np.array(tf_logits(memory, state, tokens))
    logits[:, :min_length, EOS] = -np.inf
    best = logits.argmax(-1)
    within = np.arange(tokens.shape[1])[None] < np.asarray(lengths)[:, None]
    np.testing.assert_array_equal(np.where(within, best, PAD), tokens)


# ----------------------------------------------------------------------------
# Greedy
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def greedy_out():
    return greedy(MEMORY, STATE, max_steps=T, max_lengths=CAPS)


def test_greedy_is_argmax_and_respects_caps(greedy_out):
    tokens, lengths = greedy_out
    check_ended_properly(tokens, lengths, CAPS)
    check_is_argmax(MEMORY, STATE, tokens, lengths)
    ends_with_eos = np.asarray(tokens)[np.arange(N), np.asarray(lengths) - 1] == EOS
    assert ends_with_eos.any() and (~ends_with_eos).any(), "want rows stopped by EOS and by caps"
    assert np.any(np.asarray(lengths) < np.asarray(CAPS))


def test_greedy_min_length():
    tokens, lengths = greedy(MEMORY, STATE, max_steps=T, max_lengths=CAPS, min_length=3)
    check_ended_properly(tokens, lengths, CAPS, min_length=3)
    check_is_argmax(MEMORY, STATE, tokens, lengths, min_length=3)
    np.testing.assert_array_equal(lengths >= jnp.minimum(CAPS, 4), True)
    # min_length = max_steps: no EOS at all, every row runs to its cap (the benchmark's use).
    tokens, lengths = greedy(MEMORY, STATE, max_steps=T, max_lengths=CAPS, min_length=T)
    np.testing.assert_array_equal(lengths, CAPS)
    assert not np.any(np.asarray(tokens) == EOS)


def test_greedy_zero_cap_and_default_cap(greedy_out):
    caps = CAPS.at[0].set(0)
    tokens, lengths = greedy(MEMORY, STATE, max_steps=T, max_lengths=caps)
    assert lengths[0] == 0 and np.all(np.asarray(tokens[0]) == PAD)
    np.testing.assert_array_equal(tokens[1:], greedy_out[0][1:])
    tokens, lengths = greedy(MEMORY, STATE, max_steps=T)
    check_ended_properly(tokens, lengths, np.full(N, T))


def test_greedy_batch_invariance(greedy_out):
    tokens, lengths = greedy_out
    for i in (0, 7, 31):  # alone (N=1)
        mem, st, cap = rows(MEMORY, [i]), rows(STATE, [i]), CAPS[i : i + 1]
        alone = greedy(mem, st, max_steps=T, max_lengths=cap)
        np.testing.assert_array_equal(alone[0][0], tokens[i])
        assert alone[1][0] == lengths[i]
    perm = np.random.default_rng(1).permutation(N)  # among different neighbours
    shuffled = greedy(rows(MEMORY, perm), rows(STATE, perm), max_steps=T, max_lengths=CAPS[perm])
    np.testing.assert_array_equal(shuffled[0], tokens[perm])
    np.testing.assert_array_equal(shuffled[1], lengths[perm])


# ----------------------------------------------------------------------------
# Beam search
# ----------------------------------------------------------------------------

L = 4  # exhaustive: 1 + 3 + 9 + 27 sequences ending in EOS, 81 of length L without: 121


def all_sequences():
    seqs = []
    for n in range(L):
        seqs += [list(p) + [EOS] for p in itertools.product(REAL, repeat=n)]
    seqs += [list(p) for p in itertools.product(REAL, repeat=L)]
    tokens = np.full((len(seqs), L), PAD, np.int32)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = s
    return jnp.asarray(tokens), jnp.asarray([len(s) for s in seqs], jnp.int32)


ALL_TOKENS, ALL_LENGTHS = all_sequences()


def brute_force(memory, state, alpha):
    """Every possible output of one sentence with its normalised score, best first."""
    n = ALL_TOKENS.shape[0]
    memory, state = repeat_rows(memory, n), repeat_rows(state, n)
    scores = np.asarray(seq_logp(memory, state, ALL_TOKENS, ALL_LENGTHS)) / lp(ALL_LENGTHS, alpha)
    order = np.argsort(-scores, kind="stable")
    return np.asarray(ALL_TOKENS)[order], np.asarray(ALL_LENGTHS)[order], scores[order]


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_equals_brute_force(alpha):
    nbest = 5
    memory, state = make_inputs(3, seed=2)
    for i in range(3):
        mem, st = rows(memory, [i]), rows(state, [i])  # keeping a batch dim of 1
        tokens, scores, lengths = beam_one(
            rows(memory, i), rows(state, i), beam_size=128, max_steps=L, nbest=nbest, alpha=alpha
        )
        want_tokens, want_lengths, want_scores = brute_force(mem, st, alpha)
        np.testing.assert_array_equal(tokens, want_tokens[:nbest])
        np.testing.assert_array_equal(lengths, want_lengths[:nbest])
        np.testing.assert_allclose(scores, want_scores[:nbest], atol=1e-5, rtol=0)
        # and the returned scores are the model's own teacher-forced log-probs / lp
        rescored = seq_logp(repeat_rows(mem, nbest), repeat_rows(st, nbest), tokens, lengths)
        want = np.asarray(rescored) / lp(lengths, alpha)
        np.testing.assert_allclose(scores, want, atol=1e-5, rtol=0)


def test_length_penalty_changes_the_ranking():
    """Sanity for the test above: alpha=1 must actually reorder hypotheses."""
    memory, state = make_inputs(3, seed=2)
    differ = [
        not np.array_equal(
            brute_force(rows(memory, [i]), rows(state, [i]), 0.0)[0][:5],
            brute_force(rows(memory, [i]), rows(state, [i]), 1.0)[0][:5],
        )
        for i in range(3)
    ]
    assert any(differ)


def test_beam_size_one_is_greedy(greedy_out):
    tokens, scores, lengths = beam_batch(MEMORY, STATE, beam_size=1, max_steps=T, max_length=CAPS, alpha=0.0)
    np.testing.assert_array_equal(tokens[:, 0], greedy_out[0])
    np.testing.assert_array_equal(lengths[:, 0], greedy_out[1])
    want = seq_logp(MEMORY, STATE, *greedy_out)
    np.testing.assert_allclose(scores[:, 0], want, atol=1e-5, rtol=0)


BEAM_KW = dict(beam_size=4, max_steps=T, nbest=2, alpha=0.6)


@pytest.fixture(scope="module")
def beam_out():
    return beam_batch(MEMORY, STATE, max_length=CAPS, **BEAM_KW)


def test_beam_outputs_are_consistent(beam_out):
    tokens, scores, lengths = beam_out
    nbest = BEAM_KW["nbest"]
    assert tokens.shape == (N, nbest, T) and scores.shape == lengths.shape == (N, nbest)
    check_ended_properly(tokens.reshape(N * nbest, T), lengths.reshape(-1), np.repeat(CAPS, nbest))
    assert np.all(np.diff(np.asarray(scores), axis=1) <= 0), "nbest must be sorted best first"
    assert not np.array_equal(tokens[:, 0], tokens[:, 1])
    rescored = seq_logp(
        repeat_rows(MEMORY, nbest), repeat_rows(STATE, nbest), tokens.reshape(N * nbest, T), lengths.reshape(-1)
    )
    want = np.asarray(rescored).reshape(N, nbest) / lp(lengths, BEAM_KW["alpha"])
    np.testing.assert_allclose(scores, want, atol=1e-5, rtol=0)


def test_beam_batch_invariance(beam_out):
    tokens, scores, lengths = beam_out
    for i in (0, 7, 31):
        mem, st, cap = rows(MEMORY, [i]), rows(STATE, [i]), CAPS[i : i + 1]
        alone = beam_batch(mem, st, max_length=cap, **BEAM_KW)
        unbatched = beam_one(rows(MEMORY, i), rows(STATE, i), max_length=CAPS[i], **BEAM_KW)
        for got in (tuple(x[0] for x in alone), unbatched):
            np.testing.assert_array_equal(got[0], tokens[i])
            np.testing.assert_array_equal(got[2], lengths[i])
            np.testing.assert_allclose(got[1], scores[i], atol=1e-5, rtol=0)
    perm = np.random.default_rng(1).permutation(N)
    shuffled = beam_batch(rows(MEMORY, perm), rows(STATE, perm), max_length=CAPS[perm], **BEAM_KW)
    np.testing.assert_array_equal(shuffled[0], tokens[perm])
    np.testing.assert_array_equal(shuffled[2], lengths[perm])


def reference_beam(memory, state, *, beam_size, max_steps, cap, alpha, nbest):
    """Plain-Python beam with the same candidate rules and NO early stop.

    Also reports whether the early-stop bound would have fired before the end,
    so the comparison exercises the early stop.
    """
    k = beam_size
    live = [((), 0.0, state)]
    finished = []  # (score, tokens)
    would_stop = False
    for t in range(min(cap, max_steps)):
        kept = sorted(s for s, _ in finished)[-k:] if len(finished) >= k else None
        best_bound = max(logp for _, logp, _ in live) / max(lp(t + 1, alpha), lp(cap, alpha))
        would_stop |= kept is not None and best_bound <= kept[0]
        cands = []
        for b, (toks, logp, st) in enumerate(live):
            last = jnp.asarray([toks[-1] if toks else BOS])
            logits, new_st = step_fn(memory, st, last)
            step_logp = np.asarray(jax.nn.log_softmax(logits[0]), np.float64)
            cands += [(logp + step_logp[v], b * V + v, toks + (v,), new_st) for v in range(V)]
        cands = sorted(cands, key=lambda c: (-c[0], c[1]))[: 2 * k]
        ended = [c[2][-1] == EOS or t + 1 == cap for c in cands]
        finished += [(c[0] / lp(t + 1, alpha), c[2]) for c, e in list(zip(cands, ended))[:k] if e]
        live = [(c[2], c[0], c[3]) for c, e in zip(cands, ended) if not e][:k]
        if not live:
            break
    best = sorted(finished, key=lambda f: -f[0])[:nbest]
    return [f[1] for f in best], [f[0] for f in best], would_stop


def test_beam_matches_reference_without_early_stop(beam_out):
    tokens, scores, lengths = beam_out
    stopped_early = 0
    for i in range(0, N, 4):
        want_tokens, want_scores, would_stop = reference_beam(
            rows(MEMORY, [i]),
            rows(STATE, [i]),
            beam_size=4,
            max_steps=T,
            cap=int(CAPS[i]),
            alpha=BEAM_KW["alpha"],
            nbest=2,
        )
        stopped_early += would_stop
        for j, want in enumerate(want_tokens):
            assert lengths[i, j] == len(want)
            np.testing.assert_array_equal(tokens[i, j, : len(want)], want)
        np.testing.assert_allclose(scores[i], want_scores, atol=1e-5, rtol=0)
    assert stopped_early > 0, "want sentences where the early stop fires"


# A hand-made model where stopping on the wrong bound changes the answer. Step 0:
# EOS likely, 3 less so, 4 unlikely. After 3: EOS almost surely. After 4: 3s
# almost surely, so "4 3 3 ..." costs nothing more and, divided by a large
# length penalty, ends second best -- unless the search gave up on it at step 2
# by bounding its score with lp(3) instead of lp(max_length).
CLIFF = jnp.asarray(
    [
        [-1e9, -1e9, 0.0, -1.5, -3.0, -9.0],  # step 0
        [-1e9, -1e9, 5.0, 0.0, 0.0, 0.0],  # after 3
        [-1e9, -1e9, 0.0, 20.0, 0.0, 0.0],  # after 4
        [-1e9, -1e9, 0.0, 0.0, 0.0, 0.0],  # otherwise
    ]
)
CLIFF_CALLS = []


def cliff_step(memory, state, tokens):
    """Logits from CLIFF by step and first token; counts its calls (so early stops show)."""
    t = state["t"]
    first = jnp.where(t == 1, tokens, state["first"])
    row = jnp.where(t == 0, 0, jnp.where(first == 3, 1, jnp.where(first == 4, 2, 3)))
    jax.debug.callback(lambda _: CLIFF_CALLS.append(1), t)
    return CLIFF[row] + 0.0 * memory["x"], {"t": t + 1, "first": first}


def cliff_inputs(n=None):
    shape = () if n is None else (n,)
    memory = {"x": jnp.zeros(shape + (1,))}
    return memory, {"t": jnp.zeros(shape, jnp.int32), "first": jnp.zeros(shape, jnp.int32)}


def count_cliff_calls(fn, *args, **kwargs):
    CLIFF_CALLS.clear()
    out = jax.block_until_ready(fn(*args, **kwargs))
    jax.effects_barrier()
    return out, len(CLIFF_CALLS)


cliff_beam = jax.jit(functools.partial(search.beam_search, cliff_step, beam_size=2, max_steps=T, nbest=2))


def test_beam_early_stop_uses_the_best_possible_penalty():
    memory, state = cliff_inputs()
    # alpha=0: after step 1 the kept [EOS] and [3 EOS] beat every live beam: stop after 2 calls.
    (tokens, scores, lengths), calls = count_cliff_calls(cliff_beam, memory, state, alpha=0.0)
    assert calls == 2
    np.testing.assert_array_equal(lengths, [1, 2])
    np.testing.assert_array_equal(tokens[:, :2], [[EOS, PAD], [3, EOS]])
    # alpha=2: "4 3 3 3 3 3 3 3" (cap, no EOS) scores about -3.24 / lp(8) = -0.69 > [3 EOS] at
    # -1.76 / lp(2) = -1.29, so the search must go on to the cap.
    (tokens, scores, lengths), calls = count_cliff_calls(cliff_beam, memory, state, alpha=2.0)
    assert calls == T
    np.testing.assert_array_equal(lengths, [1, T])
    np.testing.assert_array_equal(tokens[1], [4] + [3] * (T - 1))
    rescored = search.sequence_log_prob(cliff_step, *cliff_inputs(2), tokens, lengths)
    np.testing.assert_allclose(scores, np.asarray(rescored) / lp(lengths, 2.0), atol=1e-5, rtol=0)


def test_greedy_stops_when_all_rows_end():
    greedy_cliff = jax.jit(functools.partial(search.greedy_search, cliff_step, max_steps=T))
    (tokens, lengths), calls = count_cliff_calls(greedy_cliff, *cliff_inputs(3))
    assert calls == 1  # EOS is every row's argmax at step 0
    np.testing.assert_array_equal(lengths, [1, 1, 1])


def test_beam_min_length():
    tokens, scores, lengths = beam_batch(MEMORY, STATE, max_length=CAPS, min_length=T, **BEAM_KW)
    np.testing.assert_array_equal(lengths, jnp.repeat(CAPS[:, None], 2, axis=1))
    assert not np.any(np.asarray(tokens) == EOS)


# ----------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------


def test_cold_sampling_is_greedy(greedy_out):
    tokens, lengths = sample_shared(jax.random.key(3), temperature=1e-4)
    np.testing.assert_array_equal(tokens, greedy_out[0])
    np.testing.assert_array_equal(lengths, greedy_out[1])


def test_tiny_top_p_is_greedy(greedy_out):
    tokens, lengths = sample_shared(jax.random.key(3), top_p=0.01)
    np.testing.assert_array_equal(tokens, greedy_out[0])
    np.testing.assert_array_equal(lengths, greedy_out[1])


def test_sampling_is_seeded(greedy_out):
    a = sample_shared(jax.random.key(4), temperature=1.0)
    b = sample_shared(jax.random.key(4), temperature=1.0)
    c = sample_shared(jax.random.key(5), temperature=1.0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], greedy_out[0])
    check_ended_properly(*a, CAPS)


def test_top_k_stays_in_top_k(greedy_out):
    tokens, lengths = sample_shared(jax.random.key(6), top_k=2)
    check_ended_properly(tokens, lengths, CAPS)
    logits = np.asarray(tf_logits(MEMORY, STATE, tokens))
    rank = (logits > np.take_along_axis(logits, np.asarray(tokens)[..., None], -1)).sum(-1)
    within = np.arange(T)[None] < np.asarray(lengths)[:, None]
    assert np.all(rank[within] < 2)
    assert np.any(rank[within] == 1), "want some second-best draws, or the test proves nothing"


def test_filter_logits():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))

    def keep(**kw):
        return np.isfinite(np.asarray(search.filter_logits(logits, **kw)))[0].tolist()

    assert keep(top_k=2) == [True, True, False, False]
    assert keep(top_p=0.45) == [True, False, False, False]
    assert keep(top_p=0.6) == [True, True, False, False]
    assert keep(top_p=0.9) == [True, True, True, False]
    assert keep(top_k=1, top_p=0.9) == [True, False, False, False]
    assert keep() == [True] * 4


def test_sampling_rejects_zero_temperature():
    with pytest.raises(ValueError, match="greedy"):
        search.sample(step_fn, MEMORY, STATE, jax.random.key(0), max_steps=T, temperature=0.0)


def test_traced_filter_values_match_the_static_filters():
    """Per-row arrays (what a server batch mixes) filter exactly as the Python-number settings do."""
    logits = jax.random.normal(jax.random.key(1), (6, 11)) * 3
    settings = [(0, 1.0), (3, 1.0), (0, 0.7), (4, 0.5), (1, 0.9), (11, 0.99)]
    traced = jax.jit(search.filter_logits)(
        logits, top_k=jnp.asarray([k for k, _ in settings]), top_p=jnp.asarray([p for _, p in settings])
    )
    for row, (k, p) in enumerate(settings):
        np.testing.assert_array_equal(traced[row], search.filter_logits(logits[row : row + 1], top_k=k, top_p=p)[0])


def test_per_row_keys_make_a_sample_independent_of_its_batch(greedy_out):
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(9), i))(jnp.arange(N))
    temps = jnp.linspace(0.7, 1.5, N)
    whole = sampler(MEMORY, STATE, keys, max_steps=T, max_lengths=CAPS, temperature=temps)
    for row in range(N):
        one = jax.tree.map(lambda x, r=row: x[r : r + 1], (MEMORY, STATE))
        alone = sampler(
            *one, keys[row : row + 1], max_steps=T, max_lengths=CAPS[row : row + 1], temperature=temps[row : row + 1]
        )
        np.testing.assert_array_equal(alone[0][0], whole[0][row])
    assert not np.array_equal(whole[0], greedy_out[0]), "the samples should differ from greedy"


def test_log_probs_accumulated_while_decoding_equal_teacher_forcing():
    """greedy/sample(return_log_prob=True) report what sequence_log_prob gives for their outputs."""
    tokens, lengths, logp = greedy(MEMORY, STATE, max_steps=T, max_lengths=CAPS, return_log_prob=True)
    np.testing.assert_allclose(logp, seq_logp(MEMORY, STATE, tokens, lengths), rtol=1e-5, atol=1e-5)
    tokens, lengths, logp = sampler(
        MEMORY, STATE, jax.random.key(8), max_steps=T, max_lengths=CAPS, temperature=1.7, return_log_prob=True
    )
    np.testing.assert_allclose(logp, seq_logp(MEMORY, STATE, tokens, lengths), rtol=1e-5, atol=1e-5)


def eos_biased_rnn(seed: int, n: int, lowest_bias: float, vocab: int = 12, hidden: int = 16):
    """A small random RNN step over n rows whose EOS logit is biased from `lowest_bias` (row 0) to +3
    (the last row), so the rows end at very different steps -> (step_fn, memory, state)."""
    k = jax.random.split(jax.random.key(seed), 4)
    W, E = jax.random.normal(k[0], (hidden, vocab)), jax.random.normal(k[1], (vocab, hidden))
    U = jax.random.normal(k[2], (hidden, hidden)) * 0.5

    def step_fn(memory, state, tokens):
        h = jnp.tanh(state["h"] @ U + E[tokens] + memory["m"])
        return (h @ W).at[:, search.EOS_ID].add(memory["eos_bias"]), {"h": h}

    memory = {"m": jax.random.normal(k[3], (n, hidden)), "eos_bias": jnp.linspace(lowest_bias, 3, n)}
    return step_fn, memory, {"h": jnp.zeros((n, hidden))}


def test_compacting_greedy_search_equals_the_plain_loop(monkeypatch):
    """Rows that finish at very different steps (a per-row EOS bias, per-row caps, zero caps): the
    search that compacts its live rows by halves gives the plain loop's tokens, lengths and scores."""
    monkeypatch.setattr(search, "COMPACT_MIN_ROWS", 8)  # stages of 37, 19, 10 and 8 rows
    N = 37
    step_fn, memory, state = eos_biased_rnn(0, N, -3)
    caps = jnp.array(np.random.default_rng(0).integers(0, 30, N), jnp.int32)

    def run(compact):
        return jax.jit(
            lambda m, s, c: search.greedy_search(
                step_fn, m, s, max_steps=30, max_lengths=c, return_log_prob=True, compact=compact
            )
        )(memory, state, caps)

    plain, compacted = run(False), run(True)
    lengths = np.asarray(plain[1])
    assert lengths.min() == 0 and lengths.max() >= 20 and len(set(lengths.tolist())) > 8  # stages do compact
    np.testing.assert_array_equal(compacted[0], plain[0])
    np.testing.assert_array_equal(compacted[1], plain[1])
    np.testing.assert_array_equal(compacted[2], plain[2])


def test_compacting_beam_search_equals_the_vmapped_sentence_search(monkeypatch):
    """Sentences that finish at very different steps (a per-sentence EOS bias, caps, alphas and
    first tokens): the batch search that compacts its running sentences by halves gives exactly
    what `beam_search` gives each sentence alone, n-best tokens and lengths, and its scores up to
    float rounding (XLA:CPU in jax 0.12 rounds a matmul's rows differently at different row counts,
    and each stage of the compaction has its own)."""
    monkeypatch.setattr(search, "COMPACT_MIN_ROWS", 8)  # stages of 29, 15, 8, 4 and 3 sentences
    V, N, K = 12, 29, 3
    step_fn, memory, state = eos_biased_rnn(1, N, -4)
    rng = np.random.default_rng(1)
    caps = jnp.array(rng.integers(1, 30, N), jnp.int32)
    alphas = jnp.array(rng.uniform(0, 1.5, N), jnp.float32)
    starts = jnp.array(rng.integers(1, V, N), jnp.int32)
    opts = dict(beam_size=K, max_steps=30, nbest=2)

    def batch(compact):
        return jax.jit(
            lambda m, s, c, a, b: search.batch_beam_search(
                step_fn, m, s, max_length=c, alpha=a, bos_id=b, compact=compact, **opts
            )
        )(memory, state, caps, alphas, starts)

    alone = jax.jit(
        jax.vmap(lambda m, s, c, a, b: search.beam_search(step_fn, m, s, max_length=c, alpha=a, bos_id=b, **opts))
    )(memory, state, caps, alphas, starts)
    lengths = np.asarray(alone[2][:, 0])
    assert lengths.min() <= 2 and lengths.max() >= 20 and len(set(lengths.tolist())) > 8  # stages do compact
    for got in (batch(True), batch(False)):
        (got_tokens, got_scores, got_lengths), (tokens, scores, lengths) = got, alone
        np.testing.assert_array_equal(got_tokens, tokens)
        np.testing.assert_array_equal(got_lengths, lengths)
        np.testing.assert_allclose(got_scores, scores, rtol=1e-5)
