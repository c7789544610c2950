#!/usr/bin/env python3
"""The server's first traffic: latency in the first --seconds after /health turns 200, per search.

    .venv/bin/python benchmarks/bench_first_traffic.py --workdir runs/m30k_tuned --input $M/test_2016_flickr.de

For each search (greedy, beam 5, beam 8, sampling with top-p 0.9) and each client count (1, 32),
a fresh server (`--max_batch 32 --max_wait_ms 5`, the default beam sizes, no compile cache) is
started; as soon as its /health answers 200 that many closed-loop clients send single sentences
from --input with that search for --seconds (bench_serve.py's load). Printed as one JSON object:
per run the time to /health, the warm-up's shapes and seconds (/info), latency p50/p90/p99 in ms,
requests/s, errors, and how many batches ran on a covering shape while their own compiled.
`--windows 2` also measures the next --seconds (the same search once more shapes have compiled).
`--shared-server` starts one server per client count and runs the searches on it one after
another (quicker; each is still its search's first traffic, but not right after /health).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import httpx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_serve import load  # noqa: E402
from s2s_jax.data.text import read_lines  # noqa: E402
from tests.serving_helpers import Server  # noqa: E402

SEARCHES = {
    "greedy": {"beam_size": 1},
    "beam5": {"beam_size": 5},
    "beam8": {"beam_size": 8},
    "sample": {"sample": True, "top_p": 0.9},
    "beam5_nbest3": {"beam_size": 5, "nbest": 3},
    "sample_nbest3": {"sample": True, "nbest": 3, "temperature": 0.8},
}


def first_traffic(workdir: str, sentences: list[str], searches: list[str], clients: int, args) -> list[dict]:
    """One fresh server, then from the moment its /health is 200 `clients` clients with each of
    `searches` in turn for args.seconds."""
    started = time.perf_counter()
    server = Server(
        workdir,
        f"--max_batch={args.batch_size}",
        f"--max_wait_ms={args.max_wait_ms}",
        cache=os.environ.get("S2S_JAX_CACHE", "off"),
    )
    try:
        server.wait_ready(1800)
        ready_s = round(time.perf_counter() - started, 1)
        runs = []
        for search in searches:
            for window in range(1, args.windows + 1):
                run = load(server.url, sentences, clients, args.seconds, 0, SEARCHES[search])
                shapes = httpx.get(f"{server.url}/info", timeout=60).json()["shapes"]
                run.update(search=search, settings=SEARCHES[search], window=window, ready_s=ready_s, shapes=shapes)
                runs.append(run)
                print(json.dumps(run), file=sys.stderr, flush=True)
        return runs
    finally:
        run_exit = server.stop()
        if run_exit != 0:
            print(f"warning: the server exited {run_exit}: {server.output[-2000:]}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--clients", default="1,32")
    ap.add_argument("--searches", default="greedy,beam5,beam8,sample", help=f"of {', '.join(SEARCHES)}")
    ap.add_argument("--batch-size", type=int, default=32, help="the server's --max_batch")
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument(
        "--windows", type=int, default=1, help="consecutive windows of --seconds per search (2: and the next)"
    )
    ap.add_argument("--shared-server", action="store_true", help="one server per client count for all searches")
    args = ap.parse_args()
    searches = args.searches.split(",")
    if unknown := [s for s in searches if s not in SEARCHES]:
        sys.exit(f"error: unknown search {', '.join(unknown)} (known: {', '.join(SEARCHES)})")
    sentences = [s for s in read_lines(args.input, allow_empty=True) if s.strip()]
    result = {"workdir": args.workdir, "input": args.input, "seconds": args.seconds, "cpu": os.cpu_count(), "runs": []}
    result["shared_server"] = args.shared_server
    for clients in (int(c) for c in args.clients.split(",")):
        for group in [searches] if args.shared_server else [[s] for s in searches]:
            result["runs"] += first_traffic(args.workdir, sentences, group, clients, args)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
