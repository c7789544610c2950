#!/usr/bin/env python3
"""bench.py against the PyTorch reference, in interleaved rounds of fresh processes: one JSON object.

    .venv/bin/python benchmarks/versus_pytorch.py --torch-python .venv-bench/bin/python        # 5 rounds
    .venv/bin/python benchmarks/versus_pytorch.py --rounds 2 --models attention --table ratios.md
    .venv/bin/python benchmarks/versus_pytorch.py --bench-args="--unroll 2"                    # our knobs

Each round runs, for each model (plain, attention), three fresh processes on the same protocol
(`--steps 3 --repeats 3 --beam 5` by default): ../shared/bench/torch_ref.py with its packed decoder
(the default), torch_ref.py `--padded-decoder`, and benchmarks/bench.py; the order rotates from round
to round. Each ratio (train tok/s, greedy sent/s, beam-5 sent/s) is ours over the faster of the two
references in that round for that figure, so a slow reference never flatters us.

Stdout: one JSON object: `rounds[]` (per round and model: each side's medians, which reference was
faster, the ratios, the load average before each process), `summary` ({model: {figure: {median, min, max, rounds}}}), the commands run.
Stderr: progress, then a markdown table of the ratios (`--table FILE` writes it there instead).
PyTorch lives in its own virtualenv (`--torch-python`), never in the project's.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import _common
import _rounds

METRICS = ("train_tok_per_s", "greedy_sent_per_s", "beam_sent_per_s")
HEADERS = {"train_tok_per_s": "train tok/s", "greedy_sent_per_s": "greedy sent/s", "beam_sent_per_s": "beam sent/s"}
MODEL_FLAGS = {"plain": [], "attention": ["--attention"]}
REFERENCES = {"torch_packed": [], "torch_padded": ["--padded-decoder"]}
OURS = "s2s_jax"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", default="plain,attention", help="comma-separated subset of plain,attention")
    ap.add_argument("--python", default=sys.executable, help="interpreter for bench.py (default: this one)")
    ap.add_argument(
        "--torch-python",
        default=str(_common.REPO / ".venv-bench" / "bin" / "python"),
        help="interpreter with torch for torch_ref.py (default: .venv-bench/bin/python)",
    )
    ap.add_argument("--torch-ref", default=str(_common.REF_DIR / "torch_ref.py"), help="the reference script")
    ap.add_argument("--steps", type=int, default=3, help="training steps per timed repeat (both sides)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (both sides)")
    ap.add_argument("--beam", type=int, default=5, help="beam size (both sides)")
    ap.add_argument(
        "--bench-args",
        default="",
        help='extra arguments for bench.py only, one string (e.g. --bench-args="--unroll 2")',
    )
    ap.add_argument("--table", default=None, metavar="FILE", help="write the markdown table here instead of stderr")
    args = ap.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in MODEL_FLAGS]
    if unknown or not args.models:
        ap.error(f"--models: choose from {','.join(MODEL_FLAGS)}, got {unknown or 'none'}")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    for flag, path in (
        ("--python", args.python),
        ("--torch-python", args.torch_python),
        ("--torch-ref", args.torch_ref),
    ):
        if not Path(path).is_file():
            ap.error(f"{flag}: no such file: {path}")
    try:
        args.bench_args = shlex.split(args.bench_args)
    except ValueError as e:
        ap.error(f"--bench-args: {e}")
    return args


def commands(args, model: str) -> dict[str, list[str]]:
    """The three contenders' command lines for one model, references first."""
    protocol = ["--steps", str(args.steps), "--repeats", str(args.repeats), "--beam", str(args.beam)]
    protocol += MODEL_FLAGS[model]
    cmds = {name: [args.torch_python, args.torch_ref, *protocol, *extra] for name, extra in REFERENCES.items()}
    cmds[OURS] = [args.python, str(Path(__file__).with_name("bench.py")), *protocol, *args.bench_args]
    return cmds


