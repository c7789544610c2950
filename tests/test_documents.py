"""Documents, not only sentences: paragraphs cut into sentences (s2s_jax/data/sentences.py), translated
in one batch and joined with their own whitespace, from the Python API, decode.py and the server."""

from __future__ import annotations

import pathlib
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2s_jax.cli import decode as decode_cli
from s2s_jax.data import sentences
from s2s_jax.decoding.inference import SearchOptions
from s2s_jax.decoding.mbr import MBROptions
from s2s_jax.decoding.translator import Hypothesis, Translator
from s2s_jax.serving import app as serving
from s2s_jax.serving.translate_request import translate_request_model
from tests.helpers import decode_flags

# Sentences the tiny test model knows the words of; capitalised and ended so the segmenter cuts them.
SENTENCES = ["The red cat sees a dog.", "A small house has the blue car!", "Big dog likes the cat?", "The house."]
PARAGRAPH = "  " + " ".join(SENTENCES[:3]) + "\n\n\t" + SENTENCES[3] + "  "


# ---------------------------------------------------------------------------
# Cutting and joining (no model)
# ---------------------------------------------------------------------------


def test_a_paragraph_is_its_sentences_and_the_whitespace_between():
    document = sentences.segment(PARAGRAPH, "en")
    assert document.sentences == tuple(SENTENCES)
    assert document.gaps == ("  ", " ", " ", "\n\n\t", "  ")
    assert document.join([s.upper() for s in SENTENCES]) == PARAGRAPH.upper()


def test_blank_lines_and_surrounding_whitespace_survive():
    text = "\n  Erster Satz. Zweiter Satz.\r\n\n   \nDritter Satz!  \n"
    document = sentences.segment(text, "de")
    assert document.sentences == ("Erster Satz.", "Zweiter Satz.", "Dritter Satz!")
    assert document.join(["1", "2", "3"]) == "\n  1 2\r\n\n   \n3  \n"
    for blank in ("", "   ", "\n\n", " \t\n "):
        assert sentences.segment(blank).sentences == () and sentences.segment(blank).join([]) == blank


def test_abbreviations_and_dates_do_not_end_a_sentence():
    text = "Dr. Müller kam z. B. am 3. Mai. Gut."
    assert sentences.segment(text, "de").sentences == ("Dr. Müller kam z. B. am 3. Mai.", "Gut.")
    assert sentences.segment("Mr. Smith left at 5 p.m. today. Good.", "en").sentences[0].endswith("today.")


def test_a_sentence_over_max_chars_is_cut_at_spaces():
    document = sentences.segment("One two three four five six. " + "x" * 25, "en", max_chars=10)
    assert all(len(s) <= 10 for s in document.sentences)
    assert document.sentences[:4] == ("One two", "three four", "five six.", "x" * 10)
    assert document.join(list(document.sentences)) == "One two three four five six. " + "x" * 25


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([*"ab .!?\n\r\t\u2028\u3002\u00e9", "Hi", "Mr.", "3.", " A"]), max_size=30).map("".join),
    st.one_of(st.none(), st.integers(1, 12)),
)
def test_joining_the_sentences_gives_back_the_text(text, max_chars):
    document = sentences.segment(text, "en", max_chars)
    assert document.join(list(document.sentences)) == text
    assert len(document.gaps) == len(document.sentences) + 1
    for sentence in document.sentences:
        assert sentence and sentence == sentence.strip() and len(sentence.splitlines()) == 1
        assert max_chars is None or len(sentence) <= max_chars


def test_flatten_and_regroup_are_inverse():
    documents = [sentences.segment(t) for t in ("Red cat. Blue dog.", "", "Big car.")]
    flat = sentences.flatten(documents)
    assert flat == ["Red cat.", "Blue dog.", "Big car."]
    assert sentences.regroup(documents, flat) == [["Red cat.", "Blue dog."], [], ["Big car."]]
    with pytest.raises(ValueError, match="2 items for 3 sentences"):
        sentences.regroup(documents, flat[:2])
    with pytest.raises(ValueError, match="1 translations for 2 sentences"):
        documents[0].join(["x"])


