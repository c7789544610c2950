"""Minimum Bayes risk decoding (s2s_jax/decoding/mbr.py): the utilities equal sacrebleu's, the
choice on hand-made candidate sets, the candidates' samples, decode.py --mbr, the Translator
and the server."""

from __future__ import annotations

import itertools
import json
import random
import time

import httpx
import numpy as np
import pytest
from pydantic import ValidationError
from sacrebleu.metrics import BLEU, CHRF

from s2s_jax.cli import decode as decode_cli
from s2s_jax.decoding import mbr
from s2s_jax.decoding.inference import Inference, SearchOptions
from s2s_jax.decoding.mbr import MBROptions, ranking
from s2s_jax.decoding.pairwise_metrics import bleu_matrix, chrf_matrix, utility_matrix
from s2s_jax.decoding.translator import Translator
from s2s_jax.serving import app as serving
from s2s_jax.serving import shapes
from s2s_jax.serving.translate_request import translate_request_model
from tests.helpers import decode_flags, run_cli, tiny_model
from tests.serving_helpers import in_process
from tests.test_inference import DECODE

SENTENCES = [
    "A man in a blue shirt is standing on a ladder.",
    "A man in a blue shirt stands on a ladder .",
    "Two dogs play in the snow!",
    "a a a a a a",
    "Ein Mann fährt Fahrrad, schnell.",
    "x",
    "",
    "   spaced   out   ",
    "the the the cat",
    '(quoted) "words" -- and 3.5 numbers, 1,000 of them',
]


def _sacrebleu(metric, texts):
    return np.asarray([[metric.sentence_score(h, [r]).score for r in texts] for h in texts])


def test_the_matrices_equal_sacrebleus_sentence_chrf_and_bleu():
    rng = random.Random(0)
    words = " ".join(SENTENCES).split()
    texts = SENTENCES + [" ".join(rng.choice(words) for _ in range(rng.randint(1, 9))) for _ in range(20)]
    np.testing.assert_allclose(chrf_matrix(texts), _sacrebleu(CHRF(), texts), rtol=0, atol=1e-9)
    np.testing.assert_allclose(bleu_matrix(texts), _sacrebleu(BLEU(effective_order=True), texts), rtol=0, atol=1e-9)
    none = BLEU(effective_order=True, tokenize="none")
    np.testing.assert_allclose(bleu_matrix(texts, tokenize="none"), _sacrebleu(none, texts), rtol=0, atol=1e-9)
    assert utility_matrix([], "chrf").shape == (0, 0)
    with pytest.raises(ValueError, match="unknown MBR metric 'ter'"):
        utility_matrix(texts, "ter")


def _brute_force(texts: list[str], metric) -> list[float]:
    """Each position's mean sacrebleu utility against every other position (duplicates included)."""
    return [
        np.mean([metric.sentence_score(h, [r]).score for j, r in enumerate(texts) if j != i])
        for i, h in enumerate(texts)
    ]


@pytest.mark.parametrize("name, metric", [("chrf", CHRF()), ("bleu", BLEU(effective_order=True))])
def test_duplicates_are_scored_once_and_weigh_by_their_count(name, metric):
    rng = random.Random(1)
    pool = ["a dog runs on the grass", "a dog is running on grass", "the dog runs", "a cat sleeps", ""]
    for _ in range(5):
        texts = [rng.choice(pool) for _ in range(rng.randint(2, 9))]
        ranked = ranking(texts, name)
        assert sorted(i for i, _ in ranked) == sorted({texts.index(t) for t in texts})  # distinct, first occurrence
        want = _brute_force(texts, metric)
        for i, utility in ranked:
            assert utility == pytest.approx(want[i], abs=1e-9)
        assert [u for _, u in ranked] == sorted((u for _, u in ranked), reverse=True)


@pytest.mark.parametrize("metric", ["chrf", "bleu"])
def test_the_consensus_candidate_wins_and_the_outlier_comes_last(metric):
    texts = [
        "a man rides a red bike down the street .",  # shares most with every other candidate
        "a man rides a bike down the street .",
        "a man rides a red bicycle down the road .",
        "the man is riding a red bike down a street .",
        "two dogs play in the snow .",
        "a man rides a red bike .",
    ]
    ranked = ranking(texts, metric)
    assert ranked[0][0] == 0 and ranked[-1][0] == 4
    assert ranking(texts[::-1], metric)[0][0] == len(texts) - 1  # the same text, wherever it is


