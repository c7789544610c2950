#!/usr/bin/env python3
"""Lexically constrained decoding measured: coverage, quality and speed against plain beam search.

    .venv/bin/python benchmarks/constraints.py --workdir runs/m30k_tuned \
        --src ../shared/data/multi30k/test_2016_flickr.de --ref ../shared/data/multi30k/test_2016_flickr.en

The constraints are what a terminology user would give: for each sentence, 1 or 2 words of its
reference (words of 3+ letters, as written there; how many and which drawn with --seed) that the
unconstrained beam output lacks (as a whole word, case-insensitively). Sentences whose output
lacks none get no constraint and keep the plain beam search (Inference batches them apart).

Prints one JSON object:
  sentences, constrained_sentences, constraints   counts
  coverage           the share of constraints whose text appears in their constrained output
                     (the guarantee: 1.0 unless a sentence's length cap is too short)
  coverage_whole_word  the share that appear as whole words (a constraint "dog" met by "dogs" is not)
  partial            sentences whose best output was cut at its length cap without every constraint
  plain, constrained  corpus BLEU (cased, lowercased) and chrF of all sentences, and sentences/s
  slowdown           plain sentences/s over constrained sentences/s (whole test set)
  examples           the first few constrained sentences: source, constraints, plain, constrained, reference
Each search runs once untimed (compiling every batch shape) and then --repeats timed times (the
best is reported). Timings on a shared machine are noisy: rerun on a quiet one to compare.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/constraints.py` without `pip install -e .`
    sys.path.insert(0, str(REPO))

from s2s_jax import bleu  # noqa: E402
from s2s_jax.data.text import read_lines  # noqa: E402
from s2s_jax.decoding.inference import SearchOptions  # noqa: E402
from s2s_jax.decoding.translator import Translator  # noqa: E402

WORD = re.compile(r"[^\W\d_]{3,}")


def pick_constraints(outputs: list[str], references: list[str], seed: int) -> list[list[str]]:
    """Per sentence, 1 or 2 distinct reference words the output lacks (none if it lacks none)."""
    rng = random.Random(seed)
    picked = []
    for out, ref in zip(outputs, references):
        have = {w.lower() for w in re.findall(r"\w+", out)}
        missing = list(dict.fromkeys(w for w in WORD.findall(ref) if w.lower() not in have))
        k = min(rng.choice((1, 2)), len(missing))
        picked.append(rng.sample(missing, k))
    return picked


def timed(translator: Translator, lines: list[str], opts: SearchOptions, batch: int, repeats: int, **kw):
    """(hypotheses, best seconds) of `repeats` timed runs after an untimed one."""
    hyps = translator.translate(lines, opts, batch_size=batch, warn=lambda m: None, **kw)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        hyps = translator.translate(lines, opts, batch_size=batch, warn=lambda m: None, **kw)
        best = min(best, time.perf_counter() - start)
    return hyps, best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--src", required=True)
    parser.add_argument("--ref", required=True)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's decode.batch_size")
    parser.add_argument("--limit", type=int, default=0, help="only the first N sentences (0: all)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    lines, refs = read_lines(args.src, allow_empty=True), read_lines(args.ref, allow_empty=True)
    if args.limit:
        lines, refs = lines[: args.limit], refs[: args.limit]
    translator = Translator(args.workdir)
    cfg = translator.config.decode
    opts = SearchOptions(beam_size=args.beam_size, alpha=cfg.alpha)
    batch = args.batch_size or cfg.batch_size

    plain, plain_s = timed(translator, lines, opts, batch, args.repeats)
    plain_text = [h[0].text for h in plain]
    wanted = pick_constraints(plain_text, refs, args.seed)
    constrained, constrained_s = timed(translator, lines, opts, batch, args.repeats, constraints=wanted)
    text = [h[0].text for h in constrained]

    normalized = translator.members[0].normalized  # constraints are matched as the targets are normalised
    pairs = [(p, out) for phrases, out in zip(wanted, text) for p in normalized(phrases)]
    whole = sum(bool(re.search(rf"(?<!\w){re.escape(p)}(?!\w)", out)) for p, out in pairs)
    tokenize = cfg.bleu_tokenize or None

    def quality(outputs: list[str], seconds: float) -> dict:
        report = bleu.score_report(outputs, refs, tokenize=tokenize)
        keys = ("bleu", "bleu_lc", "chrf")
        return {**{k: round(report[k], 2) for k in keys}, "sent_per_s": round(len(lines) / seconds, 2)}

    result = {
        "workdir": args.workdir,
        "src": args.src,
        "beam_size": args.beam_size,
        "batch_size": batch,
        "sentences": len(lines),
        "constrained_sentences": sum(bool(w) for w in wanted),
        "constraints": len(pairs),
        "coverage": round(sum(p in out for p, out in pairs) / max(len(pairs), 1), 4),
        "coverage_whole_word": round(whole / max(len(pairs), 1), 4),
        "partial": sum(bool(w) and not h[0].constraints_met for w, h in zip(wanted, constrained)),
        "plain": quality(plain_text, plain_s),
        "constrained": quality(text, constrained_s),
        "slowdown": round(constrained_s / plain_s, 3),
        "examples": [
            {"source": s, "constraints": w, "plain": p, "constrained": c, "reference": r}
            for s, w, p, c, r in zip(lines, wanted, plain_text, text, refs)
            if w
        ][:5],
        "note": "timings from one machine; noisy when shared",
    }
    print(json.dumps(result, ensure_ascii=False, indent=1))
    return result


if __name__ == "__main__":
    main()
