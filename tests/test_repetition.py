"""Repetition control (--no_repeat_ngram N): the in-jit n-gram check against a plain-Python one, and
on models made to loop no n-gram of size N occurs twice in any output of greedy, beam or sampling,
while N = 0 leaves the outputs as they are."""

from __future__ import annotations

import dataclasses
import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.cli import decode as decode_cli
from s2s_jax.decoding import repetition, search
from s2s_jax.decoding.inference import Inference, SearchOptions
from tests.helpers import decode_flags, tiny_model

PAD, BOS, EOS = 0, 1, 2


def banned_by_hand(tokens: list[int], n: int, vocab: int) -> set[int]:
    """The tokens that would complete an n-gram already in `tokens` (EOS included here)."""
    if n <= 0 or len(tokens) < n - 1:
        return set()
    suffix = tuple(tokens[len(tokens) - n + 1 :]) if n > 1 else ()
    return {tokens[j] for j in range(n - 1, len(tokens)) if tuple(tokens[j - n + 1 : j]) == suffix}


def test_the_incremental_check_bans_what_a_plain_python_one_does():
    rng = np.random.default_rng(0)
    rows, width, vocab = 48, 12, 6
    tokens = rng.integers(3, vocab, (rows, width))  # few symbols: many repeats
    n = rng.integers(0, 6, rows)
    state = repetition.start(jnp.asarray(n), rows, width)
    buffer = jnp.zeros((rows, width), jnp.int32)  # PAD until written, as in the searches
    for step in range(width):
        got = np.asarray(repetition.banned_tokens(buffer, step, state, vocab))
        for r in range(rows):
            want = banned_by_hand(tokens[r, :step].tolist(), int(n[r]), vocab)
            assert set(np.nonzero(got[r])[0].tolist()) == want, (tokens[r, :step], n[r])
        new = jnp.asarray(tokens[:, step], jnp.int32)
        state = repetition.extend(state, buffer, new)
        buffer = buffer.at[:, step].set(new)


def test_eos_is_never_banned():
    sequence = [3, EOS, 3]  # with n = 2, EOS would complete the bigram (3, EOS) a second time
    state, buffer = repetition.start(2, 1, 4), jnp.zeros((1, 4), jnp.int32)
    for step, token in enumerate(sequence):
        state = repetition.extend(state, buffer, jnp.array([token]))
        buffer = buffer.at[0, step].set(token)
    assert np.asarray(repetition.banned_tokens(buffer, 3, state, 5))[0].tolist() == [False, False, True, False, False]
    blocked = np.asarray(repetition.block(jnp.zeros((1, 5)), buffer, 3, state, eos_id=EOS))
    assert np.all(np.isfinite(blocked))
    assert repetition.repeated_ngrams([3, 4, 3, 4, 5], 2) == [(3, 4)]


# ---------------------------------------------------------------------------
# The searches on a pure-JAX model that loops
# ---------------------------------------------------------------------------

V, H = 9, 8
_keys = jax.random.split(jax.random.key(7), 3)
PARAMS = {
    "emb": jax.random.normal(_keys[0], (V, H)),
    "out": jax.random.normal(_keys[1], (H, V)),
}
# The next token is mostly the previous one plus one, in a cycle of 3..5: 3 4 5 3 4 5 ...; EOS unlikely.
LOOP = jnp.zeros((V, V)).at[jnp.arange(3, 6), jnp.array([4, 5, 3])].set(6.0)
NEVER = jnp.zeros((V,)).at[PAD].set(-1e9).at[BOS].set(-1e9).at[EOS].set(-4.0)


def looping_step(memory, state, tokens):
    h = jnp.tanh(PARAMS["emb"][tokens] + state)
    return 0.3 * h @ PARAMS["out"] + LOOP[tokens] + memory + NEVER, h


T = 16
greedy = jax.jit(functools.partial(search.greedy_search, looping_step), static_argnames=("max_steps", "compact"))
sampler = jax.jit(functools.partial(search.sample, looping_step), static_argnames=("max_steps",))
beam = jax.jit(
    functools.partial(search.batch_beam_search, looping_step), static_argnames=("beam_size", "max_steps", "nbest")
)