def test_the_language_comes_from_the_training_files_extension():
    assert sentences.language_code("data/train.de") == "de"
    assert sentences.language_code("a/train.de,b/more.de") == "de"
    for name in ("train.src", "corpus.txt", "noext", "", "x.toolong"):
        assert sentences.language_code(name) == ""


class _Recorded(Translator):
    """A Translator without a model: each sentence's k-th hypothesis is '<sentence>k'; records the calls."""

    def __init__(self):
        self.source_language, self.calls = "en", []

    def translate(self, lines, opts=SearchOptions(), *args, split_sentences=False, **kwargs):
        if split_sentences:
            return super().translate(lines, opts, *args, split_sentences=True, **kwargs)
        self.calls.append((list(lines), opts, kwargs.get("sample_keys")))
        if len(lines) > 2:
            kwargs["warn"]("line 3: 20 tokens, truncated to data.max_len=16")  # as Member.encode_lines says it
        n = opts.nbest if isinstance(opts, SearchOptions) else 2
        return [[Hypothesis(f"<{line}>{k}", -1.0 - k, [len(line), k]) for k in range(n)] for line in lines]


def test_split_translates_every_lines_sentences_in_one_call_and_joins_them_rank_by_rank():
    translator = _Recorded()
    lines = ["Red cat. Blue dog.", "  ", "Big car.\n\nSmall house!"]
    warnings = []
    got = translator.translate(lines, SearchOptions(beam_size=2, nbest=2), split_sentences=True, warn=warnings.append)
    assert warnings == ["line 3, sentence 1: 20 tokens, truncated to data.max_len=16"]  # "Big car."
    assert [call[0] for call in translator.calls] == [["Red cat.", "Blue dog.", "Big car.", "Small house!"]]  # one call
    assert [[h.text for h in hyps] for hyps in got] == [
        ["<Red cat.>0 <Blue dog.>0", "<Red cat.>1 <Blue dog.>1"],
        ["  "],
        ["<Big car.>0\n\n<Small house!>0", "<Big car.>1\n\n<Small house!>1"],
    ]
    assert [h.score for h in got[0]] == [-2.0, -4.0] and got[1][0].score == 0.0
    assert got[0][1].tokens == [8, 1, 9, 1]
    per_line = [SearchOptions(beam_size=1), SearchOptions(beam_size=2), SearchOptions(beam_size=3)]
    translator.translate(lines, per_line, sample_keys=[(1, 0), (1, 1), (1, 2)], split_sentences=True, warn=print)
    _, opts, keys = translator.calls[-1]
    assert [o.beam_size for o in opts] == [1, 1, 3, 3] and keys == [(1, 0), (1, 0), (1, 2), (1, 2)]
    with pytest.raises(ValueError, match="prefixes"):
        translator.translate(lines, prefixes=["", "", ""], split_sentences=True)


