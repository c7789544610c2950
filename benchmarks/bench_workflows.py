#!/usr/bin/env python3
"""Ensemble decoding and the exported artefact against decode.py's path, on real data; one JSON object.

    .venv/bin/python benchmarks/bench_workflows.py --workdir runs/a --workdir runs/b \\
        --input $M/test_2016_flickr.de --reference $M/test_2016_flickr.en

In one process, for greedy and beam (the first workdir's decode.beam_size and alpha) at
--batch-size sentences per batch:
- decode:   Translator(first workdir).translate, the path decode.py runs;
- ensemble: Translator(all workdirs), the members' averaged log-probabilities;
- export:   the first workdir exported by s2s_jax.decoding.export (rows 1, 16, batch) and run
            through the artefact's own loader (ExportedModel, translate.py's class).
Each is run once to compile (first_s includes compiles), then --repeats timed passes
over the whole input (sent_per_s: median, min, max). BLEU/chrF are sacreBLEU's on the
first workdir's config. `export_equals_decode` says whether every output line matches.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from s2s_jax.cli import runtime  # noqa: E402

runtime.limit_openblas_threads()

from s2s_jax import bleu  # noqa: E402
from s2s_jax.data.text import read_lines  # noqa: E402
from s2s_jax.decoding import export, export_loader  # noqa: E402
from s2s_jax.decoding.inference import SearchOptions  # noqa: E402
from s2s_jax.decoding.translator import Translator  # noqa: E402


def timed(fn, repeats: int) -> tuple[list[str], dict]:
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        again = fn()
        times.append(time.perf_counter() - start)
        assert again == out
    return out, {"first_s": round(first, 3), "seconds": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", action="append", required=True, help="repeat: the ensemble's members")
    ap.add_argument("--input", required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", default="greedy,beam")
    args = ap.parse_args()
    runtime.setup(cache_dir="off")  # every compile counted in first_s
    lines, refs = read_lines(args.input), read_lines(args.reference)
    single = Translator(args.workdir[0])
    cfg = single.config.decode
    searches = {"greedy": SearchOptions(), "beam": SearchOptions(beam_size=cfg.beam_size, alpha=cfg.alpha)}
    tokenize = cfg.bleu_tokenize or None
    contenders = {"decode": single}
    if len(args.workdir) > 1:
        contenders["ensemble"] = Translator(args.workdir)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        export.export_model(
            args.workdir[0], os.path.join(tmp, "artefact"), rows=[1, 16, args.batch_size], log=lambda m: None
        )
        export_s = time.perf_counter() - start
        exported = export_loader.ExportedModel(os.path.join(tmp, "artefact"))
        results = []
        outputs: dict[tuple[str, str], list[str]] = {}
        for mode in args.modes.split(","):
            opts = searches[mode]
            runs = {
                name: (
                    lambda t=t, opts=opts: [
                        h[0].text for h in t.translate(lines, opts, batch_size=args.batch_size, warn=lambda m: None)
                    ]
                )
                for name, t in contenders.items()
            }
            runs["export"] = lambda mode=mode: exported.translate(
                lines, "default" if mode == "beam" else "greedy", warn=lambda m: None
            )
            for name, fn in runs.items():
                out, timing = timed(fn, args.repeats)
                outputs[(name, mode)] = out
                report = bleu.score_report(out, refs, tokenize=tokenize)
                rates = [len(lines) / s for s in timing["seconds"]]
                results.append(
                    {
                        "contender": name,
                        "mode": mode,
                        "beam_size": opts.beam_size,
                        "first_s": timing["first_s"],
                        "seconds": [round(t, 3) for t in timing["seconds"]],
                        "sent_per_s": {
                            "median": round(statistics.median(rates), 1),
                            "min": round(min(rates), 1),
                            "max": round(max(rates), 1),
                        },
                        "bleu": round(report["bleu"], 2),
                        "chrf": round(report["chrf"], 2),
                    }
                )
    by = {(r["contender"], r["mode"]): r["sent_per_s"]["median"] for r in results}
    print(
        json.dumps(
            {
                "workdirs": args.workdir,
                "input": args.input,
                "sentences": len(lines),
                "batch_size": args.batch_size,
                "export_s": round(export_s, 1),
                "results": results,
                "speed_vs_decode": {
                    f"{name}/{mode}": round(by[(name, mode)] / by[("decode", mode)], 3)
                    for name, mode in by
                    if name != "decode"
                },
                "export_equals_decode": {
                    mode: outputs[("export", mode)] == outputs[("decode", mode)] for mode in args.modes.split(",")
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
