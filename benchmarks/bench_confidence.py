#!/usr/bin/env python3
"""Word confidence and repetition control on real sentences: their cost and what they say, one JSON object.

    .venv/bin/python benchmarks/bench_confidence.py --workdir runs/m30k_tuned \\
        --input ../shared/data/multi30k/test_2016_flickr.de --reference ../shared/data/multi30k/test_2016_flickr.en
    ... --beam 5 --ngrams 2,3,4 --rounds 3 --limit 200

The workdir's model ("best" checkpoint) translates the input through `Translator.translate`
(decode.py's path) with greedy and beam search, each plain, with word scores
(SearchOptions.token_scores, decode.py --word_scores) and with each --no_repeat_ngram N. Every
setting runs once to compile, then `--rounds` timed passes (settings rotated per round).

Keys: runs[] = one entry per setting:
  sent_per_s           {median, min, max, repeats} over the timed passes
  vs_plain             median sent/s over the plain search's of the same beam size
  bleu, chrf           against --reference (sacrebleu, decode.py's tokenisation)
  same_as_plain        whether every output equals the plain search's (word scores must not change any)
  repeated_ngram_outputs  {N: outputs with a token n-gram of size N twice}, for each N of --ngrams
calibration (beam with word scores): output words bucketed by probability; per bucket the count
and the share found in the reference (each reference word matched at most as often as it occurs,
lowercased, punctuation stripped) -- whether low-probability words are the wrong ones more often.
Timings on a shared machine are noisy: rerun on a quiet one for figures to quote.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
import time

import _common


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--ngrams", default="2,3,4", help="comma-separated n-gram sizes to ban, one setting each")
    ap.add_argument("--rounds", type=int, default=2, help="timed passes per setting")
    ap.add_argument("--limit", type=int, default=0, help="first N lines only (0 = all)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the config's decode.batch_size")
    ap.add_argument("--threads", type=int, default=0, help="CPUs to use (0 = all allowed)")
    return ap.parse_args(argv)


def _words(text: str) -> list[str]:
    return [w for w in (re.sub(r"[^\w']", "", t.lower()) for t in text.split()) if w]


def calibration(hyps, refs: list[str], edges=(0.2, 0.4, 0.6, 0.8, 1.01)) -> list[dict]:
    """Output words by probability bucket: how many, and the share that the reference has."""
    counts = collections.Counter()
    found = collections.Counter()
    for h, ref in zip(hyps, refs):
        left = collections.Counter(_words(ref))
        for w in h.words:
            bucket = next(i for i, edge in enumerate(edges) if w.prob < edge)
            counts[bucket] += 1
            key = (_words(w.text) or [""])[0]
            if left[key] > 0:
                left[key] -= 1
                found[bucket] += 1
    lows = (0.0,) + edges[:-1]
    return [
        {
            "prob": f"[{lows[i]:.1f}, {min(edges[i], 1.0):.1f}{']' if edges[i] > 1 else ')'}",
            "words": counts[i],
            "in_reference": round(found[i] / counts[i], 3) if counts[i] else None,
        }
        for i in range(len(edges))
    ]


def main(argv=None) -> None:
    args = parse_args(argv)
    threads = _common.limit_threads(args.threads)
    from s2s_jax import bleu
    from s2s_jax.data.text import read_lines
    from s2s_jax.decoding import repetition
    from s2s_jax.decoding.inference import SearchOptions
    from s2s_jax.decoding.translator import Translator

    lines, refs = read_lines(args.input, allow_empty=True), read_lines(args.reference, allow_empty=True)
    if args.limit:
        lines, refs = lines[: args.limit], refs[: args.limit]
    translator = Translator(args.workdir)
    cfg = translator.config.decode
    batch = args.batch_size or cfg.batch_size
    ngrams = [int(n) for n in args.ngrams.split(",") if n]
    settings = {}
    for beam in (1, args.beam):
        name = "greedy" if beam == 1 else f"beam{beam}"
        base = SearchOptions(beam_size=beam, alpha=cfg.alpha)
        settings[name] = base
        settings[f"{name}+word_scores"] = SearchOptions(beam_size=beam, alpha=cfg.alpha, token_scores=True)
        for n in ngrams:
            settings[f"{name}+no_repeat_{n}"] = SearchOptions(beam_size=beam, alpha=cfg.alpha, no_repeat_ngram=n)
    outputs, times = {}, collections.defaultdict(list)
    for name, opts in settings.items():  # the first pass compiles
        outputs[name] = translator.translate(lines, opts, batch_size=batch, warn=lambda m: None)
    names = list(settings)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            translator.translate(lines, settings[name], batch_size=batch, warn=lambda m: None)
            times[name].append(len(lines) / (time.perf_counter() - start))
    runs = []
    for name in names:
        plain = name.split("+")[0]
        best = [h[0] for h in outputs[name]]
        report = bleu.score_report([h.text for h in best], refs, tokenize=cfg.bleu_tokenize or None)
        runs.append(
            {
                "setting": name,
                "sent_per_s": _common.summarize(times[name]),
                "vs_plain": round(statistics.median(times[name]) / statistics.median(times[plain]), 3),
                "bleu": round(report["bleu"], 2),
                "chrf": round(report["chrf"], 2),
                "same_as_plain": [h.tokens for h in best] == [h[0].tokens for h in outputs[plain]],
                "repeated_ngram_outputs": {
                    n: sum(bool(repetition.repeated_ngrams(h.tokens, n)) for h in best) for n in ngrams
                },
            }
        )
    result = {
        "benchmark": "bench_confidence",
        "workdir": args.workdir,
        "step": translator.meta.get("step"),
        "input": args.input,
        "sentences": len(lines),
        "batch_size": batch,
        "alpha": cfg.alpha,
        "runs": runs,
        "calibration": calibration([h[0] for h in outputs[f"beam{args.beam}+word_scores"]], refs),
        "environment": _common.environment(threads),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
