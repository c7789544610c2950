"""The vocabulary shortlist (s2s_jax/decoding/shortlist.py): building, the padded union and per-row
masks, saving and loading, and searches restricted by it against the whole vocabulary, a masked
whole-vocabulary reference, themselves across batches, constraints, and the CLIs."""

from __future__ import annotations

import dataclasses
import functools
import shutil
import types

import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.cli import decode as decode_cli
from s2s_jax.cli import shortlist as shortlist_cli
from s2s_jax.decoding import export, export_loader, inference, search
from s2s_jax.decoding import shortlist as lexical
from s2s_jax.decoding.inference import BatchShape, Inference, SearchOptions
from s2s_jax.decoding.translator import Translator
from s2s_jax.errors import DataError
from s2s_jax.models.seq2seq import Seq2Seq
from s2s_jax.serving import shapes
from tests.helpers import TINY_DECODE, decode_flags, tiny_model

V = 300  # target vocabulary of the search tests: larger than the smallest padded union (128)
SOURCES = [[3, 4, 5], [6, 7], [8, 9, 10, 11, 4], [5, 5, 9, 3]]
DISJOINT = [[3, 4], [5, 6, 7], [8, 9], [10, 11, 11, 10]]


def empty_shortlist(src_vocab: int = 12, k: int = 2) -> lexical.Shortlist:
    """A shortlist whose rows hold only EOS and UNK (and what `extra` adds)."""
    return lexical.Shortlist(np.zeros((src_vocab, k), np.int32), np.zeros((0,), np.int32), V)


@functools.lru_cache(maxsize=None)
def model_and_inference(tie: bool = False):
    model, params = tiny_model(tgt_vocab_size=V, tie_embeddings=tie, **({"emb_dim": 16} if tie else {}))
    return model, params, Inference(model, TINY_DECODE, 10)


def first_tokens(results) -> list[list[int]]:
    return [r[0].tokens for r in results]


# ---------------------------------------------------------------------------
# Building and the table
# ---------------------------------------------------------------------------


def toy_pairs(n: int = 300, seed: int = 0):
    """Source word w (ids 10..29) translates to target 100 + w; target 5 is in every sentence."""
    rng = np.random.default_rng(seed)
    src, tgt = [], []
    for _ in range(n):
        words = rng.choice(np.arange(10, 30), size=rng.integers(2, 6), replace=False).tolist()
        src.append(words)
        tgt.append([5] + [100 + w for w in rng.permutation(words).tolist()])
    return src, tgt


@pytest.mark.parametrize("method", lexical.METHODS)
def test_each_source_piece_keeps_its_translation_beyond_the_frequent_pieces(method):
    src, tgt = toy_pairs()
    built = lexical.build(src, tgt, 40, 200, k=1, frequent=1, method=method)
    assert built.frequent.tolist() == [5]
    assert built.table[10:30, 0].tolist() == [100 + w for w in range(10, 30)]
    assert (built.table[:10] == 0).all() and (built.table[30:] == 0).all()  # never seen: PAD (nothing)
    assert built.settings["method"] == method and built.settings["pairs"] == 300
    report = lexical.coverage(built, src[:50], tgt[:50])
    assert report["coverage"] == 1.0 and report["whole_sentences"] == 1.0


def test_ibm1_is_sharper_than_cooccurrence_on_ambiguous_pairs():
    """Two words that always occur together and two that never: co-occurrence cannot tell the
    translation of 10 from that of 11 by counts, IBM model 1 learns it from the pairs where each
    occurs with others."""
    src, tgt = toy_pairs(400, seed=1)
    s, t, p = lexical.ibm1(src, tgt, 200, iterations=5)
    best = {int(a): int(t[s == a][np.argmax(p[s == a])]) for a in range(10, 30)}
    assert best == {w: 100 + w for w in range(10, 30)} or all(v in (5, 100 + w) for w, v in best.items())
    assert all(abs(p[s == a].sum() - 1.0) < 1e-6 for a in range(10, 30))  # t(.|s) sums to 1 (NULL left out)


def test_row_ids_hold_the_frequent_pieces_eos_unk_the_lists_and_extra_ids_never_pad_or_bos():
    table = np.zeros((12, 2), np.int32)
    table[3] = [40, 41]
    table[4] = [41, 1]
    shortlist = lexical.Shortlist(table, np.asarray([7, 8], np.int32), V)
    assert shortlist.row_ids([3, 4, 99]).tolist() == [2, 3, 7, 8, 40, 41]  # 99: outside the table
    assert shortlist.row_ids([3], extra=[250, 0, 1, 999]).tolist() == [2, 3, 7, 8, 40, 41, 250]