@pytest.mark.parametrize("metric, text", [("chrf", "a dog runs ."), ("bleu", "a dog runs on grass")])
def test_identical_candidates_give_that_candidate(metric, text):
    ((index, utility),) = ranking([text] * 8, metric)
    assert index == 0 and utility == pytest.approx(100.0, abs=1e-9)
    assert ranking(["", ""], metric) == [(0, 0.0)]
    assert ranking([], metric) == []


def test_the_metric_switch_changes_the_pick():
    texts = ["the dog is running fast", "a dog is running", "the dog is running"]
    assert texts[ranking(texts, "chrf")[0][0]] == "the dog is running fast"  # shares more characters
    assert texts[ranking(texts, "bleu")[0][0]] == "the dog is running"  # shares more word 4-grams


def test_ties_go_to_the_earlier_candidate():
    assert ranking(["xyz", "uvw"]) == [(0, 0.0), (1, 0.0)]
    assert ranking(["uvw", "xyz"]) == [(0, 0.0), (1, 0.0)]


def test_mbr_options_are_checked_and_draw_their_candidates():
    for bad, message in (
        (MBROptions(1), "at least 2 candidates"),
        (MBROptions(4, metric="ter"), "unknown MBR metric 'ter'"),
        (MBROptions(4, candidates="greedy"), "unknown MBR candidates 'greedy'"),
    ):
        with pytest.raises(ValueError, match=message):
            bad.check()
    base = SearchOptions(beam_size=5, alpha=0.7, temperature=0.8, top_p=0.9)
    samples = MBROptions(16).search_options(base)
    assert (samples.sample, samples.nbest, samples.beam_size, samples.temperature, samples.top_p) == (
        True,
        16,
        1,
        0.8,
        0.9,
    )
    nbest = MBROptions(8, candidates="nbest").search_options(base)
    assert (nbest.sample, nbest.nbest, nbest.beam_size, nbest.alpha) == (False, 8, 8, 0.7)
    assert MBROptions(4, candidates="nbest").search_options(base).beam_size == 5  # a wider beam stays
    for options in (MBROptions(16), MBROptions(8, candidates="nbest")):
        once = options.search_options(base)
        assert options.search_options(once) == once
    assert mbr.expected_utilities(np.asarray([[100.0]]), np.asarray([1.0])).tolist() == [100.0]


# ---------------------------------------------------------------------------
# The candidates: samples of the one inference path
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    model, params = tiny_model(0)
    rng = np.random.default_rng(1)
    sources = [rng.integers(4, 12, size=rng.integers(1, 9)).tolist() for _ in range(7)]
    return Inference(model, DECODE, max_src_len=10), params, sources


def _tokens(results):
    return [[c.tokens for c in r] for r in results]


@pytest.mark.slow
def test_a_sentences_samples_depend_only_on_it_its_seed_and_their_index(tiny):
    """The N samples of a source are one batch of repeated rows; sample k draws from its own key, so
    asking for more samples keeps the first ones, and batch size, order and neighbours change nothing."""
    engine, params, sources = tiny
    eight = engine.run(params, sources, SearchOptions(sample=True, nbest=8, temperature=1.5), batch_size=8, seed=7)
    four = engine.run(params, sources, SearchOptions(sample=True, nbest=4, temperature=1.5), batch_size=8, seed=7)
    assert [r[:4] for r in _tokens(eight)] == _tokens(four)
    assert len({tuple(t) for r in _tokens(eight) for t in r}) > len(sources)  # the samples differ
    alone = [engine.run(params, [src], SearchOptions(sample=True, nbest=8, temperature=1.5), sample_keys=[(7, i)])[0]
             for i, src in enumerate(sources)]  # fmt: skip
    assert _tokens(alone) == _tokens(eight)
    again = engine.run(params, sources, SearchOptions(sample=True, nbest=8, temperature=1.5), batch_size=2, seed=7)
    assert _tokens(again) == _tokens(eight)
    other = engine.run(params, sources, SearchOptions(sample=True, nbest=8, temperature=1.5), batch_size=8, seed=8)
    assert _tokens(other) != _tokens(eight)


