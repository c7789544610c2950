#!/usr/bin/env python3
"""One sentence at a time: batch-1 greedy and beam-5 latency, ours against PyTorch float and int8.

    .venv/bin/python benchmarks/latency.py --workdir runs/m30k_tuned [--shortlist] [--int8]   # one process
    .venv/bin/python benchmarks/latency.py --protocol [--int8]                                 # one process
    .venv/bin/python benchmarks/latency.py --rounds 5 --workdir runs/m30k_tuned \\
        --torch-python /work/torch-venv/bin/python                                             # the comparison

Every sentence is its own request, as a server sees it: `--input` (default test2016's German side)
is read line by line, each line timed from text (or ids) in to ids out, after one untimed pass that
compiles every shape. Reported per search: p50, p90 and mean milliseconds per sentence.

- `--workdir W`: the trained model through `Translator.translate([line], batch_size=1)`: tokenizing,
  the search, detokenizing; `--shortlist` and `--int8` as decode.py takes them.
- `--protocol`: the benchmark protocol's model (bench.py's: vocab 8000, emb 256, two LSTM layers of
  512, no attention) with random parameters, through `Inference.run` at batch 1; `--torch` runs
  ../shared/bench/torch_ref.py's model of the same sizes with `greedy_decode` / `beam_search`
  (`--int8` there: torch.ao.quantization.quantize_dynamic over nn.LSTM and nn.Linear). Both sides'
  output layers give EOS a bias of -1e9, so a random model never ends early: a line of n words is
  a source of n+1 tokens and both decode exactly n+1 steps (the same work on both sides).
- `--rounds N`: N rounds of fresh processes, the contenders' order rotating: ours float and int8 and
  PyTorch float and int8 on the protocol model, then (with `--workdir`) ours float, shortlist, int8
  and both on the trained model. Stdout: one JSON object with each round's figures and, per
  contender and search, the median and range of its p50 over the rounds, and our protocol
  model's speed-up over PyTorch's int8 model (its p50 / ours); a markdown table on stderr.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import _common
import _rounds

SEARCHES = {"greedy": 1, "beam5": 5}
EOS_ID = 2  # the same id on both sides (s2s_jax.data.tokenizer.EOS_ID, torch_ref.EOS)
DEFAULT_INPUT = _common.REF_DIR.parent / "data" / "multi30k" / "test_2016_flickr.de"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", help="a trained run (its best checkpoint)")
    ap.add_argument("--protocol", action="store_true", help="the protocol model with random parameters")
    ap.add_argument("--torch", action="store_true", help="with --protocol: torch_ref.py's model (run with torch)")
    ap.add_argument("--shortlist", action="store_true", help="decode with the workdir's vocabulary shortlist")
    ap.add_argument("--int8", action="store_true", help="int8 weights (ours: --int8; torch: quantize_dynamic)")
    ap.add_argument("--input", default=str(DEFAULT_INPUT), help="one sentence per line")
    ap.add_argument("--lines", type=int, default=300, help="the first this many lines (0 = all)")
    ap.add_argument("--searches", default="greedy,beam5", help=f"comma-separated subset of {','.join(SEARCHES)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=0, help="run the comparison: this many rounds of fresh processes")
    ap.add_argument("--python", default=sys.executable, help="interpreter for our side (rounds)")
    ap.add_argument("--torch-python", default=str(_common.REPO / ".venv-bench" / "bin" / "python"))
    ap.add_argument("--torch-ref", default=str(_common.REF_DIR / "torch_ref.py"))
    args = ap.parse_args(argv)
    args.searches = [s for s in args.searches.split(",") if s]
    if not args.searches or any(s not in SEARCHES for s in args.searches):
        ap.error(f"--searches: choose from {','.join(SEARCHES)}")
    if not Path(args.input).is_file():
        ap.error(f"--input: no such file: {args.input}")
    if not args.rounds and bool(args.workdir) == args.protocol:
        ap.error("give one of --workdir W and --protocol (or --rounds N)")
    if args.torch and not args.protocol:
        ap.error("--torch runs the protocol model: add --protocol")
    return args


def read_lines(path: str, count: int) -> list[str]:
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[:count] if count else lines


def summary_ms(times_s: list[float]) -> dict:
    """p50, p90 and mean of per-sentence seconds, in milliseconds."""
    ms = sorted(1000 * t for t in times_s)
    pick = lambda q: ms[min(len(ms) - 1, int(round(q * (len(ms) - 1))))]  # noqa: E731
    return {"p50": round(pick(0.5), 3), "p90": round(pick(0.9), 3), "mean": round(statistics.fmean(ms), 3)}


def timed_pass(translate_one, items: list) -> dict:
    """One untimed pass (compiles every shape), then each item timed alone."""
    for item in items:
        translate_one(item)
    times = []
    for item in items:
        start = time.perf_counter()
        translate_one(item)
        times.append(time.perf_counter() - start)
    return summary_ms(times)


def measure_workdir(args, lines: list[str]) -> dict:
    from s2s_jax.decoding.translator import SearchOptions, Translator

    options = {name: True for name in ("shortlist", "int8") if getattr(args, name)}
    translator = Translator(args.workdir, **options)
    out = {}
    for name in args.searches:
        opts = SearchOptions(beam_size=SEARCHES[name])
        out[name] = timed_pass(lambda line, opts=opts: translator.translate([line], opts, batch_size=1), lines)
    return out


def protocol_lengths(lines: list[str]) -> list[int]:
    """Each line's source length for the protocol model: its words + EOS, 2..64."""
    return [min(max(len(line.split()) + 1, 2), 64) for line in lines]


