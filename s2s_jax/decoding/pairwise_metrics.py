"""Sentence chrF and BLEU of every text in a set against every other, as matrices.

`chrf_matrix(texts)[h, r]` is sacrebleu's `sentence_chrf(texts[h], [texts[r]])` (character
6-grams without whitespace, beta 2, effective order) and `bleu_matrix(texts)[h, r]` its
`sentence_bleu(texts[h], [texts[r]])` (13a tokens, 1-4-grams, exp smoothing, effective order):
the same statistics and the same arithmetic, to float rounding (tests/test_mbr.py checks them
against sacrebleu). Minimum Bayes risk decoding (s2s_jax/decoding/mbr.py) needs all K x K pairs
of a sentence's candidates. sacrebleu extracts both sentences' n-grams again for each pair;
here each text's n-grams are counted once, and the clipped matches of all pairs at once come
from matrix products: with counts that are small integers, min(a, b) = sum_{t >= 1} [a >= t][b >= t],
so an order's matches are sum_t B_t @ B_t.T for the 0/1 matrices B_t = (counts >= t).
benchmarks/mbr.py measures the two (benchmarks/README.md has the figures).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence

import numpy as np
from sacrebleu.metrics import BLEU

CHAR_ORDER = 6  # sacrebleu's chrF defaults: character 6-grams, no word n-grams, recall weighted by beta 2
BETA = 2
BLEU_ORDER = 4
_EPS = 1e-16  # sacrebleu's chrF stands this in for an undefined precision or recall


def _match_counts(counters: list[Counter]) -> tuple[np.ndarray, np.ndarray]:
    """(totals [K], matches [K, K]) of one n-gram order: each text's n-gram count, and for each
    pair the n-grams of text h that text r also has, each counted at most as often as r has it."""
    columns: dict = {}
    for counter in counters:
        for gram in counter:
            columns.setdefault(gram, len(columns))
    counts = np.zeros((len(counters), max(len(columns), 1)), np.float64)
    for row, counter in enumerate(counters):
        for gram, count in counter.items():
            counts[row, columns[gram]] = count
    matches = np.zeros((len(counters), len(counters)), np.float64)
    for threshold in range(1, int(counts.max(initial=0)) + 1):
        above = (counts >= threshold).astype(np.float64)
        matches += above @ above.T
    return counts.sum(axis=1), matches


def _char_ngrams(text: str, n: int) -> Counter:
    line = "".join(text.split())
    return Counter(line[i : i + n] for i in range(len(line) - n + 1))


def chrf_matrix(texts: Sequence[str], char_order: int = CHAR_ORDER, beta: int = BETA) -> np.ndarray:
    """[K, K] float64: chrF (0-100) of texts[h] as the hypothesis against texts[r] as the reference."""
    k = len(texts)
    factor = float(beta**2)
    avg_prec, avg_rec, effective = np.zeros((k, k)), np.zeros((k, k)), np.zeros((k, k))
    for n in range(1, char_order + 1):
        totals, match = _match_counts([_char_ngrams(t, n) for t in texts])
        n_ref = np.broadcast_to(totals[None, :], (k, k))
        n_hyp = np.where(n_ref > 0, totals[:, None], 0.0)  # sacrebleu counts none against an empty reference
        both = (n_hyp > 0) & (n_ref > 0)
        avg_prec += np.where(both, match / np.where(both, n_hyp, 1.0), 0.0)
        avg_rec += np.where(both, match / np.where(both, n_ref, 1.0), 0.0)
        effective += both
    avg_prec = np.where(effective > 0, avg_prec / np.maximum(effective, 1), 0.0)
    avg_rec = np.where(effective > 0, avg_rec / np.maximum(effective, 1), 0.0)
    score = (1 + factor) * avg_prec * avg_rec
    denominator = factor * avg_prec + avg_rec
    return np.where(avg_prec + avg_rec > 0, 100 * (score / np.where(denominator > 0, denominator, 1.0)), 0.0)


def _word_ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


@functools.lru_cache(maxsize=None)
def _tokenizer(name: str):
    """sacrebleu's BLEU tokenizer called `name` ('' for its default, 13a)."""
    return BLEU(tokenize=name or None).tokenizer


def bleu_matrix(texts: Sequence[str], tokenize: str | None = None) -> np.ndarray:
    """[K, K] float64: sentence BLEU (0-100) of texts[h] as the hypothesis against texts[r] as the
    reference; `tokenize` is sacrebleu's tokenizer name (None: 13a, its default)."""
    k = len(texts)
    tokenizer = _tokenizer(tokenize or "")
    tokens = [tokenizer(t.rstrip()).split() for t in texts]
    lengths = np.asarray([len(t) for t in tokens], np.float64)
    sys_len, ref_len = np.broadcast_to(lengths[:, None], (k, k)), np.broadcast_to(lengths[None, :], (k, k))
    correct, total = [], []
    for n in range(1, BLEU_ORDER + 1):
        totals, match = _match_counts([_word_ngrams(t, n) for t in tokens])
        correct.append(match)
        total.append(np.broadcast_to(totals[:, None], (k, k)))
    # sacrebleu's compute_bleu: orders up to the first without hypothesis n-grams (effective order);
    # an order without matches gets 100 / (2^j * total), j counting such orders so far.
    log_sum, order, doubling = np.zeros((k, k)), np.zeros((k, k)), np.ones((k, k))
    live = np.ones((k, k), bool)
    for c, t in zip(correct, total):
        live &= t > 0
        doubling = np.where(live & (c == 0), doubling * 2, doubling)
        safe_t = np.where(live, t, 1.0)
        precision = np.where(c > 0, 100.0 * c / safe_t, 100.0 / (doubling * safe_t))
        log_sum += np.where(live, np.log(np.where(live, precision, 1.0)), 0.0)
        order += live
    brevity = np.where(
        sys_len < ref_len, np.where(sys_len > 0, np.exp(1 - ref_len / np.maximum(sys_len, 1.0)), 0.0), 1.0
    )
    score = brevity * np.exp(log_sum / np.maximum(order, 1))
    return np.where(sum(correct) > 0, score, 0.0)


METRICS = {"chrf": chrf_matrix, "bleu": bleu_matrix}


def utility_matrix(texts: Sequence[str], metric: str, tokenize: str | None = None) -> np.ndarray:
    """`metric`'s ("chrf" or "bleu") matrix of `texts`; `tokenize` only reaches BLEU."""
    if metric not in METRICS:
        raise ValueError(f"unknown MBR metric {metric!r}: one of {', '.join(METRICS)}")
    if not texts:
        return np.zeros((0, 0))
    return bleu_matrix(texts, tokenize) if metric == "bleu" else chrf_matrix(texts)