# ---------------------------------------------------------------------------
# Bad options: one error line, before any model loads
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mbr": 1}, "error: --mbr must be 0 (off) or at least 2 candidates to compare, got 1"),
        ({"mbr": -4}, "error: --mbr must be 0 (off) or at least 2 candidates to compare, got -4"),
        ({"mbr": 4, "nbest": 5}, "error: --nbest 5: MBR ranks at most its --mbr 4 candidates"),
        ({"mbr": 4, "mbr_metric": "ter"}, "error: unknown MBR metric 'ter': one of chrf, bleu"),
        ({"mbr": 4, "mbr_candidates": "greedy"}, "error: unknown MBR candidates 'greedy': one of samples, nbest"),
        (
            {"mbr": 4, "sample": True, "mbr_candidates": "nbest"},
            "error: --sample with --mbr_candidates nbest: the candidates are either samples or the n-best",
        ),
        ({"mbr": 4, "rescore": "x.txt"}, "error: --mbr chooses among translations; --rescore translates nothing"),
    ],
)
def test_bad_mbr_flags_are_one_error_line(tmp_path, capsys, overrides, message):
    status = decode_cli.run(decode_flags(tmp_path / "no-workdir", **overrides))
    out, err = capsys.readouterr()
    assert status == 1 and out == "" and err == message + "\n"


# ---------------------------------------------------------------------------
# The server's request field and warm-up
# ---------------------------------------------------------------------------


def test_the_request_field_publishes_its_limits():
    model = translate_request_model((1, 4), 3, 100, 4, max_mbr=8)
    field = next(s for s in model.model_json_schema()["properties"]["mbr"]["anyOf"] if s.get("type") == "integer")
    assert (field["minimum"], field["maximum"]) == (2, 8)
    assert model.model_validate({"text": "a", "mbr": 8, "mbr_metric": "bleu"}).mbr == 8
    assert model.model_validate({"text": "a", "mbr": 4.0}).mbr == 4  # as JSON Schema reads integers
    for bad in ({"mbr": 9}, {"mbr": 1}, {"mbr": True}, {"mbr": 4, "mbr_metric": "ter"}):
        with pytest.raises(ValidationError):
            model.model_validate({"text": "a", **bad})
    off = translate_request_model((1, 4), 3, 100, 4, max_mbr=0)
    assert off.model_validate({"text": "a"}).mbr is None
    with pytest.raises(ValidationError):
        off.model_validate({"text": "a", "mbr": 2})


def test_the_covering_keys_cover_every_mbr_search():
    for beam_sizes, max_nbest, max_mbr in (((1, 4), 2, 8), ((1, 2, 3), 3, 16), ((5,), 5, 0)):
        covering = shapes.covering_keys(beam_sizes, max_nbest, max_mbr)
        assert len(covering) == len(shapes.covering_keys(beam_sizes, max_nbest))
        searches = [
            MBROptions(n).search_options(SearchOptions(top_k=k, top_p=p, with_scores=True)).compiled_key()
            for n, k, p in itertools.product(range(2, max_mbr + 1), (0, 3), (1.0, 0.5))
        ]
        for key in searches:
            assert any(shapes.BatchShape(c, 4, (16,)).covers(shapes.BatchShape(key, 4, (16,))) for c in covering), key
        assert len(set(searches)) <= shapes.accepted_key_count(beam_sizes, max_nbest, max_mbr)


# ---------------------------------------------------------------------------
# decode.py, the Translator and the server on the tiny trained workdir
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lines_file(trained_workdir, tmp_path_factory):
    path = tmp_path_factory.mktemp("mbr") / "in.txt"
    with open(trained_workdir.paths["valid_src"], encoding="utf-8") as f:
        lines = f.read().splitlines()[:5]
    path.write_text("\n".join(lines[:2] + [""] + lines[2:]) + "\n", encoding="utf-8")
    return str(path)


def _decode(capsys, workdir, **overrides) -> list[str]:
    status = decode_cli.run(decode_flags(workdir, **overrides))
    out, err = capsys.readouterr()
    assert status == 0, err
    return out.splitlines()


