#!/usr/bin/env python3
"""Minimum Bayes risk decoding against beam search on real data: quality and speed; one JSON object.

    .venv/bin/python benchmarks/mbr.py --workdir runs/m30k_tuned_s0 \\
        --input $M/test_2016_flickr.de --reference $M/test_2016_flickr.en --sizes 8,16,32

Contenders, each through decode.py's path (`Translator`, one process, compile cache off):
- beam:         the workdir's decode.beam_size and alpha;
- mbr-N:        for each N in --sizes, `decode.py --mbr N`: N samples (--temperature, --top_k,
                --top_p, --seed) and the one with the highest expected --metric against the others;
- mbr-nbest-N:  for each N in --nbest-sizes, the same over the beam's N-best (beam max(beam, N)).
Each contender first makes one untimed pass (compiles its shapes; `first_s`), through
`Translator.translate(mbr=...)` for MBR; then --repeats timed passes. A timed MBR pass is the same
computation in its two parts, timed apart: the candidates' search (`search_s`) and
`mbr.ranking` on each line's candidates (`utility_s`); its picks must equal the untimed pass's.
`sent_per_s` counts both. BLEU and chrF are sacrebleu's corpus scores against --reference.

`utility_speed`: on the first --sacrebleu-sentences lines' candidate sets of each N, milliseconds
per sentence of the K x K utilities by s2s_jax/decoding/pairwise_metrics.py (numpy) and by
sacrebleu's sentence_chrf / sentence_bleu on every pair (what decides which one MBR uses), and
whether the two pick the same candidates.

Timings on a shared machine are noisy: `load_before` records the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from s2s_jax.cli import runtime  # noqa: E402

runtime.limit_openblas_threads()

import numpy as np  # noqa: E402
from sacrebleu.metrics import BLEU, CHRF  # noqa: E402

from s2s_jax import bleu  # noqa: E402
from s2s_jax.data.text import read_lines  # noqa: E402
from s2s_jax.decoding import mbr  # noqa: E402
from s2s_jax.decoding.inference import SearchOptions  # noqa: E402
from s2s_jax.decoding.mbr import MBROptions  # noqa: E402
from s2s_jax.decoding.translator import Translator  # noqa: E402


def scores(texts: list[str], refs: list[str], tokenize: str | None) -> dict:
    report = bleu.score_report(texts, refs, tokenize=tokenize)
    return {"bleu": round(report["bleu"], 2), "chrf": round(report["chrf"], 2)}


def run_beam(translator: Translator, lines: list[str], opts: SearchOptions, args) -> tuple[list[str], dict]:
    def once() -> list[str]:
        return [h[0].text for h in translator.translate(lines, opts, batch_size=args.batch_size)]

    start = time.perf_counter()
    out = once()
    first, seconds = time.perf_counter() - start, []
    for _ in range(args.repeats):
        start = time.perf_counter()
        assert once() == out
        seconds.append(time.perf_counter() - start)
    return out, {"first_s": round(first, 2), "seconds": [round(s, 2) for s in seconds]}


def run_mbr(
    translator: Translator, lines: list[str], opts: SearchOptions, options: MBROptions, args
) -> tuple[list[str], dict, list[list[str]]]:
    """(picks, timings, each line's candidate texts) of one MBR contender."""
    tokenize = translator.config.decode.bleu_tokenize or None
    batch = max(1, args.mbr_rows // options.size) if args.mbr_rows else args.batch_size
    start = time.perf_counter()
    out = [h[0].text for h in translator.translate(lines, opts, batch_size=batch, seed=args.seed, mbr=options)]
    first, search_s, utility_s = time.perf_counter() - start, [], []
    candidates: list[list[str]] = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        drawn = translator.translate(lines, options.search_options(opts), batch_size=batch, seed=args.seed)
        middle = time.perf_counter()
        candidates = [[h.text for h in hyps if np.isfinite(h.score)] or [hyps[0].text] for hyps in drawn]
        picks = [texts[mbr.ranking(texts, options.metric, tokenize)[0][0]] for texts in candidates]
        end = time.perf_counter()
        assert picks == out, "the timed pass's picks differ from Translator.translate(mbr=...)'s"
        search_s.append(middle - start)
        utility_s.append(end - middle)
    timings = {
        "first_s": round(first, 2),
        "sentences_per_batch": batch,
        "search_s": [round(s, 2) for s in search_s],
        "utility_s": [round(s, 2) for s in utility_s],
        "seconds": [round(a + b, 2) for a, b in zip(search_s, utility_s)],
        "distinct_mean": round(float(np.mean([len(set(c)) for c in candidates])), 2) if candidates else None,
    }
    return out, timings, candidates


def utility_speed(candidates: list[list[str]], metric: str, tokenize: str | None) -> dict:
    """ms/sentence of the numpy matrices and of sacrebleu's sentence scores on every pair."""
    scorer = CHRF() if metric == "chrf" else BLEU(tokenize=tokenize, effective_order=True)
    start = time.perf_counter()
    fast = [mbr.ranking(texts, metric, tokenize)[0][0] for texts in candidates]
    numpy_s = time.perf_counter() - start
    start = time.perf_counter()
    slow = []
    for texts in candidates:
        distinct = list(dict.fromkeys(texts))
        counts = np.asarray([texts.count(t) for t in distinct], np.float64)
        matrix = np.asarray([[scorer.sentence_score(h, [r]).score for r in distinct] for h in distinct])
        utilities = mbr.expected_utilities(matrix, counts)
        best = max(range(len(distinct)), key=lambda k: (utilities[k], counts[k], -k))
        slow.append(texts.index(distinct[best]))
    sacrebleu_s = time.perf_counter() - start
    n = max(len(candidates), 1)
    return {
        "sentences": len(candidates),
        "numpy_ms": round(1000 * numpy_s / n, 2),
        "sacrebleu_ms": round(1000 * sacrebleu_s / n, 2),
        "speedup": round(sacrebleu_s / max(numpy_s, 1e-9), 1),
        "picks_equal": fast == slow,
    }


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--sizes", default="8,16,32", help="MBR sample counts (N)")
    ap.add_argument("--nbest-sizes", default="", help="MBR over the beam's N-best, for these N")
    ap.add_argument("--metric", default="chrf", choices=("chrf", "bleu"))
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=None, help="sentences per batch (default: decode.batch_size)")
    ap.add_argument(
        "--mbr-rows", type=int, default=0, help="MBR: about this many rows per batch (sentences x N); 0: --batch-size"
    )
    ap.add_argument("--max-sentences", type=int, default=0, help="only the first N lines (0 = all)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--sacrebleu-sentences", type=int, default=100)
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    runtime.setup(cache_dir="off")  # every compile counted in first_s
    lines, refs = read_lines(args.input), read_lines(args.reference)
    if args.max_sentences:
        lines, refs = lines[: args.max_sentences], refs[: args.max_sentences]
    translator = Translator(args.workdir)
    cfg = translator.config.decode
    args.batch_size = args.batch_size or cfg.batch_size
    tokenize = cfg.bleu_tokenize or None
    record = {
        "workdir": args.workdir,
        "step": translator.meta.get("step"),
        "input": args.input,
        "sentences": len(lines),
        "batch_size": args.batch_size,
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    beam = SearchOptions(beam_size=cfg.beam_size, alpha=cfg.alpha)
    out, timing = run_beam(translator, lines, beam, args)
    contenders = [
        {"name": f"beam {cfg.beam_size}", **scores(out, refs, tokenize), **timing, **_rate(len(lines), timing)}
    ]
    sampling = SearchOptions(
        beam_size=cfg.beam_size, alpha=cfg.alpha, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p
    )
    speed = []
    plan = [(int(n), "samples") for n in args.sizes.split(",") if n]
    plan += [(int(n), "nbest") for n in args.nbest_sizes.split(",") if n]
    for size, kind in plan:
        options = MBROptions(size, args.metric, kind)
        out, timing, candidates = run_mbr(translator, lines, sampling, options, args)
        name = f"mbr-{size}" if kind == "samples" else f"mbr-nbest-{size}"
        contenders.append({"name": name, **scores(out, refs, tokenize), **timing, **_rate(len(lines), timing)})
        print(json.dumps(contenders[-1]), file=sys.stderr, flush=True)
        if kind == "samples" and args.sacrebleu_sentences and candidates:  # candidates need --repeats >= 1
            speed.append({"size": size, **utility_speed(candidates[: args.sacrebleu_sentences], args.metric, tokenize)})
    record.update(
        metric=args.metric,
        sampling={"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed},
        contenders=contenders,
        utility_speed=speed,
    )
    print(json.dumps(record))


def _rate(sentences: int, timing: dict) -> dict:
    """sentences/s of the timed passes (median), else of the first pass."""
    seconds = statistics.median(timing["seconds"]) if timing["seconds"] else timing["first_s"]
    return {"sent_per_s": round(sentences / seconds, 2)}


if __name__ == "__main__":
    main()