def test_union_sizes_are_powers_of_two_from_128_capped_at_the_vocabulary():
    assert [lexical.union_size(n, 8000) for n in (1, 128, 129, 256, 257, 4096, 4097, 8000)] == [
        128, 128, 256, 256, 512, 4096, 8000, 8000,
    ]  # fmt: skip
    assert lexical.union_size(5, 12) == 12
    assert lexical.union_sizes(8000) == [128, 256, 512, 1024, 2048, 4096, 8000]
    assert lexical.union_sizes(100) == [100]


def test_a_batch_is_its_sorted_union_padded_with_pad_and_each_row_masked_to_its_own_set():
    shortlist = empty_shortlist()
    rows = [shortlist.row_ids([], extra=[50, 60]), shortlist.row_ids([], extra=[60, 70])]
    ids, mask = shortlist.batch(rows, num_rows=4)
    assert ids.shape == (128,) and ids[:5].tolist() == [2, 3, 50, 60, 70] and (ids[5:] == 0).all()
    assert mask.shape == (4, 128)
    assert ids[mask[0]].tolist() == [2, 3, 50, 60] and ids[mask[1]].tolist() == [2, 3, 60, 70]
    assert not mask[2:].any()
    assert shortlist.batch(rows, 2, size=256)[0].shape == (256,)
    with pytest.raises(ValueError, match="more than the size"):
        shortlist.batch([np.arange(4, 200)], 1, size=128)


def test_scatter_keeps_a_rows_own_ids_and_gives_the_rest_never():
    logits = jnp.asarray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    ids = jnp.asarray([5, 2, 0])  # the last one padding
    mask = jnp.asarray([[True, False, False], [True, True, False]])
    full = np.asarray(lexical.scatter(logits, ids, mask, 7))
    expected = np.full((2, 7), lexical.NEVER, np.float32)
    expected[0, 5], expected[1, 5], expected[1, 2] = 1.0, 4.0, 5.0
    np.testing.assert_array_equal(full, expected)


def test_saved_and_loaded_and_a_missing_or_mismatched_one_is_a_data_error(tmp_path):
    src, tgt = toy_pairs(50)
    built = lexical.build(src, tgt, 40, 200, k=3, frequent=2)
    with pytest.raises(DataError, match="no vocabulary shortlist .* `python shortlist.py --workdir "):
        lexical.load(str(tmp_path))
    assert not lexical.exists(str(tmp_path))
    lexical.save(built, str(tmp_path))
    loaded = lexical.load(str(tmp_path))
    np.testing.assert_array_equal(loaded.table, built.table)
    np.testing.assert_array_equal(loaded.frequent, built.frequent)
    assert loaded.tgt_vocab_size == 200 and loaded.settings == built.settings
    loaded.check(str(tmp_path), 40, 200)
    with pytest.raises(DataError, match="built for vocabularies of 40 and 200 pieces, the model has 40 and 300"):
        loaded.check(str(tmp_path), 40, 300)


# ---------------------------------------------------------------------------
# The model side and the searches
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("tie", [pytest.param(False, marks=pytest.mark.slow), True])
def test_the_gathered_output_layer_gives_the_whole_layers_logits_of_those_ids(tie):
    model, params, _ = model_and_inference(tie)
    src = jnp.asarray([[3, 4, 2], [5, 2, 0]])
    memory, state = model.apply({"params": params}, src, method=Seq2Seq.encode)
    tokens = jnp.asarray([1, 1])
    full, _ = model.apply({"params": params}, memory, state, tokens, method=Seq2Seq.decode_step)
    ids = jnp.asarray([2, 7, 150, 299])
    output = model.apply({"params": params}, ids, method=Seq2Seq.output_layer)
    assert output[0].shape == (16, 4) and output[1].shape == (4,)
    some, _ = model.apply({"params": params}, memory, state, tokens, output=output, method=Seq2Seq.decode_step)
    np.testing.assert_allclose(np.asarray(some), np.asarray(full)[:, ids], rtol=1e-5, atol=1e-5)


