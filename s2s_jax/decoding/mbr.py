"""Minimum Bayes risk (MBR) decoding: of a sentence's candidate translations, the one the others
agree with most.

The most probable output (what beam search approximates) is often not the best one: a model
spreads its probability over many similar translations, and the mode can be an outlier (an
empty or truncated output). MBR picks instead the candidate with the highest expected utility
under the model (Kumar & Byrne 2004; with samples, Eikema & Aziz 2020; Freitag et al. 2022).
The candidates are N outputs of the one inference path, drawn by `MBROptions.search_options`:
N samples (one batch of repeated rows: sample k of a source draws from its own key, so it depends
only on the source, its seed and k) or the beam's N-best. They also serve as pseudo-references:
a distinct candidate h that occurs c_h times among the N scores

    EU(h) = (sum_r c_r U(h, r) - U(h, h)) / (N - 1),

its mean utility against the other N - 1 candidates, where U(h, r) is sentence chrF or BLEU of
h against r (s2s_jax/decoding/pairwise_metrics.py). Identical candidates are scored once and
weigh by their count; ties go to the more frequent candidate, then to the earlier one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from s2s_jax.decoding.inference import SearchOptions
from s2s_jax.decoding.pairwise_metrics import METRICS, utility_matrix

CANDIDATES = ("samples", "nbest")


@dataclasses.dataclass(frozen=True)
class MBROptions:
    """N candidates per sentence, how they are drawn (samples or the beam's n-best) and the utility."""

    size: int
    metric: str = "chrf"
    candidates: str = "samples"

    def check(self) -> None:
        if self.size < 2:
            raise ValueError(f"MBR needs at least 2 candidates (each is compared with the others), got {self.size}")
        if self.metric not in METRICS:
            raise ValueError(f"unknown MBR metric {self.metric!r}: one of {', '.join(METRICS)}")
        if self.candidates not in CANDIDATES:
            raise ValueError(f"unknown MBR candidates {self.candidates!r}: one of {', '.join(CANDIDATES)}")

    def search_options(self, opts: SearchOptions) -> SearchOptions:
        """The search that draws the candidates: `opts`'s sampling settings (temperature, top-k,
        top-p) with `size` samples, or its beam (widened to `size` when narrower) with its
        `size`-best. Applied twice it changes nothing."""
        if self.candidates == "samples":
            return dataclasses.replace(opts, sample=True, beam_size=1, nbest=self.size)
        return dataclasses.replace(opts, sample=False, beam_size=max(opts.beam_size, self.size), nbest=self.size)


def expected_utilities(utility: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """EU of each distinct candidate, given U [K, K] between them and their counts [K] (sum N):
    the count-weighted mean utility against the other N - 1 candidates (U(h, h) itself for N = 1)."""
    n = counts.sum()
    if n <= 1:
        return np.diag(utility).copy()
    return (utility @ counts - np.diag(utility)) / (n - 1)


def ranking(texts: Sequence[str], metric: str = "chrf", tokenize: str | None = None) -> list[tuple[int, float]]:
    """The distinct texts of one sentence's candidates, best first by expected utility: (the index
    of the text's first occurrence in `texts`, its expected utility in [0, 100]). `tokenize`:
    sacrebleu's tokenizer for BLEU (None: 13a)."""
    first: dict[str, int] = {}
    counts: dict[str, int] = {}
    for i, text in enumerate(texts):
        first.setdefault(text, i)
        counts[text] = counts.get(text, 0) + 1
    distinct = list(first)
    if not distinct:
        return []
    weights = np.asarray([counts[t] for t in distinct], np.float64)
    utilities = expected_utilities(utility_matrix(distinct, metric, tokenize), weights)
    order = sorted(range(len(distinct)), key=lambda k: (-utilities[k], -weights[k], first[distinct[k]]))
    return [(first[distinct[k]], float(utilities[k])) for k in order]