def outputs(tokens, lengths) -> list[list[int]]:
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    return [row[:length].tolist() for row, length in zip(tokens.reshape(-1, T), lengths.reshape(-1))]


def looping_inputs(n: int):
    k1, k2 = jax.random.split(jax.random.key(n))
    return 0.5 * jax.random.normal(k1, (n, V)), 0.3 * jax.random.normal(k2, (n, H))


@pytest.mark.parametrize("size", [pytest.param(1, marks=pytest.mark.slow), 2, 3])
def test_no_search_repeats_an_ngram_of_the_banned_size(size):
    n = 80  # greedy compacts its rows (above search.COMPACT_MIN_ROWS)
    memory, state = looping_inputs(n)
    plain = outputs(*greedy(memory, state, max_steps=T))
    assert sum(bool(repetition.repeated_ngrams(out, size)) for out in plain) > n // 2  # the model loops
    # Rows alternate between the size and 0 (off): one program, per-row values.
    sizes = jnp.asarray([size if i % 2 == 0 else 0 for i in range(n)], jnp.int32)
    searches = {
        "greedy": lambda: outputs(*greedy(memory, state, max_steps=T, no_repeat_ngram=sizes)),
        "sample": lambda: outputs(*sampler(memory, state, jax.random.split(jax.random.key(0), n), max_steps=T)),
        "sample-blocked": lambda: outputs(
            *sampler(memory, state, jax.random.split(jax.random.key(0), n), max_steps=T, no_repeat_ngram=sizes)
        ),
    }
    got = searches["greedy"]()
    for i, out in enumerate(got):
        if i % 2 == 0:
            assert not repetition.repeated_ngrams(out, size), out
        else:
            assert out == plain[i]  # n-gram size 0: the plain search's output
    sampled, blocked = searches["sample"](), searches["sample-blocked"]()
    for i, out in enumerate(blocked):
        assert not repetition.repeated_ngrams(out, size) if i % 2 == 0 else out == sampled[i]
    tokens, scores, lengths = beam(memory, state, beam_size=3, max_steps=T, nbest=3, no_repeat_ngram=sizes)
    plain_beam = beam(memory, state, beam_size=3, max_steps=T, nbest=3)
    for i, (out, want) in enumerate(zip(np.split(np.asarray(tokens), n), np.split(np.asarray(plain_beam[0]), n))):
        for hyp, length, score in zip(out[0], np.asarray(lengths)[i], np.asarray(scores)[i]):
            if i % 2 == 0 and np.isfinite(score):
                assert not repetition.repeated_ngrams(hyp[:length].tolist(), size), hyp
        if i % 2:
            np.testing.assert_array_equal(out, want)


# ---------------------------------------------------------------------------
# The inference path on a Seq2Seq model whose output layer makes it loop
# ---------------------------------------------------------------------------

DECODE = types.SimpleNamespace(max_len_a=1.5, max_len_b=6, beam_size=1, alpha=0.6, batch_size=16)


@pytest.fixture(scope="module")
def looping():
    model, params = tiny_model(0)
    output = params["decoder"]["output"]
    # A strong output layer over a bias that favours two tokens and all but forbids EOS: "7 7 7 ...".
    output["kernel"] = 3.0 * output["kernel"]
    output["bias"] = output["bias"].at[PAD].set(-30.0).at[BOS].set(-30.0).at[EOS].set(-2.0).at[7].set(1.0)
    rng = np.random.default_rng(1)
    sources = [rng.integers(4, 12, size=rng.integers(2, 9)).tolist() for _ in range(12)]
    return Inference(model, DECODE, max_src_len=10), params, sources


SEARCHES = {
    "greedy": SearchOptions(with_scores=True),
    "beam": SearchOptions(beam_size=4, nbest=3, alpha=0.6),
    "sample": SearchOptions(sample=True, nbest=3, temperature=0.8, with_scores=True),
}