def _by_line(rows: list[str]) -> dict[int, list[tuple[float, str]]]:
    """An n-best file's (score, text) rows by input line."""
    out: dict[int, list[tuple[float, str]]] = {}
    for row in rows:
        line, _, score, text = row.split("\t", 3)
        out.setdefault(int(line), []).append((float(score), text))
    return out


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
@pytest.mark.parametrize("candidates", ["samples", "nbest"])
def test_decode_mbr_picks_the_consensus_of_its_candidates(trained_workdir, lines_file, capsys, candidates):
    """decode.py --mbr 4 writes, per line, the pick of `ranking` among the candidates --sample --nbest 4
    (same seed) or the beam's 4-best write; --nbest 2 the two best distinct ones, scored by expected
    utility; the same seed gives the same output."""
    wd, n = trained_workdir.workdir, 4
    common = dict(input=lines_file, seed=3, temperature=1.5)
    drawn = {"sample": True} if candidates == "samples" else {"beam_size": n}
    pool = _by_line(_decode(capsys, wd, nbest=n, **drawn, **common))
    pool = {line: [(s, t) for s, t in rows if s > -1e30] for line, rows in pool.items()}  # filled beam slots
    for metric in ("chrf", "bleu"):
        flags = dict(mbr=n, mbr_metric=metric, mbr_candidates=candidates, beam_size=n, **common)
        best = _decode(capsys, wd, **flags)
        assert len(best) == len(pool)
        for line, texts in pool.items():
            texts = [t for _, t in texts]
            ranked = ranking(texts, metric)
            assert best[line] == texts[ranked[0][0]], (line, metric)
        assert _decode(capsys, wd, **flags) == best
        two = _by_line(_decode(capsys, wd, nbest=2, **flags))
        for line, rows in two.items():
            ranked = ranking([t for _, t in pool[line]], metric)
            assert [t for _, t in rows] == [pool[line][i][1] for i, _ in ranked[:2]]
            assert [s for s, _ in rows] == pytest.approx([u for _, u in ranked[:2]], abs=1e-4)
            assert rows[0][1] == best[line]
    assert best[2] == ""  # an empty line stays empty


@pytest.mark.slow
def test_decode_py_mbr_as_a_command(trained_workdir, lines_file, tmp_path):
    scores = tmp_path / "scores.json"
    args = ["decode.py", f"--workdir={trained_workdir.workdir}", f"--input={lines_file}", "--mbr=4"]
    args += ["--mbr_metric=bleu", f"--reference={lines_file}", f"--score_json={scores}"]
    result = run_cli(args, env_cache=trained_workdir.cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stdout.splitlines()) == 6 and "chrF = " in result.stderr
    assert json.loads(scores.read_text())["mbr"] == {"size": 4, "metric": "bleu", "candidates": "samples"}


@pytest.mark.slow
def test_an_ensemble_of_a_model_with_itself_picks_what_the_model_picks(trained_workdir, lines_file):
    wd = trained_workdir.workdir
    with open(lines_file, encoding="utf-8") as f:
        lines = f.read().splitlines()
    one = Translator(wd).mbr(lines, 6, seed=1)
    two = Translator([wd, wd]).mbr(lines, 6, seed=1)
    assert [[h.text for h in r] for r in two] == [[h.text for h in r] for r in one]
    assert [h[0].score for h in two] == pytest.approx([h[0].score for h in one], abs=1e-9)


@pytest.mark.slow
def test_the_server_answers_mbr_requests_as_the_translator_does(trained_workdir):
    """In process: an `mbr` request gives the Translator's MBR picks for its seed (text j drawn
    from (seed, j)), its nbest cut to the request's; no request waits on a compile."""
    translator = Translator(trained_workdir.workdir)
    settings = serving.ServeSettings(max_batch=4, max_wait_ms=1, beam_sizes=(1, 2), max_nbest=2, max_mbr=6)
    app = serving.create_app(lambda: translator, settings, log=lambda message: None)
    texts = ["the red cat sees a dog", "a small house", "big car has the blue dog likes"]
    with in_process(app) as url, httpx.Client(base_url=url, timeout=300) as client:
        deadline = time.monotonic() + 300
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "not ready after 300 s"
            time.sleep(0.2)
        request = {"text": texts, "mbr": 5, "mbr_metric": "bleu", "seed": 9, "nbest": 2, "temperature": 1.4}
        response = client.post("/translate", json=request)
        assert response.status_code == 200, response.text
        got = response.json()["translations"]
        assert client.get("/info").json()["shapes"]["request_compiles"] == 0
        too_many = client.post("/translate", json={"text": "a", "mbr": 7})
        assert too_many.status_code == 422 and too_many.json()["field"] == "mbr"
        schema = client.get("/openapi.json").json()["components"]["schemas"]["TranslateRequest"]["properties"]
        assert {"type": "integer", "minimum": 2, "maximum": 6} in [
            {k: v for k, v in s.items() if k in ("type", "minimum", "maximum")} for s in schema["mbr"]["anyOf"]
        ]
    want = translator.translate(
        texts,
        SearchOptions(temperature=1.4, with_scores=True),
        sample_keys=[(9, j) for j in range(len(texts))],
        mbr=MBROptions(5, "bleu"),
    )
    assert [t["text"] for t in got] == [h[0].text for h in want]
    assert [[c["text"] for c in t["nbest"]] for t in got] == [[x.text for x in h[:2]] for h in want]
    assert [t["score"] for t in got] == pytest.approx([h[0].score for h in want], abs=1e-6)