def round_ratios(ours: dict, references: dict[str, dict]) -> dict:
    """One round of one model: each side's medians, the faster reference per figure, and ours / it."""
    medians = {name: {m: _rounds.median_of(res, m) for m in METRICS} for name, res in references.items()}
    medians[OURS] = {m: _rounds.median_of(ours, m) for m in METRICS}
    faster, ratios = {}, {}
    for m in METRICS:
        scored = [(v[m], name) for name, v in medians.items() if name != OURS and v[m] is not None]
        best_value, best_name = max(scored, key=lambda x: x[0]) if scored else (None, None)  # a tie: packed
        faster[m] = best_name
        ratios[m] = _rounds.ratio(medians[OURS][m], best_value)
    return {"medians": medians, "faster_reference": faster, "ratio": ratios}


def summarize(rounds: list[dict], models: list[str]) -> dict:
    """{model: {figure: {median, min, max, rounds}}} of the per-round ratios."""
    return {
        model: {m: _rounds.spread([r["ratio"][m] for r in rounds if r["model"] == model]) for m in METRICS}
        for model in models
    }


def markdown_table(rounds: list[dict], summary: dict) -> str:
    """Per-round ratios (with the faster reference's name), then the medians and ranges."""
    short = {"torch_packed": "packed", "torch_padded": "padded", None: "—"}
    cell = lambda x: "—" if x is None else f"{x:.2f}×"  # noqa: E731
    lines = ["| round | model | " + " | ".join(HEADERS[m] for m in METRICS) + " |", "|---|---|---|---|---|"]
    for r in rounds:
        cells = [f"{cell(r['ratio'][m])} ({short[r['faster_reference'][m]]})" for m in METRICS]
        lines.append(f"| {r['round']} | {r['model']} | " + " | ".join(cells) + " |")
    lines += ["", "| model | " + " | ".join(HEADERS[m] for m in METRICS) + " |", "|---|---|---|---|"]
    for model, by_metric in summary.items():
        lines.append(f"| {model} | " + " | ".join(_rounds.format_spread(by_metric[m]) for m in METRICS) + " |")
    return "\n".join(lines) + "\n"


def run_rounds(args) -> list[dict]:
    """Every round, every model, the contenders in rotated order, each in a fresh process."""
    rounds = []
    for k in range(args.rounds):
        for model in args.models:
            cmds = commands(args, model)
            results = {}
            for name in _rounds.rotated(list(cmds), k):
                results[name] = _rounds.run_json(cmds[name], f"round {k + 1}/{args.rounds} {model} {name}")
                figures = ", ".join(f"{HEADERS[m]} {_rounds.median_of(results[name], m)}" for m in METRICS)
                print(f"  {figures}", file=sys.stderr, flush=True)  # kept in the log if a later process fails
            ours = results.pop(OURS)
            load = {name: res.get("load_before") for name, res in [*results.items(), (OURS, ours)]}
            entry = {"round": k + 1, "model": model, **round_ratios(ours, results), "load_before": load}
            rounds.append({**entry, "ours_env": _env(ours)})
    return rounds


def _env(result: dict) -> dict:
    keys = ("jax_version", "jaxlib_version", "flax_version", "device", "threads")
    return {k: result[k] for k in keys if k in result}


def main(argv=None):
    args = parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        rounds = run_rounds(args)
    except _rounds.RunError as e:
        sys.exit(f"error: {e}")
    summary = summarize(rounds, args.models)
    out = {
        "benchmark": "versus_pytorch",
        "started": started,
        "rounds_requested": args.rounds,
        "commands": {model: {n: shlex.join(c) for n, c in commands(args, model).items()} for model in args.models},
        "rounds": rounds,
        "summary": summary,
    }
    print(json.dumps(out))
    table = markdown_table(rounds, summary)
    if args.table:
        Path(args.table).write_text(table)
    else:
        print(table, file=sys.stderr)


if __name__ == "__main__":
    main()