def peaked(params, tie: bool, scale: float = 8.0):
    """The parameters with the output layer scaled up: sharper distributions over the pieces."""
    decoder = dict(params["decoder"])
    if tie:
        decoder["embed"] = {"embedding": params["decoder"]["embed"]["embedding"] * scale}
    else:
        decoder["output"] = {**params["decoder"]["output"], "kernel": params["decoder"]["output"]["kernel"] * scale}
    return {**params, "decoder": decoder}


def covering_shortlist(results) -> lexical.Shortlist:
    """A table under which each source's row set is EOS, UNK and the pieces of its full-vocabulary
    outputs (DISJOINT's sources share no piece)."""
    table = np.zeros((12, V), np.int32)
    for source, candidates in zip(DISJOINT, results):
        pieces = sorted({t for c in candidates for t in c.tokens})
        table[source[0], : len(pieces)] = pieces
    return lexical.Shortlist(table, np.zeros((0,), np.int32), V)


def masked_reference(model, params, sources, row_sets, opts: SearchOptions):
    """The whole-vocabulary search with NEVER outside each row's set, by the search functions
    directly: (tokens, scores) per source."""
    src = np.zeros((len(sources), 8), np.int32)
    for r, s in enumerate(sources):
        src[r, : len(s)], src[r, len(s)] = s, 2
    allowed = np.zeros((len(sources), V), bool)
    for r, ids in enumerate(row_sets):
        allowed[r, ids] = True
    memory, state = model.apply({"params": params}, jnp.asarray(src), method=Seq2Seq.encode)

    def step(memory, state, tokens):
        inner, allow = memory
        logits, state = model.apply({"params": params}, inner, state, tokens, method=Seq2Seq.decode_step)
        return jnp.where(allow, logits, lexical.NEVER), state

    max_steps = inference.max_steps_for(10, TINY_DECODE)
    caps = jnp.asarray(inference.length_caps(np.asarray([len(s) + 1 for s in sources]), TINY_DECODE, max_steps))
    memory = (memory, jnp.asarray(allowed))
    if opts.beam_size == 1:
        tokens, _, scores = search.greedy_search(
            step, memory, state, max_steps=max_steps, max_lengths=caps, return_log_prob=True, compact=False
        )
        tokens, scores = tokens[:, None], scores[:, None]
    else:
        tokens, scores, _ = search.batch_beam_search(
            step, memory, state, beam_size=opts.beam_size, max_steps=max_steps, max_length=caps, alpha=opts.alpha
        )
    cut = [[int(t) for t in row[0] if t != 0][:-1] if 2 in row[0] else [int(t) for t in row[0] if t] for row in tokens]
    return cut, np.asarray(scores[:, 0])


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("opts", [SearchOptions(with_scores=True), SearchOptions(beam_size=3, alpha=0.6)])
def test_with_every_output_piece_listed_the_outputs_equal_the_whole_vocabularys(tie, opts):
    """Greedy: each step's argmax is in the set, so the tokens are the whole vocabulary's. Beam
    search keeps the best hypotheses by scores that the restricted softmax raises unevenly (by
    log(Z / Z_set) per step), so its tokens are compared with the whole-vocabulary search under the
    same restriction (masked_reference), exactly, and with the unrestricted search on a trained
    model (test_shortlist_cli_builds_and_decode_translator_use_it): a random model's near-flat,
    repetitive hypotheses tie too closely for that."""
    model, params, engine = model_and_inference(tie)
    params = peaked(params, tie)
    full = engine.run(params, DISJOINT, opts)
    wide = dataclasses.replace(opts, nbest=opts.beam_size)
    shortlist = covering_shortlist(engine.run(params, DISJOINT, wide))
    restricted = engine.run(params, DISJOINT, opts, shortlist=shortlist)
    if opts.beam_size == 1:
        assert first_tokens(restricted) == first_tokens(full)
    # Scores: those of the whole vocabulary with NEVER outside each row's set (the softmax is the set's).
    sets = [shortlist.row_ids(s) for s in DISJOINT]
    tokens, scores = masked_reference(model, params, DISJOINT, sets, opts)
    assert first_tokens(restricted) == tokens
    np.testing.assert_allclose([r[0].score for r in restricted], scores, rtol=1e-4, atol=1e-4)
    assert all(len(s) < 128 for s in sets)  # the lists did restrict the vocabulary (size 128 < 300)


