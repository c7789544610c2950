"""One model for several language pairs (data.pairs): language tags, temperature sampling across
pairs, per-pair validation, exact resume, and the target language in decode.py, the Python API
and the server."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

import httpx
import jax
import numpy as np
import pytest

from s2s_jax import bleu
from s2s_jax.cli import decode as decode_cli
from s2s_jax.config import checks
from s2s_jax.configs import default
from s2s_jax.data import batching, languages, pair_sampling, training_data
from s2s_jax.data.text import read_lines
from s2s_jax.decoding.inference import Inference, SearchOptions
from s2s_jax.decoding.translator import Translator
from s2s_jax.errors import ConfigError, DataError
from s2s_jax.models.seq2seq import Seq2Seq
from s2s_jax.serving import app as serving
from s2s_jax.training.train_log import read_metrics
from s2s_jax.workdir import checkpoints as ckpt_lib
from tests.helpers import decode_flags, run_cli, tiny_config, write_multilingual_corpus
from tests.serving_helpers import in_process

TARGETS = ["fr", "de", "cs"]  # of tests/conftest.py's MULTILINGUAL_PAIRS, in order


def multilingual_config(prefixes: dict, pairs: str = "en-fr,en-de,en-cs", **data):
    config = tiny_config({})
    config.data.pairs = pairs
    config.data.train_prefix = prefixes["train_prefix"]
    config.data.valid_prefix = prefixes["valid_prefix"]
    for key, value in data.items():
        setattr(config.data, key, value)
    return config


# ---------------------------------------------------------------------------
# Pairs, tags and the config
# ---------------------------------------------------------------------------


def test_pairs_are_parsed_and_bad_ones_are_config_errors():
    assert [p.name for p in languages.parse_pairs("de-en, fr-en,cs-en")] == ["de-en", "fr-en", "cs-en"]
    for bad in ("de", "de-en-fr", "de-de", "De-en", "de-en,de-en", ""):
        with pytest.raises(ConfigError, match="data.pairs"):
            languages.parse_pairs(bad)


@pytest.mark.parametrize(
    "pairs, mode, tags",
    [
        ("de-en,fr-en,cs-en", "auto", False),  # many to one: one target language, no tags
        ("en-de,en-fr", "auto", True),
        ("de-en,fr-en", "always", True),
        ("en-de,en-fr", "never", False),
    ],
)
def test_tags_follow_lang_tags_and_the_target_languages(pairs, mode, tags):
    config = default.get_config()
    config.data.pairs, config.data.lang_tags = pairs, mode
    run = languages.run_languages(config.data)
    assert run.tags is tags
    assert run.symbols == ([languages.tag(t) for t in run.targets] if tags else [])
    assert run.targets == tuple(dict.fromkeys(p.split("-")[1] for p in pairs.split(",")))


def test_the_target_language_is_required_with_several_and_checked_with_one():
    several = languages.RunLanguages((), ("de", "fr"), True)
    with pytest.raises(ValueError, match="several languages.*one of de, fr"):
        several.check_target(None)
    with pytest.raises(ValueError, match="'cs'.*into de, fr only"):
        several.check_target("cs")
    assert several.source_tag_language("fr") == "fr"
    one = languages.RunLanguages((), ("en",), False)
    assert one.check_target(None) == one.check_target("en") == "en"
    assert one.source_tag_language("en") is None  # untagged
    with pytest.raises(ValueError, match="into en only"):
        one.check_target("de")
    config = default.get_config()
    config.data.train_src, config.data.train_tgt = "d/train.de", "d/train.en"  # a bilingual run
    assert languages.run_languages(config.data).targets == ("en",)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"train_src": "x.de"}, "data.pairs and data.train_src together"),
        ({"holdout_valid": 10}, "data.pairs and data.holdout_valid together"),
        ({"valid_prefix": ""}, "data.pairs needs data.valid_prefix"),
        ({"joint_vocab": False}, "one joint sentencepiece model"),
        ({"pair_temperature": 0.0}, "data.pair_temperature must be a positive"),
        ({"pairs": "en"}, "is not a pair like 'de-en'"),
        ({"pairs": ""}, "data.train_prefix names files per language pair: set data.pairs too"),
    ],
)
def test_config_mistakes_are_one_clear_error(change, message):
    config = multilingual_config({"train_prefix": "d/train", "valid_prefix": "d/val"})
    for key, value in change.items():
        setattr(config.data, key, value)
    with pytest.raises(ConfigError, match=message):
        checks.validate(config)


def test_a_missing_validation_file_is_an_error_and_a_missing_test_file_a_note(tmp_path):
    prefixes = write_multilingual_corpus(str(tmp_path), test_languages=("en", "fr"))
    config = multilingual_config(prefixes, test_prefix=prefixes["test_prefix"])
    notes = []
    found = languages.pair_files(config.data, "test", notes.append)
    assert [f.pair.name for f in found] == ["en-fr"]
    assert notes == [f"test: en-{lang} has no {tmp_path}/test.{lang}; left out" for lang in ("de", "cs")]
    os.remove(tmp_path / "valid.cs")
    with pytest.raises(DataError, match=f"pair en-cs needs {tmp_path}/valid.cs"):
        languages.pair_files(config.data, "valid")


# ---------------------------------------------------------------------------
# The prepared corpus: one joint tokenizer, tags as single pieces
# ---------------------------------------------------------------------------


def test_language_tags_are_single_pieces_in_training_and_validation_ids(tmp_path):
    prefixes = write_multilingual_corpus(str(tmp_path))
    config = multilingual_config(prefixes, spm_alpha=0.5)  # sampled segmentations keep the tag whole too
    corpus = training_data.prepare(config, str(tmp_path / "w"), verbose=False)
    tok = corpus.src_tokenizer
    assert tok is corpus.tgt_tokenizer  # one joint model
    tag_ids = {lang: tok.piece_id(languages.tag(lang)) for lang in TARGETS}
    assert None not in tag_ids.values() and len(set(tag_ids.values())) == 3
    for lang, tag_id in tag_ids.items():
        ids = tok.tokenize([languages.tagged("the red cat", lang)])[0]
        assert ids[0] == tag_id and ids[1:] == tok.tokenize(["the red cat"])[0]
        assert tok.pieces(ids)[0] == f"<2{lang}>"
    # Validation: each pair's sources start with its target's tag, in data.pairs order.
    assert [name for name, _, _ in corpus.valid_groups] == ["en-fr", "en-de", "en-cs"]
    for (_, start, end), lang in zip(corpus.valid_groups, TARGETS):
        assert end - start == 20
        assert all(ids[0] == tag_ids[lang] and tag_ids[lang] not in ids[1:] for ids in corpus.valid_src_ids[start:end])
    # Training: every source row starts with one tag, in every epoch's sampled segmentation.
    for epoch in (0, 1):
        for batch in corpus.train_batches.epoch(epoch):
            real = batch["src"][batch["index"] >= 0]
            assert np.isin(real[:, 0], list(tag_ids.values())).all()
            assert np.isin(real[:, 1:], list(tag_ids.values())).sum() == 0


def test_a_given_tokenizer_without_the_tags_is_refused(tmp_path):
    from s2s_jax.data.tokenizer import train_tokenizer

    prefixes = write_multilingual_corpus(str(tmp_path))
    plain = train_tokenizer(read_lines(prefixes["train_prefix"] + ".fr") * 2, str(tmp_path / "plain"), 60)
    config = multilingual_config(prefixes, spm_model=plain.model_path)
    with pytest.raises(DataError, match="has no piece <2fr>"):
        training_data.prepare(config, str(tmp_path / "w"), verbose=False)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_a_pair_the_length_filter_empties_is_an_error_naming_it(tmp_path, temperature):
    """Not a pair silently left untrained (T = 1) nor a sampler drawing from no rows (T > 1)."""
    prefixes = write_multilingual_corpus(str(tmp_path))
    lines = read_lines(prefixes["train_prefix"] + ".de")
    with open(prefixes["train_prefix"] + ".de", "w", encoding="utf-8") as f:
        f.write("".join(" ".join([line] * 9) + "\n" for line in lines))  # every line past data.max_len
    config = multilingual_config(prefixes, pair_temperature=temperature)
    with pytest.raises(DataError, match="^pair en-de: no training pair is at most data.max_len=16 tokens long$"):
        training_data.prepare(config, str(tmp_path / "w"), verbose=False)


# ---------------------------------------------------------------------------
# Temperature sampling across pairs
# ---------------------------------------------------------------------------


def test_temperature_gives_each_pair_its_share():
    sizes = np.array([900, 100])
    np.testing.assert_array_equal(pair_sampling.epoch_counts(sizes, 1.0), sizes)  # proportional
    np.testing.assert_array_equal(pair_sampling.epoch_counts(sizes, 2.0), [750, 250])  # ~ sqrt: 30 : 10
    np.testing.assert_array_equal(pair_sampling.epoch_counts(sizes, 1e9), [500, 500])  # flat
    pair_ids = np.repeat([0, 1], sizes)
    sampler = pair_sampling.PairSampler(pair_ids, 2.0, seed=3)
    epoch = sampler(0)
    assert len(epoch) == 1000
    small = np.bincount(epoch[epoch >= 900], minlength=1000)[900:]
    assert small.sum() == 250 and set(small) == {2, 3}  # up-sampled: every row 2 or 3 times
    large = epoch[epoch < 900]
    assert len(large) == len(set(large)) == 750  # down-sampled: a subset, each row once
    np.testing.assert_array_equal(sampler(0), epoch)  # rebuilt from (seed, epoch)
    assert not np.array_equal(sampler(1), epoch)
    assert pair_sampling.sampler(pair_ids, 2, 1.0, 0) is None  # T = 1: every row once, as without pairs


def test_sampled_batches_hold_the_shares_and_resume_exactly():
    rng = np.random.default_rng(0)
    n = np.array([300, 60])
    src = [list(rng.integers(4, 50, rng.integers(1, 12))) for _ in range(n.sum())]
    tgt = [list(rng.integers(4, 50, rng.integers(1, 12))) for _ in range(n.sum())]
    pair_ids = np.repeat([0, 1], n)
    sampler = pair_sampling.PairSampler(pair_ids, 3.0, seed=0)
    batches = batching.BucketedBatches(src, tgt, 16, 3, seed=0, pad_multiple=2, sampler=sampler)
    for epoch in (0, 1):
        rows = np.concatenate([r[r >= 0] for _, r in batches.plan(epoch)])
        np.testing.assert_array_equal(np.bincount(pair_ids[rows], minlength=2), sampler.counts)
    plain = batching.BucketedBatches(src, tgt, 16, 3, seed=0, pad_multiple=2)
    assert plain.fingerprint != batches.fingerprint  # a resumed run cannot silently change T
    first = batching.TrainIterator(batches)
    for _ in range(batches.num_batches + 5):  # into the second epoch
        next(first)
    state = json.loads(json.dumps(first.get_state()))
    second = batching.TrainIterator(batching.BucketedBatches(src, tgt, 16, 3, seed=0, pad_multiple=2, sampler=sampler))
    second.set_state(state)
    for _ in range(2 * batches.num_batches):
        a, b = next(first), next(second)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


# ---------------------------------------------------------------------------
# A trained multilingual model (tests/conftest.py's multilingual_workdir)
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_per_pair_validation_equals_a_bilingual_evaluation_of_that_pair(multilingual_workdir):
    w = multilingual_workdir
    records = read_metrics(w.workdir)
    last = [r for r in records if r["step"] == 120 and "valid_bleu" in r][0]
    pairs = ["en-fr", "en-de", "en-cs"]
    assert last["valid_bleu"] == pytest.approx(np.mean([last[f"valid_bleu/{p}"] for p in pairs]), abs=1e-9)
    assert last["valid_chrf"] == pytest.approx(np.mean([last[f"valid_chrf/{p}"] for p in pairs]), abs=1e-9)
    assert max(last[f"valid_bleu/{p}"] for p in pairs) > 0  # something to compare
    translator = Translator(w.workdir, "latest")  # step 120: the parameters validated last
    sources = read_lines(w.prefixes["valid_prefix"] + ".en")
    for pair, lang in zip(pairs, TARGETS):
        refs = read_lines(f"{w.prefixes['valid_prefix']}.{lang}")
        hyps = [h[0].text for h in translator.translate(sources, batch_size=16, target_lang=lang)]
        assert bleu.corpus_bleu(hyps, refs) == last[f"valid_bleu/{pair}"], pair
        assert bleu.corpus_chrf(hyps, refs) == last[f"valid_chrf/{pair}"], pair
    events = os.listdir(os.path.join(w.workdir, "tensorboard"))
    assert events  # the same records, TensorBoard's copy


@pytest.mark.slow
def test_several_pairs_resume_bit_for_bit(multilingual_workdir, tmp_path):
    w = multilingual_workdir
    resumed = str(tmp_path / "resumed")
    shutil.copytree(w.workdir, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", "120"))  # a crash after step 60's checkpoint
    args = [a if not a.startswith("--workdir=") else f"--workdir={resumed}" for a in w.args]
    result = run_cli(args, env_cache=w.cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from step 60" in result.stdout
    a, _ = ckpt_lib.load_params(w.workdir, "latest")
    b, _ = ckpt_lib.load_params(resumed, "latest")
    jax.tree.map(np.testing.assert_array_equal, a, b)
    drop_speed = lambda rs: [{k: v for k, v in r.items() if k != "tokens_per_sec"} for r in rs]  # noqa: E731
    assert drop_speed(read_metrics(resumed)) == drop_speed(read_metrics(w.workdir))


@pytest.mark.slow
def test_translator_takes_the_target_language(multilingual_workdir):
    translator = Translator(multilingual_workdir.workdir)
    assert translator.target_languages == TARGETS
    with pytest.raises(ValueError, match="several languages.*one of fr, de, cs"):
        translator.translate(["the red cat"])
    with pytest.raises(ValueError, match="'xx'.*into fr, de, cs only"):
        Translator(multilingual_workdir.workdir, target_lang="xx")
    member = translator.members[0]
    tag_id = member.src_tokenizer.piece_id("<2de>")
    assert member.encode_lines(["the red cat"], print, "de")[0][0] == tag_id
    into_de = Translator(multilingual_workdir.workdir, target_lang="de")
    lines = ["the red cat", "a small dog sees the house", ""]
    assert [h[0].text for h in into_de.translate(lines)] == [
        h[0].text for h in translator.translate(lines, target_lang="de")
    ]
    assert into_de.translate(lines)[2][0].text == ""  # an empty line stays empty, untagged
    scores = translator.score(lines[:1], ["therden"], target_lang="de")
    assert np.isfinite(scores[0].total)


def test_language_tags_are_never_output(multilingual_workdir):
    """A tag is an input: even a model whose output layer favours one never outputs it, in greedy,
    beam or sampled search; the same model told nothing of its tags does (the test's teeth)."""
    translator = Translator(multilingual_workdir.workdir, target_lang="de")
    tok = translator.tgt_tokenizer
    tag_ids = tuple(tok.piece_id(languages.tag(lang)) for lang in TARGETS)
    assert translator.model.config.never_output == tag_ids
    member = translator.members[0]

    def favour_de_tag(path, leaf):
        is_output_bias = jax.tree_util.keystr(path).endswith("['output']['bias']")
        return leaf.at[tag_ids[1]].add(50.0) if is_output_bias else leaf

    member.params = jax.tree_util.tree_map_with_path(favour_de_tag, member.params)
    lines = ["the red cat", "a small dog sees the house"]
    for opts in (SearchOptions(beam_size=1), SearchOptions(beam_size=3), SearchOptions(sample=True)):
        for hyp in (h[0] for h in translator.translate(lines, opts, seed=3)):
            assert not set(hyp.tokens) & set(tag_ids) and "<2" not in hyp.text
    blind = Seq2Seq(dataclasses.replace(member.model.config, never_output=()))
    translator.inference = Inference(blind, translator.config.decode, translator.max_len)
    assert all(tag_ids[1] in h[0].tokens for h in translator.translate(lines, SearchOptions(beam_size=1)))


@pytest.mark.slow
def test_decode_needs_a_known_target_language(multilingual_workdir, tmp_path, capsys):
    source = tmp_path / "in.en"
    source.write_text("the red cat\na big car\n", encoding="utf-8")
    assert decode_cli.run(decode_flags(multilingual_workdir.workdir, input=str(source))) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: this model translates into several languages: give the target language "
        "(--target_lang, target_lang), one of fr, de, cs"
    ]
    assert decode_cli.run(decode_flags(multilingual_workdir.workdir, input=str(source), target_lang="it")) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: target language 'it': this model translates into fr, de, cs only"
    ]
    out = tmp_path / "out.cs"
    flags = decode_flags(multilingual_workdir.workdir, input=str(source), output=str(out), target_lang="cs")
    assert decode_cli.run(flags) == 0
    want = [
        h[0].text
        for h in Translator(multilingual_workdir.workdir).translate(["the red cat", "a big car"], target_lang="cs")
    ]
    assert read_lines(str(out)) == want