def measure_protocol_ours(args, lengths: list[int]) -> dict:
    import jax
    import numpy as np

    from s2s_jax.decoding.inference import Inference, SearchOptions

    config, model, _ = _common.build_model(vocab=8000, emb=256, hidden=512, layers=2)
    src = np.full((1, 8), 3, np.int32)
    params = model.init(jax.random.key(0), src, src)["params"]
    bias = params["decoder"]["output"]["bias"]
    params["decoder"]["output"]["bias"] = bias.at[EOS_ID].set(-1e9)
    if args.int8:
        from s2s_jax.models import int8_weights

        model, params = int8_weights.quantized(model, params)
    with config.unlocked():
        config.decode.max_len_a, config.decode.max_len_b = 1.0, 0
    inference = Inference(model, config.decode, max(lengths))
    rng = np.random.default_rng(0)
    sources = [rng.integers(3, 8000, n - 1).tolist() for n in lengths]  # + EOS = n tokens
    out = {}
    for name in args.searches:
        opts = SearchOptions(beam_size=SEARCHES[name], alpha=1.0)
        out[name] = timed_pass(lambda ids, opts=opts: inference.run(params, [ids], opts, batch_size=1), sources)
    return out


def measure_protocol_torch(args, lengths: list[int]) -> dict:
    import torch

    sys.path.insert(0, str(Path(args.torch_ref).parent))
    import torch_ref

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = torch_ref.Seq2Seq(V=8000, E=256, H=512, layers=2).eval()
    with torch.no_grad():
        model.decoder.out.bias[EOS_ID] = -1e9
    if args.int8:
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8)
    gen = torch.Generator().manual_seed(0)
    sources = [torch.randint(3, 8000, (1, n), generator=gen) for n in lengths]
    searches = {
        "greedy": lambda src: torch_ref.greedy_decode(model, src, torch.tensor([src.shape[1]]), max_len=src.shape[1]),
        "beam5": lambda src: torch_ref.beam_search(
            model, src, torch.tensor([src.shape[1]]), beam=5, max_len=src.shape[1]
        ),
    }
    return {name: timed_pass(searches[name], sources) for name in args.searches}


def measure(args) -> dict:
    """One process's figures, with what was measured and where."""
    threads = _common.limit_threads(args.threads) if not args.torch else {"torch_threads": args.threads}
    lines = read_lines(args.input, args.lines)
    if args.workdir:
        side, figures = "ours", measure_workdir(args, lines)
    elif args.torch:
        side, figures = "torch", measure_protocol_torch(args, protocol_lengths(lines))
    else:
        side, figures = "ours", measure_protocol_ours(args, protocol_lengths(lines))
    return {
        "benchmark": "latency",
        "side": side,
        "model": args.workdir or "protocol",
        "shortlist": args.shortlist,
        "int8": args.int8,
        "input": args.input,
        "sentences": len(lines),
        "ms_per_sentence": figures,
        "cpu": _common.cpu_name(),
        "threads": threads,
    }


