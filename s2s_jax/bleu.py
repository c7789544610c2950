"""Translation metrics: sacrebleu corpus BLEU/chrF for reporting, d2l's sentence BLEU for teaching.

Corpus scores take detokenised text and let sacrebleu tokenise it (13a by
default, 'zh' for Chinese targets), so numbers are comparable with published
ones; `score_report` records the signatures that make them reproducible.
"""

from __future__ import annotations

import collections
import math
from typing import Sequence

from sacrebleu.metrics import BLEU, CHRF


def _check(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")


def corpus_bleu(
    hypotheses: Sequence[str],
    references: Sequence[str],
    lowercase: bool = False,
    tokenize: str | None = None,
) -> float:
    """Corpus BLEU in [0, 100] of detokenised text against one reference per line."""
    _check(hypotheses, references)
    bleu = BLEU(lowercase=lowercase, tokenize=tokenize)
    return float(bleu.corpus_score(list(hypotheses), [list(references)]).score)


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (character 6-grams, beta 2) in [0, 100]; robust for morphology-rich targets."""
    _check(hypotheses, references)
    return float(CHRF().corpus_score(list(hypotheses), [list(references)]).score)


def score_report(hypotheses: Sequence[str], references: Sequence[str], tokenize: str | None = None) -> dict:
    """BLEU (cased and lowercased) and chrF, with the sacrebleu signatures to report them by."""
    _check(hypotheses, references)
    hyps, refs = list(hypotheses), [list(references)]
    bleu, bleu_lc, chrf = BLEU(tokenize=tokenize), BLEU(lowercase=True, tokenize=tokenize), CHRF()
    report = {
        "bleu": float(bleu.corpus_score(hyps, refs).score),
        "bleu_lc": float(bleu_lc.corpus_score(hyps, refs).score),
        "chrf": float(chrf.corpus_score(hyps, refs).score),
    }
    # Signatures need a scored corpus (they record the number of references).
    report["bleu_signature"] = str(bleu.get_signature())
    report["chrf_signature"] = str(chrf.get_signature())
    return report


def sentence_bleu_d2l(pred_tokens: Sequence[str] | str, label_tokens: Sequence[str] | str, k: int = 4) -> float:
    """The d2l.ai seq2seq BLEU of one prediction against one label, in [0, 1].

    exp(min(0, 1 - len_label / len_pred)) * prod_{n=1..min(k, len_pred)} p_n ** (1 / 2**n),
    where p_n is the clipped n-gram precision: each label n-gram can be matched
    at most as often as it occurs in the label. Longer n-grams weigh more, as
    they are harder to match. Strings are split on single spaces, as in d2l;
    an empty prediction scores 0.0 (d2l would divide by zero).
    """
    pred = pred_tokens.split(" ") if isinstance(pred_tokens, str) else list(pred_tokens)
    label = label_tokens.split(" ") if isinstance(label_tokens, str) else list(label_tokens)
    len_pred, len_label = len(pred), len(label)
    if len_pred == 0:
        return 0.0
    score = math.exp(min(0.0, 1.0 - len_label / len_pred))
    for n in range(1, min(k, len_pred) + 1):
        grams = (tuple(label[i : i + n]) for i in range(len_label - n + 1))
        label_counts = collections.Counter(grams)
        matches = 0
        for i in range(len_pred - n + 1):
            gram = tuple(pred[i : i + n])
            if label_counts[gram] > 0:
                matches += 1
                label_counts[gram] -= 1
        score *= math.pow(matches / (len_pred - n + 1), math.pow(0.5, n))
    return score