@pytest.mark.slow
@pytest.mark.parametrize("in_schema", [True, False], ids=["schema", "checked-after-load"])
def test_the_server_takes_target_lang_and_lists_the_languages(multilingual_workdir, in_schema):
    translator = Translator(multilingual_workdir.workdir)
    settings = serving.ServeSettings(max_batch=2, beam_sizes=(1,), max_nbest=1, max_mbr=0)
    load = lambda: Translator(multilingual_workdir.workdir)  # noqa: E731
    app = serving.create_app(load, settings, log=lambda message: None, target_languages=TARGETS if in_schema else None)
    with in_process(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        deadline = time.monotonic() + 300
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        info = client.get("/info").json()
        assert info["target_languages"] == TARGETS
        assert info["members"][0]["pairs"] == ["en-fr", "en-de", "en-cs"]
        texts = ["the red cat", "a small house"]
        got = {}
        for lang in TARGETS:
            response = client.post("/translate", json={"text": texts, "target_lang": lang})
            assert response.status_code == 200, response.text
            got[lang] = [t["text"] for t in response.json()["translations"]]
            assert got[lang] == [h[0].text for h in translator.translate(texts, target_lang=lang)]
        missing = client.post("/translate", json={"text": "the red cat"})
        assert missing.status_code == 422 and missing.json()["field"] == "target_lang"
        wrong = client.post("/translate", json={"text": "the red cat", "target_lang": "it"})
        assert wrong.status_code == 422 and wrong.json()["field"] == "target_lang"
        if in_schema:  # the published schema says the choices, and that one is required
            schema = client.get("/openapi.json").json()["components"]["schemas"]["TranslateRequest"]
            assert schema["properties"]["target_lang"]["enum"] == TARGETS and "target_lang" in schema["required"]
        else:
            assert "one of fr, de, cs" in missing.json()["detail"]
            assert "into fr, de, cs only" in wrong.json()["detail"]


@pytest.mark.slow
def test_export_refuses_a_model_that_tags_its_sources(multilingual_workdir, tmp_path):
    from s2s_jax.decoding.export import export_model

    with pytest.raises(ValueError, match="tags its sources"):
        export_model(multilingual_workdir.workdir, str(tmp_path / "out"), log=lambda message: None)


def test_a_shortlist_is_built_from_every_pair_and_decodes_each_language(multilingual_workdir, tmp_path, capsys):
    """shortlist.py reads a multilingual run's pairs (tagged sources) and reports validation coverage over
    all of them; a Translator with it outputs only each tagged source's listed pieces."""
    from s2s_jax.cli import shortlist as shortlist_cli
    from s2s_jax.decoding import shortlist as lexical
    from tests.test_shortlist import build_flags

    workdir = str(tmp_path / "run")
    shutil.copytree(multilingual_workdir.workdir, workdir)
    assert shortlist_cli.run(build_flags(workdir, k=8, frequent=5)) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "wrote" in out and "validation" in out
    pairs = languages.cleaned_split(Translator(workdir).config.data, "train", log=lambda message: None)
    assert f"{len(pairs):,} pairs" in out and {languages.TAG.match(s).group(1) for s, _ in pairs} == set(TARGETS)
    built = lexical.load(workdir)
    assert (
        built.settings["valid"]["coverage"] > 0.5 and built.settings["valid"]["mean_size"] < 0.7 * built.tgt_vocab_size
    )
    lines = ["the red cat", "a big car"]
    short = Translator(workdir, shortlist=True)
    member = short.members[0]
    outputs = set()
    for lang in TARGETS:
        tagged = member.src_tokenizer.tokenize([languages.tagged(line, lang) for line in lines])
        for source, hyps in zip(tagged, short.translate(lines, target_lang=lang)):
            allowed = set(built.row_ids(source).tolist())
            assert set(hyps[0].tokens) <= allowed, (lang, hyps[0].text)
            outputs.add(hyps[0].text)
    assert len(outputs) > 1  # the tags steer the restricted search too