def test_the_segmenter_benchmark_scores_boundaries_by_non_space_characters():
    """benchmarks/segmenters.py's pieces that need no data: the one-sentence filter and the scoring."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "benchmarks"))
    import segmenters

    assert segmenters.one_sentence("A dog runs.") and segmenters.one_sentence("„Ja.“")
    assert segmenters.one_sentence("一只狗在跑。") and not segmenters.one_sentence("一只狗。在跑。")
    for line in ("a dog runs.", "A dog runs", "A dog. It runs.", ""):
        assert not segmenters.one_sentence(line)
    gold = ["A b c.", "D e!", "F."]
    assert segmenters.starts(gold) == {4, 7}  # non-space characters before "D" and "F"
    counts = segmenters.count(lambda text: [text[:10], text[10:]], [gold], " ")  # "A b c. D e" | "! F."
    assert counts == {"hit": 0, "predicted": 1, "gold": 2, "exact": 0, "paragraphs": 1, "altered": 0}
    assert segmenters.figures(dict(counts, hit=1))["precision"] == 1.0


# ---------------------------------------------------------------------------
# Flags and the request schema (no model)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag", [{"print_alignment": "hard"}, {"plot_attention": "/tmp/x"}, {"prefix": "p.txt"}, {"rescore": "n.txt"}]
)
def test_decode_refuses_what_split_sentences_cannot_rejoin(flag, capsys):
    flags = decode_flags("/nonexistent/workdir", split_sentences=True, **flag)
    assert decode_cli.run(flags) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"error: --{next(iter(flag))} ") and "--split_sentences" in err


def test_split_lets_a_single_text_be_a_document_and_the_schema_says_so():
    model = translate_request_model((1,), max_nbest=1, max_chars=5, max_texts=2, max_request_chars=12)
    assert model.model_validate({"text": "a" * 12, "split": True}).split
    for bad in ({"text": "a" * 6}, {"text": "a" * 6, "split": False}, {"text": "a" * 13, "split": True}):
        with pytest.raises(ValueError):
            model.model_validate(bad)
    with pytest.raises(ValueError):
        model.model_validate({"text": ["a" * 6], "split": True})  # a list's texts keep max_chars
    schema = model.model_json_schema()
    assert schema["properties"]["text"]["oneOf"][0]["maxLength"] == 12
    assert schema["if"] == {"properties": {"split": {"const": True}}, "required": ["split"]}
    assert schema["else"] == {"properties": {"text": {"maxLength": 5}}}
    plain = translate_request_model((1,), max_nbest=1, max_chars=5, max_texts=2).model_json_schema()
    assert "if" not in plain and plain["properties"]["text"]["oneOf"][0]["maxLength"] == 5
    with pytest.raises(ValueError, match="max_request_chars 5 must be at least max_chars 6"):
        serving.ServeSettings(max_chars=6, max_request_chars=5).check()


# ---------------------------------------------------------------------------
# The trained tiny model: the Python API, decode.py and the server
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def translator(trained_workdir):
    return Translator(trained_workdir.workdir)


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
@pytest.mark.parametrize("opts", [SearchOptions(), SearchOptions(beam_size=3, nbest=2, with_scores=True)])
def test_a_paragraph_of_k_sentences_is_their_k_translations_joined(translator, opts):
    one_by_one = [translator.translate([s], opts)[0] for s in SENTENCES]
    calls = []
    run = translator.inference.run
    translator.inference.run = lambda *a, **k: calls.append(len(a[1])) or run(*a, **k)
    try:
        got = translator.translate([PARAGRAPH, "", " \n "], opts, split_sentences=True)
    finally:
        translator.inference.run = run
    assert calls == [len(SENTENCES)]  # every sentence of every line in one call
    best = [h[0].text for h in one_by_one]
    assert got[0][0].text == "  " + " ".join(best[:3]) + "\n\n\t" + best[3] + "  "
    assert got[0][0].score == pytest.approx(sum(h[0].score for h in one_by_one), abs=1e-4)
    assert [h.text for h in got[1]] == [""] and [h.text for h in got[2]] == [" \n "]
    if opts.nbest == 2:
        second = [h[1].text for h in one_by_one]
        assert got[0][1].text == "  " + " ".join(second[:3]) + "\n\n\t" + second[3] + "  "


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_a_paragraphs_words_and_mbr_pick_are_its_sentences(translator):
    """With word scores a paragraph's words are its sentences' in order; with MBR over the n-best
    each sentence's pick is the one it gets alone, and the paragraph's score their mean utility."""
    opts = SearchOptions(beam_size=3, alpha=0.6, token_scores=True)
    alone = [translator.translate([s], opts)[0][0] for s in SENTENCES]
    got = translator.translate([PARAGRAPH], opts, split_sentences=True)[0][0]
    assert [w.text for w in got.words] == [w.text for h in alone for w in h.words]
    assert [w.prob for w in got.words] == pytest.approx([w.prob for h in alone for w in h.words], rel=1e-4)
    assert got.token_log_probs == pytest.approx([x for h in alone for x in h.token_log_probs], abs=1e-4)

    mbr = MBROptions(4, "chrf", "nbest")
    alone = [translator.translate([s], SearchOptions(beam_size=4), mbr=mbr)[0][0] for s in SENTENCES]
    got = translator.translate([PARAGRAPH], SearchOptions(beam_size=4), split_sentences=True, mbr=mbr)[0][0]
    assert got.text == "  " + " ".join(h.text for h in alone[:3]) + "\n\n\t" + alone[3].text + "  "
    assert got.score == pytest.approx(sum(h.score for h in alone) / len(alone), abs=1e-4)


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_decode_split_sentences_translates_each_line_as_a_paragraph(trained_workdir, translator, tmp_path, capsys):
    lines = [" ".join(SENTENCES[:2]), "", "  " + SENTENCES[2] + " " + SENTENCES[3] + " "]
    source = tmp_path / "paragraphs.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert decode_cli.run(decode_flags(trained_workdir.workdir, input=str(source), split_sentences=True)) == 0
    out = capsys.readouterr().out
    best = {s: translator.translate([s])[0][0].text for s in SENTENCES}
    want = [f"{best[SENTENCES[0]]} {best[SENTENCES[1]]}", "", f"  {best[SENTENCES[2]]} {best[SENTENCES[3]]} "]
    assert out == "".join(line + "\n" for line in want)


@pytest.mark.slow  # starts a serve.py process
def test_the_server_splits_translates_and_joins(trained_workdir, translator):
    from tests.serving_helpers import Server

    limits = ["--max_batch=4", "--max_chars=40", "--max_request_chars=300", "--max_queue=12"]
    server = Server(trained_workdir.workdir, *limits)
    try:
        server.wait_ready()
        best = {s: translator.translate([s])[0][0].text for s in SENTENCES}
        body = server.post({"text": [PARAGRAPH[:40], "  "], "split": True, "nbest": 2, "beam_size": 2})
        assert body.status_code == 200, body.text
        first, blank = body.json()["translations"]
        want = translator.translate([PARAGRAPH[:40], "  "], SearchOptions(beam_size=2, nbest=2), split_sentences=True)
        assert first["text"] == want[0][0].text
        assert [c["text"] for c in first["nbest"]] == [h.text for h in want[0]]
        assert blank["text"] == "  " and blank["nbest"] == [{"text": "  ", "score": 0.0}]
        long = server.post({"text": PARAGRAPH * 3, "split": True, "alignment": True})
        assert long.status_code == 200, long.text
        got = long.json()["translations"][0]
        assert got["text"] == translator.translate([PARAGRAPH * 3], split_sentences=True)[0][0].text
        assert got["text"].count("\n\n") == 3 and got["alignment"] is None  # several sentences: no one alignment
        one = server.post({"text": " " + SENTENCES[0] + "\n", "split": True, "alignment": True}).json()
        assert one["translations"][0]["text"] == " " + best[SENTENCES[0]] + "\n"
        assert one["translations"][0]["alignment"]["pairs"]
        refused = server.post({"text": PARAGRAPH})  # over max_chars, without split
        assert refused.status_code == 422 and refused.json()["field"] == "text"
        assert "at most 40 characters (or set split)" in refused.json()["detail"]
        crowded = server.post({"text": "Red cat. " * 13, "split": True})  # more sentences than max_queue
        assert crowded.status_code == 422 and "13 sentences, more than max_queue=12" in crowded.json()["detail"]
        info = httpx_get(server.url + "/info")
        assert info["limits"]["max_request_chars"] == 300 and info["limits"]["max_chars"] == 40
    finally:
        assert server.stop() == 0, server.output


def httpx_get(url: str) -> dict:
    import httpx

    return httpx.get(url, timeout=30).json()