@pytest.mark.parametrize("name", list(SEARCHES))
@pytest.mark.parametrize("size", [2, 3])
def test_a_looping_model_repeats_no_ngram_and_size_zero_changes_nothing(looping, name, size):
    engine, params, sources = looping
    opts = SEARCHES[name]
    plain = engine.run(params, sources, opts, batch_size=8)
    assert sum(bool(repetition.repeated_ngrams(c.tokens, size)) for r in plain for c in r) >= len(sources)
    blocked = engine.run(params, sources, dataclasses.replace(opts, no_repeat_ngram=size), batch_size=8)
    for candidates in blocked:
        for c in candidates:
            assert not repetition.repeated_ngrams(c.tokens, size), c.tokens
    # N = 0 is the search of today: the same compiled program, the same outputs and scores.
    zero = dataclasses.replace(opts, no_repeat_ngram=0)
    assert zero.compiled_key() == opts.compiled_key()
    assert engine.run(params, sources, zero, batch_size=8) == plain
    # In one batch with rows that ban n-grams, a row with 0 gets its plain output.
    mixed = [dataclasses.replace(opts, no_repeat_ngram=size if i % 2 else 0) for i in range(len(sources))]
    for i, (got, want, other) in enumerate(zip(engine.run(params, sources, mixed, batch_size=8), plain, blocked)):
        assert [c.tokens for c in got] == [c.tokens for c in (other if i % 2 else want)]


def test_a_negative_size_is_one_error_line(capsys):
    status = decode_cli.run(decode_flags("/nonexistent", no_repeat_ngram=-1))
    _, err = capsys.readouterr()
    assert status == 1 and err.strip() == "error: --no_repeat_ngram must be >= 0 (0 = off), got -1"
    with pytest.raises(ValueError, match="no_repeat_ngram must be >= 0"):
        SearchOptions(no_repeat_ngram=-2).check()


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_decode_no_repeat_ngram_on_a_trained_model(trained_workdir, tmp_path, capsys):
    from s2s_jax.decoding.translator import Translator

    lines = ["the the the red red cat cat", "a big big big dog sees the dog"]
    source = tmp_path / "in.txt"
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    translator = Translator(trained_workdir.workdir)
    for beam_size in (1, 3):
        want = translator.translate(lines, SearchOptions(beam_size=beam_size, no_repeat_ngram=1))
        assert all(not repetition.repeated_ngrams(h[0].tokens, 1) for h in want)
        status = decode_cli.run(
            decode_flags(trained_workdir.workdir, input=str(source), beam_size=beam_size, no_repeat_ngram=1)
        )
        out, err = capsys.readouterr()
        assert status == 0, err
        assert out.splitlines() == [h[0].text for h in want]


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_an_export_with_the_ban_translates_as_decode_does(trained_workdir, tmp_path):
    import os
    import subprocess
    import sys

    from s2s_jax.decoding import export
    from s2s_jax.decoding.translator import Translator

    directory = str(tmp_path / "artefact")
    manifest = export.export_model(
        trained_workdir.workdir, directory, rows=[4], beam_size=3, no_repeat_ngram=1, log=lambda m: None
    )
    assert manifest["searches"]["greedy"] == {"beam_size": 1, "alpha": 0.6, "no_repeat_ngram": 1}
    lines = ["the the the red red cat cat", "a big big big dog sees the dog", "cat"]
    source = tmp_path / "in.txt"
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    translator = Translator(trained_workdir.workdir)
    alpha = manifest["searches"]["default"]["alpha"]
    for name, opts in (
        ("default", SearchOptions(beam_size=3, alpha=alpha, no_repeat_ngram=1)),
        ("greedy", SearchOptions(no_repeat_ngram=1)),
    ):
        result = subprocess.run(
            [sys.executable, os.path.join(directory, "translate.py"), "--input", str(source), "--search", name],
            env=dict(os.environ, JAX_PLATFORMS="cpu"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.splitlines() == [h[0].text for h in translator.translate(lines, opts)]