def contenders(args) -> dict[str, list[str]]:
    """The command line of every contender of a round."""
    me = str(Path(__file__).resolve())
    common = ["--input", args.input, "--lines", str(args.lines), "--searches", ",".join(args.searches)]
    common += ["--threads", str(args.threads)]
    ours = [args.python, me, *common]
    torch = [args.torch_python, me, "--torch-ref", args.torch_ref, *common, "--protocol", "--torch"]
    cmds = {
        "protocol ours": ours + ["--protocol"],
        "protocol ours int8": ours + ["--protocol", "--int8"],
        "protocol torch": torch,
        "protocol torch int8": torch + ["--int8"],
    }
    if args.workdir:
        trained = ours + ["--workdir", args.workdir]
        cmds["trained"] = trained
        cmds["trained shortlist"] = trained + ["--shortlist"]
        cmds["trained int8"] = trained + ["--int8"]
        cmds["trained shortlist int8"] = trained + ["--shortlist", "--int8"]
    return cmds


def run_rounds(args) -> dict:
    cmds = contenders(args)
    rounds = []
    for k in range(args.rounds):
        results = {}
        for name in _rounds.rotated(list(cmds), k):
            res = _rounds.run_json(cmds[name], f"round {k + 1}/{args.rounds} {name}")
            results[name] = {"ms_per_sentence": res["ms_per_sentence"], "load_before": res.get("load_before")}
            print(f"  {json.dumps(res['ms_per_sentence'])}", file=sys.stderr, flush=True)
        rounds.append({"round": k + 1, "results": results})
    p50 = lambda r, name, s: r["results"][name]["ms_per_sentence"][s]["p50"]  # noqa: E731
    summary = {name: {s: spread_ms([p50(r, name, s) for r in rounds]) for s in args.searches} for name in cmds}
    speedup = {
        s: _rounds.spread([_rounds.ratio(p50(r, "protocol torch int8", s), p50(r, "protocol ours", s)) for r in rounds])
        for s in args.searches
    }
    speedup_int8 = {
        s: _rounds.spread(
            [_rounds.ratio(p50(r, "protocol torch int8", s), p50(r, "protocol ours int8", s)) for r in rounds]
        )
        for s in args.searches
    }
    return {
        "benchmark": "latency_rounds",
        "commands": {name: shlex.join(c) for name, c in cmds.items()},
        "rounds": rounds,
        "p50_ms": summary,
        "speedup_over_torch_int8": {"ours float": speedup, "ours int8": speedup_int8},
    }


def spread_ms(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 2),
        "min": min(values),
        "max": max(values),
        "rounds": len(values),
    }


def markdown_table(result: dict, searches: list[str]) -> str:
    lines = ["| contender | " + " | ".join(f"{s} p50 ms" for s in searches) + " |", "|---" * (len(searches) + 1) + "|"]
    for name, by_search in result["p50_ms"].items():
        cells = [f"{v['median']:.2f} ({v['min']:.2f}–{v['max']:.2f})" for v in (by_search[s] for s in searches)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, by_search in result["speedup_over_torch_int8"].items():
        lines.append(
            f"| {name} vs torch int8 | " + " | ".join(_rounds.format_spread(by_search[s]) for s in searches) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    if args.rounds:
        for flag, path in (
            ("--python", args.python),
            ("--torch-python", args.torch_python),
            ("--torch-ref", args.torch_ref),
        ):
            if not Path(path).is_file():
                sys.exit(f"error: {flag}: no such file: {path}")
        try:
            result = run_rounds(args)
        except _rounds.RunError as e:
            sys.exit(f"error: {e}")
        print(json.dumps(result))
        print(markdown_table(result, args.searches), file=sys.stderr)
        return
    print(json.dumps(measure(args)))


if __name__ == "__main__":
    main()
