"""The one inference path: batching by length is invisible in the results, validation and
decode.py translate alike, and loading a Translator pulls in no training code."""

import dataclasses
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.decoding import inference
from s2s_jax.decoding.inference import Inference, SearchOptions
from s2s_jax.models.seq2seq import Seq2Seq
from tests.helpers import ROOT, TINY_DECODE, tiny_model

DECODE = TINY_DECODE


@pytest.fixture(scope="module")
def tiny():
    model, params = tiny_model(0)
    rng = np.random.default_rng(0)
    sources = [rng.integers(4, 12, size=rng.integers(1, 11)).tolist() for _ in range(13)]
    sources[4] = []  # an empty line
    return Inference(model, DECODE, max_src_len=10), params, sources


@pytest.mark.parametrize("opts", [SearchOptions(), SearchOptions(beam_size=3, nbest=2)], ids=["greedy", "beam"])
def test_results_do_not_depend_on_batch_size_or_order(tiny, opts):
    engine, params, sources = tiny
    one_by_one = engine.run(params, sources, opts, batch_size=1)
    batched = engine.run(params, sources, opts, batch_size=16)
    assert [[c.tokens for c in r] for r in batched] == [[c.tokens for c in r] for r in one_by_one]
    np.testing.assert_allclose(
        [[c.score for c in r] for r in batched], [[c.score for c in r] for r in one_by_one], rtol=1e-5, atol=1e-5
    )
    assert batched[4] == [inference.ScoredTokens([], 0.0)] * opts.nbest
    reversed_run = engine.run(params, sources[::-1], opts, batch_size=4)[::-1]
    assert [[c.tokens for c in r] for r in reversed_run] == [[c.tokens for c in r] for r in batched]


def test_outputs_respect_the_length_cap(tiny):
    engine, params, sources = tiny
    for src, (best,) in zip(sources, engine.run(params, sources, SearchOptions(), batch_size=8)):
        if src:  # a * (source tokens + EOS) + b output tokens, EOS included when there is one
            assert len(best.tokens) <= np.ceil(DECODE.max_len_a * (len(src) + 1) + DECODE.max_len_b)


def test_batches_come_from_few_shapes(tiny):
    engine, _, sources = tiny
    chunks = engine.batches(sources * 20, batch_size=16)
    many = sources * 20
    settings, keys = [SearchOptions()] * len(many), [(0, i) for i in range(len(many))]
    shapes = {engine._arrays((many,), chunk, 16, settings, keys)["srcs"][0].shape for chunk in chunks}
    assert all(rows in (1, 2, 4, 8, 16) and width % inference.SOURCE_LENGTH_MULTIPLE == 0 for rows, width in shapes)
    assert len(shapes) <= 3
    assert inference.row_counts(16) == [1, 2, 4, 8, 16] and inference.row_counts(12) == [1, 2, 4, 8, 12]
    assert {rows for rows, _ in shapes} <= set(inference.row_counts(16))


@pytest.mark.parametrize("compact", [True, False])
def test_the_compaction_switch_reaches_greedy_and_beam_search(tiny, monkeypatch, compact):
    engine, params, sources = tiny
    searches = (SearchOptions(), SearchOptions(beam_size=2))
    expected = [engine.run(params, sources, opts, batch_size=16) for opts in searches]
    seen = []

    def recording(search_fn):
        def search_fn_recorded(*args, compact=True, **kwargs):
            seen.append(compact)
            return search_fn(*args, compact=compact, **kwargs)

        return search_fn_recorded

    for name in ("greedy_search", "batch_beam_search"):
        monkeypatch.setattr(inference.search, name, recording(getattr(inference.search, name)))
    switched = Inference(engine.models[0], DECODE, max_src_len=10, compact=compact)
    assert [switched.run(params, sources, opts, batch_size=16) for opts in searches] == expected
    assert seen == [compact, compact]  # greedy's, then beam's


@pytest.mark.slow
def test_decode_reproduces_the_validation_bleu_of_the_best_checkpoint(trained_workdir):
    """Validation (training.evaluate) and the Translator share one path: same outputs, same BLEU."""
    from s2s_jax import bleu, parallel
    from s2s_jax.data import training_data
    from s2s_jax.decoding.translator import Translator
    from s2s_jax.training import loop
    from s2s_jax.workdir import checkpoints, run_config

    translator = Translator(trained_workdir.workdir, "best")
    config = run_config.load(trained_workdir.workdir)
    corpus = training_data.prepare(config, trained_workdir.workdir, verbose=False)
    hyps = [h[0].text for h in translator.translate(corpus.valid_src_text, SearchOptions.from_config(config.decode))]
    params, meta = checkpoints.load_params(trained_workdir.workdir, "best")
    mesh = parallel.make_mesh()
    eval_step = parallel.data_parallel_eval_step(loop.make_eval_step(translator.model), mesh)
    scores, valid_hyps = loop.evaluate(
        parallel.replicate(params, mesh), eval_step, translator.inference, corpus, config
    )
    assert hyps == valid_hyps
    assert bleu.corpus_bleu(hyps, corpus.valid_refs) == scores["valid_bleu"] == meta["valid_bleu"]