@pytest.mark.parametrize(
    "opts",
    [
        SearchOptions(with_scores=True),
        SearchOptions(beam_size=3, nbest=2),
        SearchOptions(sample=True, nbest=3, top_k=5, top_p=0.9),
        SearchOptions(no_repeat_ngram=2, token_scores=True),
    ],
)
def test_outputs_stay_in_their_own_set_and_a_sentence_alone_equals_it_in_a_batch(opts):
    """Each source's set differs (its own pieces); every output piece is from its own set, and each
    sentence searched alone gives the tokens it gets among the others."""
    _, params, engine = model_and_inference()
    table = np.zeros((12, 3), np.int32)
    for piece in range(3, 12):
        table[piece] = [20 + piece, 40 + piece, 200 + piece]
    shortlist = lexical.Shortlist(table, np.asarray([4, 5], np.int32), V)
    together = engine.run(params, SOURCES, opts)  # the whole vocabulary: other pieces win
    batch = engine.run(params, SOURCES, opts, shortlist=shortlist)
    assert first_tokens(batch) != first_tokens(together)
    for source, candidates in zip(SOURCES, batch):
        allowed = set(shortlist.row_ids(source).tolist())
        assert all(set(c.tokens) <= allowed for c in candidates)
    for i, source in enumerate(SOURCES):
        alone = engine.run(params, [source], opts, shortlist=shortlist, sample_keys=[(0, i)])
        assert [c.tokens for c in alone[0]] == [c.tokens for c in batch[i]]
        np.testing.assert_allclose([c.score for c in alone[0]], [c.score for c in batch[i]], rtol=1e-4, atol=1e-4)


def test_a_constraint_phrase_outside_the_list_and_a_forced_prefix_are_still_produced():
    _, params, engine = model_and_inference()
    shortlist = empty_shortlist()
    out = engine.run(
        params,
        SOURCES[:2],
        SearchOptions(beam_size=4),
        constraints=[[[250, 251]], []],
        prefixes=[[], [260]],
        shortlist=shortlist,
    )
    assert first_tokens(out)[0][:2] == [250, 251] or [250, 251] in [
        first_tokens(out)[0][i : i + 2] for i in range(len(first_tokens(out)[0]))
    ]
    assert out[0][0].constraints_met
    assert first_tokens(out)[1][0] == 260 and set(first_tokens(out)[1][1:]) <= {3}  # EOS, UNK: all it may say


def test_an_ensemble_restricts_each_member_alike():
    model, params, _ = model_and_inference()
    other, other_params = tiny_model(seed=1, tgt_vocab_size=V)
    engine = Inference([model, other], TINY_DECODE, 10)
    table = np.zeros((12, 2), np.int32)
    table[3:] = [[60 + p, 90 + p] for p in range(3, 12)]
    shortlist = lexical.Shortlist(table, np.zeros((0,), np.int32), V)
    out = engine.run((params, other_params), (SOURCES, SOURCES), SearchOptions(beam_size=2), shortlist=shortlist)
    for source, candidates in zip(SOURCES, out):
        assert set(candidates[0].tokens) <= set(shortlist.row_ids(source).tolist())


def test_a_shortlist_shape_covers_a_smaller_one_never_a_whole_vocabulary_one():
    key = SearchOptions().compiled_key()
    big, small, none = (BatchShape(key, 4, (16,), size) for size in (256, 128, 0))
    assert big.covers(small) and not small.covers(big)
    assert not big.covers(none) and not none.covers(small) and none.covers(none)


def test_the_server_compiles_an_inference_shape_with_its_shortlist_size():
    _, params, engine = model_and_inference()
    shape = BatchShape(SearchOptions(with_scores=True).compiled_key(), 2, (8,), 128)
    engine.compile_shape(params, shape)  # the warm-up's call: runs once on an all-PAD batch


# ---------------------------------------------------------------------------
# The commands
# ---------------------------------------------------------------------------


def test_decode_shortlist_without_one_is_an_error_line_naming_the_command(tmp_path, capsys):
    flags = decode_flags(tmp_path, shortlist=True, input=str(tmp_path / "in.txt"))
    (tmp_path / "in.txt").write_text("a\n")
    assert decode_cli.run(flags) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert f"build it with `python shortlist.py --workdir {tmp_path}`" in err


