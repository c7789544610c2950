"""d2l sentence BLEU on hand-worked cases; corpus metrics agree with sacrebleu itself."""

import math

import pytest
import sacrebleu

from s2s_jax.bleu import corpus_bleu, corpus_chrf, score_report, sentence_bleu_d2l

HYPS = ["The cat sat on the mat.", "A dog barked loudly at night", "hello there world"]
REFS = ["The cat sat on the mat.", "The dog barked loudly at night.", "Hello world"]


def test_d2l_perfect_match():
    assert sentence_bleu_d2l("va !", "va !", k=2) == pytest.approx(1.0)
    assert sentence_bleu_d2l("a b c d e".split(), "a b c d e".split()) == pytest.approx(1.0)


def test_d2l_chapter_examples():
    # d2l's seq2seq chapter, k=2: "il est riche ." for "il est calme .":
    # BP = 1, p1 = 3/4, p2 = 1/3 ("il est") -> (3/4)^(1/2) * (1/3)^(1/4) = 0.658
    assert sentence_bleu_d2l("il est riche .", "il est calme .", k=2) == pytest.approx(
        math.sqrt(3 / 4) * (1 / 3) ** 0.25
    )
    assert round(sentence_bleu_d2l("il est riche .", "il est calme .", k=2), 3) == 0.658
    # "je suis en retard ?" for "je suis chez moi .": longer than the label so BP = 1,
    # p1 = 2/5, p2 = 1/4 -> (2/5)^(1/2) * (1/4)^(1/4) = 0.447
    assert round(sentence_bleu_d2l("je suis en retard ?", "je suis chez moi .", k=2), 3) == 0.447


def test_d2l_brevity_penalty():
    # label 'a b c d', pred 'a b': BP = exp(1 - 4/2) = exp(-1); only n <= len_pred = 2
    # count, p1 = 2/2, p2 = 1/1 -> exp(-1).
    assert sentence_bleu_d2l("a b".split(), "a b c d".split(), k=4) == pytest.approx(math.exp(-1))
    # one token: only unigrams; BP = exp(1 - 2/1).
    assert sentence_bleu_d2l(["a"], ["a", "b"], k=4) == pytest.approx(math.exp(-1))


def test_d2l_no_four_gram_overlap():
    # pred 'a b c e d' vs label 'a b c d e': no shared 4-gram -> p4 = 0 -> 0.
    pred, label = "a b c e d".split(), "a b c d e".split()
    assert sentence_bleu_d2l(pred, label, k=4) == 0.0
    # k=3: BP = 1, p1 = 5/5, p2 = 2/4 (ab, bc), p3 = 1/3 (abc) -> (1/2)^(1/4) * (1/3)^(1/8)
    assert sentence_bleu_d2l(pred, label, k=3) == pytest.approx(0.5**0.25 * (1 / 3) ** 0.125)


def test_d2l_clipped_counts():
    # 'the' occurs once in the label, so only one of the three predicted 'the' matches:
    # BP = exp(min(0, 1 - 2/3)) = 1, p1 = 1/3 -> (1/3)^(1/2).
    assert sentence_bleu_d2l("the the the".split(), "the cat".split(), k=1) == pytest.approx((1 / 3) ** 0.5)
    assert sentence_bleu_d2l("the the the".split(), "the cat".split(), k=2) == 0.0


def test_d2l_edge_cases():
    assert sentence_bleu_d2l([], ["a"]) == 0.0
    assert sentence_bleu_d2l(["a"], []) == 0.0
    assert sentence_bleu_d2l("il est riche .", "il est calme .", k=2) == sentence_bleu_d2l(
        "il est riche .".split(), "il est calme .".split(), k=2
    )


def test_corpus_bleu_matches_sacrebleu():
    assert corpus_bleu(HYPS, REFS) == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    lower = sacrebleu.corpus_bleu(HYPS, [REFS], lowercase=True).score
    assert corpus_bleu(HYPS, REFS, lowercase=True) == pytest.approx(lower)
    assert corpus_bleu(HYPS, REFS, lowercase=True) > corpus_bleu(HYPS, REFS)
    assert corpus_bleu(REFS, REFS) == pytest.approx(100.0)
    assert 0.0 < corpus_bleu(HYPS, REFS) < 100.0


def test_corpus_bleu_chinese_tokenizer():
    hyps, refs = ["我喜欢猫。", "今天天气很好"], ["我喜欢狗。", "今天天气很好"]
    zh = sacrebleu.corpus_bleu(hyps, [refs], tokenize="zh").score
    assert corpus_bleu(hyps, refs, tokenize="zh") == pytest.approx(zh)
    # 13a leaves unsegmented Chinese as one "word" per sentence: a different number.
    assert corpus_bleu(hyps, refs) != pytest.approx(zh)
    assert "tok:zh" in score_report(hyps, refs, tokenize="zh")["bleu_signature"]


def test_corpus_chrf_matches_sacrebleu():
    assert corpus_chrf(HYPS, REFS) == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)


def test_score_report():
    report = score_report(HYPS, REFS)
    assert set(report) == {"bleu", "bleu_lc", "chrf", "bleu_signature", "chrf_signature"}
    assert report["bleu"] == pytest.approx(corpus_bleu(HYPS, REFS))
    assert report["bleu_lc"] == pytest.approx(corpus_bleu(HYPS, REFS, lowercase=True))
    assert report["chrf"] == pytest.approx(corpus_chrf(HYPS, REFS))
    assert "tok:13a" in report["bleu_signature"] and "nrefs:1" in report["bleu_signature"]
    assert "nc:6" in report["chrf_signature"]


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        corpus_bleu(HYPS, REFS[:2])
    with pytest.raises(ValueError):
        score_report(HYPS[:1], REFS)