@pytest.mark.slow
def test_loading_a_translator_imports_no_training_code(trained_workdir):
    script = (
        "import sys\n"
        "from s2s_jax.decoding.translator import Translator\n"
        f"t = Translator({trained_workdir.workdir!r})\n"
        "assert t.translate(['the red cat'])[0][0].text\n"
        "import s2s_jax.cli.decode\n"
        "banned = ('optax', 'tensorboardX', 's2s_jax.training', 's2s_jax.data.training_data', 's2s_jax.data.batching',\n"
        "          's2s_jax.cli.train')\n"
        "print(sorted(m for m in sys.modules if any(m == b or m.startswith(b + '.') for b in banned)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_score_gives_back_the_beam_scores_and_equals_sequence_log_prob_row_by_row(tiny):
    engine, params, sources = tiny
    beams = engine.run(params, sources, SearchOptions(beam_size=3, nbest=2, alpha=0.0), batch_size=16)

    def ended_with_eos(src, tokens):  # not cut at the row's length cap (EOS counts in the length)
        return len(tokens) + 1 <= np.ceil(DECODE.max_len_a * (len(src) + 1) + DECODE.max_len_b)

    pairs = [
        (src, c.tokens, c.score)
        for src, cands in zip(sources, beams)
        if src
        for c in cands
        if ended_with_eos(src, c.tokens)
    ]
    assert len(pairs) >= 6
    scored = engine.score(params, [p[0] for p in pairs], [p[1] for p in pairs], batch_size=5)
    np.testing.assert_allclose([c.score for c in scored], [p[2] for p in pairs], rtol=1e-4, atol=1e-4)
    # One unpadded row at a time, straight through search.sequence_log_prob.
    from s2s_jax.data.tokenizer import EOS_ID
    from s2s_jax.decoding import search

    (model,) = engine.models
    for (src, out, _), got in list(zip(pairs, scored))[:4]:
        memory, state = model.apply({"params": params}, jnp.array([src + [EOS_ID]]), method=Seq2Seq.encode)

        def step_fn(m, s, t):
            return model.apply({"params": params}, m, s, t, method=Seq2Seq.decode_step)

        tokens = jnp.array([out + [EOS_ID]])
        want = search.sequence_log_prob(step_fn, memory, state, tokens, jnp.array([len(out) + 1]))
        np.testing.assert_allclose(got.score, float(want[0]), rtol=1e-5, atol=1e-5)


def test_score_handles_empty_sources_and_targets(tiny):
    engine, params, _ = tiny
    scored = engine.score(params, [[], [5, 6], [7]], [[4, 5], [], [8, 9, 10]], batch_size=2)
    assert [c.tokens for c in scored] == [[4, 5], [], [8, 9, 10]]
    assert all(np.isfinite(c.score) and c.score < 0 for c in scored)
    with pytest.raises(ValueError, match="2 sources but 1 targets"):
        engine.score(params, [[5], [6]], [[4]])


@pytest.mark.slow
@pytest.mark.parametrize("opts", [SearchOptions(), SearchOptions(beam_size=3, nbest=2)], ids=["greedy", "beam"])
def test_forced_prefix_continues_from_the_state_advanced_by_hand(tiny, opts):
    from s2s_jax.data.tokenizer import BOS_ID, EOS_ID
    from s2s_jax.decoding import search

    engine, params, sources = tiny
    (model,) = engine.models
    rng = np.random.default_rng(1)
    prefixes = [rng.integers(4, 12, size=rng.integers(0, 4)).tolist() for _ in sources]
    prefixes[0], prefixes[1] = [], [7, 7, 7, 7, 7, 7, 7, 7, 7]  # none; longer than one prefix block
    forced = engine.run(params, sources, opts, batch_size=4, prefixes=prefixes)
    plain = engine.run(params, sources, opts, batch_size=4)
    assert forced[0] == plain[0]  # an empty prefix changes nothing

    def step_fn(m, s, t):
        return model.apply({"params": params}, m, s, t, method=Seq2Seq.decode_step)

    for i, (src, prefix) in enumerate(zip(sources, prefixes)):
        if not src:
            continue
        assert all(c.tokens[: len(prefix)] == prefix for c in forced[i])  # the forced tokens, verbatim
        # By hand: encode, feed BOS and the prefix but its last token one step at a time, then search.
        memory, state = model.apply({"params": params}, jnp.array([src + [EOS_ID]]), method=Seq2Seq.encode)
        for token in [BOS_ID, *prefix][:-1] if prefix else []:
            _, state = step_fn(memory, state, jnp.array([token]))
        start = prefix[-1] if prefix else BOS_ID
        cap = max(int(np.ceil(DECODE.max_len_a * (len(src) + 1) + DECODE.max_len_b)) - len(prefix), 1)
        if opts.beam_size == 1:
            tokens, _ = search.greedy_search(
                step_fn, memory, state, max_steps=engine.max_steps, max_lengths=jnp.array([cap]), bos_id=start
            )
            continuations = [inference._cut(np.asarray(tokens[0]))]
        else:
            tokens, _, _ = search.beam_search(
                step_fn,
                jax.tree.map(lambda x: x[0], memory),
                jax.tree.map(lambda x: x[0], state),
                beam_size=opts.beam_size,
                max_steps=engine.max_steps,
                max_length=cap,
                alpha=opts.alpha,
                nbest=opts.nbest,
                bos_id=start,
            )
            continuations = [inference._cut(np.asarray(row)) for row in tokens]
        assert [c.tokens[len(prefix) :] for c in forced[i]] == continuations, i


@pytest.mark.slow
def test_a_sample_does_not_depend_on_its_batch(tiny):
    """Source i draws from fold_in(key(seed), i): batch size, order and neighbours change nothing."""
    engine, params, sources = tiny
    opts = SearchOptions(sample=True, nbest=2, temperature=1.3, top_p=0.9)
    whole = engine.run(params, sources, opts, batch_size=16, seed=3)
    one_by_one = engine.run(params, sources, opts, batch_size=1, seed=3)
    assert [[c.tokens for c in r] for r in whole] == [[c.tokens for c in r] for r in one_by_one]
    keys = [(3, i) for i in range(len(sources))][::-1]
    reordered = engine.run(params, sources[::-1], opts, batch_size=4, sample_keys=keys)[::-1]
    assert [[c.tokens for c in r] for r in reordered] == [[c.tokens for c in r] for r in whole]
    other_seed = engine.run(params, sources, opts, batch_size=16, seed=4)
    assert [[c.tokens for c in r] for r in other_seed] != [[c.tokens for c in r] for r in whole]


@pytest.mark.parametrize(
    "mixed",
    [
        [SearchOptions(beam_size=3, alpha=a) for a in (0.0, 0.6, 1.0, 2.0)],
        pytest.param(
            [
                SearchOptions(sample=True, temperature=t, top_k=k, top_p=p, with_scores=True)
                for t, k, p in ((0.5, 0, 1.0), (1.0, 3, 1.0), (2.0, 0, 0.8), (1.5, 2, 0.6))
            ],
            marks=pytest.mark.slow,
        ),
    ],
    ids=["beam-alpha", "sample-temperature-top-k-top-p"],
)
def test_per_source_float_settings_share_one_compiled_search(tiny, mixed):
    """Settings that differ only in alpha, temperature, top_k and top_p give each source what its own
    setting gives it alone, from one compiled search function."""
    engine, params, sources = tiny
    settings = [mixed[i % len(mixed)] for i in range(len(sources))]
    together = engine.run(params, sources, settings, batch_size=16, seed=2)
    for opts in mixed:
        alone = engine.run(params, sources, opts, batch_size=16, seed=2)
        for i, one in enumerate(settings):
            if one == opts:
                assert [c.tokens for c in together[i]] == [c.tokens for c in alone[i]]
                np.testing.assert_allclose([c.score for c in together[i]], [c.score for c in alone[i]], rtol=1e-5)
    for opts in mixed:  # other values, the same compiled search
        fn = engine.search_fn(opts)
        other = dataclasses.replace(
            opts,
            alpha=opts.alpha + 0.3,
            temperature=opts.temperature * 2,
            top_k=opts.top_k and opts.top_k + 1,
            top_p=opts.top_p if opts.top_p == 1 else 0.3,
        )
        assert engine.search_fn(other) is fn
    if mixed[0].beam_size > 1:  # the length penalty matters: alpha 0 and 2 disagree somewhere
        differ = engine.run(params, sources, mixed[0], batch_size=16) != engine.run(
            params, sources, mixed[3], batch_size=16
        )
        assert differ


def test_the_compiled_search_cache_is_bounded(tiny):
    engine, params, sources = tiny
    small = Inference(engine.models[0], DECODE, max_src_len=10, max_compiled=2)
    for beam in (1, 2, 3, 2):
        small.run(params, sources[:3], SearchOptions(beam_size=beam), batch_size=4)
    assert [key.beam_size for key in small._compiled] == [3, 2]


def test_mixing_compiled_settings_in_one_run_is_refused(tiny):
    engine, params, sources = tiny
    with pytest.raises(ValueError, match="may differ only in"):
        engine.run(params, sources[:2], [SearchOptions(), SearchOptions(beam_size=2)])