@pytest.mark.slow
def test_shortlist_cli_builds_and_decode_translator_use_it(trained_workdir, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    shutil.copytree(trained_workdir.workdir, workdir)
    assert shortlist_cli.run(build_flags(workdir)) == 0
    assert "wrote" in capsys.readouterr().out and lexical.exists(workdir)
    assert lexical.load(workdir).settings["valid"]["coverage"] > 0.5
    lines = ["the red cat sees a dog", "a big house"]
    full = Translator(workdir).translate(lines, SearchOptions(beam_size=2))
    short = Translator(workdir, shortlist=True)
    assert short.shortlist is not None
    restricted = short.translate(lines, SearchOptions(beam_size=2))
    assert [h[0].text for h in restricted] == [h[0].text for h in full]
    flags = build_flags(workdir, k=-1)
    assert shortlist_cli.run(flags) == 1 and capsys.readouterr().err.startswith("error: ")


def build_flags(workdir: str, **overrides):
    values = dict(workdir=workdir, k=20, frequent=20, method="ibm1", iterations=5, max_pairs=0)
    return types.SimpleNamespace(**{**values, **overrides})


def test_inference_without_a_shortlist_is_unchanged():
    """A shortlist of the whole vocabulary for every row (size capped at V) gives the plain search's outputs."""
    _, params, engine = model_and_inference()
    table = np.tile(np.arange(V, dtype=np.int32), (12, 1))
    everything = lexical.Shortlist(table, np.zeros((0,), np.int32), V)
    for opts in (SearchOptions(with_scores=True), SearchOptions(beam_size=3)):
        plain = engine.run(params, SOURCES, opts)
        listed = engine.run(params, SOURCES, opts, shortlist=everything)
        assert first_tokens(plain) == first_tokens(listed)
        np.testing.assert_allclose([r[0].score for r in plain], [r[0].score for r in listed], rtol=1e-4, atol=1e-4)


def test_the_servers_warm_up_covers_every_shortlist_size_with_the_largest():
    translator = types.SimpleNamespace(
        shortlist=empty_shortlist(),
        members=[types.SimpleNamespace(config=types.SimpleNamespace(data=types.SimpleNamespace(max_len=10)))],
        inference=types.SimpleNamespace(padded_rows=lambda n: n),
    )
    assert shapes.shortlist_sizes(translator) == [128, 256, V]
    assert shapes.shortlist_sizes(types.SimpleNamespace(shortlist=None)) == [0]
    covering = shapes.warm_up_shapes(translator, [1, 4], 1, 2)
    assert {s.shortlist for s in covering} == {V}
    own = BatchShape(SearchOptions(beam_size=4, with_scores=True).compiled_key(), 1, (8,), 128)
    assert any(s.covers(own) for s in covering)
    full = shapes.warm_up_shapes(translator, [1, 4], 1, 2, full_beam_sizes=[4])
    assert {s.shortlist for s in full if s.key.beam_size == 4 and s.widths == (8,)} == {128, 256, V}


def test_the_exported_loader_builds_the_same_sets_and_batches():
    table = np.zeros((12, 3), np.int32)
    table[3:] = [[20 + p, 150 + p, 1] for p in range(3, 12)]
    shortlist = lexical.Shortlist(table, np.asarray([4, 9], np.int32), V)
    rows = export_loader.shortlist_rows(shortlist.table, shortlist.frequent, V, SOURCES)
    assert [r.tolist() for r in rows] == [shortlist.row_ids(s).tolist() for s in SOURCES]
    for got, want in zip(export_loader.shortlist_batch(rows, 8, V, lexical.MIN_SIZE), shortlist.batch(rows, 8)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_an_export_with_the_shortlist_translates_as_the_translator_does(trained_workdir, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(trained_workdir.workdir, workdir)
    with pytest.raises(DataError, match="no vocabulary shortlist"):
        export.export_model(workdir, str(tmp_path / "none"), rows=[4], shortlist=True, log=lambda m: None)
    assert shortlist_cli.run(build_flags(workdir, k=3, frequent=5)) == 0
    directory = str(tmp_path / "artefact")
    manifest = export.export_model(workdir, directory, rows=[4], beam_size=2, shortlist=True, log=lambda m: None)
    assert manifest["shortlist"] == {"file": lexical.TABLE_FILE, "min_size": lexical.MIN_SIZE}
    with open(trained_workdir.paths["valid_src"], encoding="utf-8") as f:
        lines = f.read().splitlines()[:8]
    loaded = export_loader.ExportedModel(directory)
    translator = Translator(workdir, shortlist=True)
    alpha = manifest["searches"]["default"]["alpha"]
    for name, opts in (("default", SearchOptions(beam_size=2, alpha=alpha)), ("greedy", SearchOptions())):
        want = [h[0].text for h in translator.translate(lines, opts, batch_size=4)]
        assert loaded.translate(lines, name) == want
