#!/usr/bin/env python3
"""Load test of the translation server on loopback; prints one JSON object.

    .venv/bin/python benchmarks/bench_serve.py --workdir runs/m30k_att --input $M/test_2016_flickr.de
    .venv/bin/python benchmarks/bench_serve.py --workdir runs/m30k_tuned --input $M/test_2016_flickr.de \
        --clients 1,32 --no-unbatched --no-offline --server-args="--int8 --shortlist"

For each mode (greedy, beam with the model's decode.beam_size) and each client count
(1, 8, 32), that many client threads each send single sentences from --input (one
POST /translate per sentence, keep-alive connections, the sentences dealt round-robin)
for --seconds. Reported per run: requests/s (= sentences/s), latency p50/p95/p99 in ms,
errors (non-200 answers or failed connections), the server's peak RSS (VmHWM) and the CPU
cores busy in the server and in the client threads (which share the machine).
The same loads at the largest client count then run against a server with batching
switched off (--max_batch=1), and the in-process `Translator.translate` at
--batch-size (decode.py's path: `decode.py --batch_size N`) gives the offline
sentences/s over the same sentences: all at once (sorted by length across the whole
input) and in consecutive chunks of --batch-size (the mixed lengths a server's batch has). Bounded: every run stops at --seconds, and
requests time out after 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import threading
import time

import httpx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from s2s_jax.cli import runtime  # noqa: E402

runtime.limit_openblas_threads()

from s2s_jax.data.text import read_lines  # noqa: E402
from s2s_jax.decoding.inference import SearchOptions  # noqa: E402
from tests.serving_helpers import Server  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(
    url: str, sentences: list[str], clients: int, seconds: float, beam_size: int, search: dict | None = None
) -> dict:
    """`clients` closed-loop clients sending one sentence per request for `seconds`; `search`:
    the request's search settings (default {"beam_size": beam_size})."""
    search = {"beam_size": beam_size} if search is None else search
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(number: int) -> None:
        nonlocal errors
        index = number
        with httpx.Client(base_url=url, timeout=60) as session:
            while time.monotonic() < stop_at:
                text = sentences[index % len(sentences)]
                index += clients
                start = time.perf_counter()
                try:
                    ok = session.post("/translate", json={"text": text, **search}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - start
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = sorted(x * 1000 for x in latencies)

    def pct(p: float) -> float:
        return round(ms[min(len(ms) - 1, int(p / 100 * len(ms)))], 1) if ms else float("nan")

    return {
        "clients": clients,
        "requests": len(ms),
        "errors": errors,
        "seconds": round(wall, 1),
        "sent_per_s": round(len(ms) / wall, 1),
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "mean_ms": round(statistics.fmean(ms), 1) if ms else float("nan"),
    }


def wait_compiled(url: str, timeout: float = 600.0) -> None:
    """Until the server's /info reports no shape compiling in the background (or `timeout` s)."""
    stop_at = time.monotonic() + timeout
    while httpx.get(f"{url}/info").json()["shapes"]["compiling"] and time.monotonic() < stop_at:
        time.sleep(1.0)


def offline(translator, sentences: list[str], beam_size: int, batch_size: int) -> dict:
    """decode.py's path in process: Translator.translate over all sentences at once (sorted by length
    across the whole input), and over consecutive chunks of batch_size sentences (each sorted only
    within itself, like the mixed-length batches a server gathers); each after one compiling pass."""
    opts = SearchOptions(beam_size=beam_size, alpha=translator.config.decode.alpha)
    chunks = [sentences[i : i + batch_size] for i in range(0, len(sentences), batch_size)]
    result = {"batch_size": batch_size}
    for name, calls in (("sorted", [sentences]), ("chunks", chunks)):
        for call in calls:
            translator.translate(call, opts, batch_size=batch_size)
        start = time.perf_counter()
        for call in calls:
            translator.translate(call, opts, batch_size=batch_size)
        result[f"{name}_sent_per_s"] = round(len(sentences) / (time.perf_counter() - start), 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--modes", default="greedy,beam")
    ap.add_argument("--batch-size", type=int, default=32, help="the server's --max_batch and the offline batch size")
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument(
        "--server-args",
        default="",
        help='more serve.py flags, one string (e.g. --server-args="--int8 --shortlist"); the offline '
        "Translator gets the same int8/shortlist options",
    )
    ap.add_argument("--offline", action=argparse.BooleanOptionalAction, default=True, help="also time Translator")
    ap.add_argument(
        "--full-warm-up",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--warm_up_beam_sizes=1,BEAM: every shape compiled before /health (--no-full-warm-up: the covering "
        "shapes only, the server's default; each batch's own shape then compiles in the background)",
    )
    ap.add_argument(
        "--warm-seconds",
        type=float,
        default=0.0,
        help="before each measured run, the same load for this long (not counted), then a wait until /info "
        "reports no shape compiling: the steady state after first traffic",
    )
    ap.add_argument(
        "--unbatched",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the largest client count against --max_batch=1",
    )
    args = ap.parse_args()
    extra = shlex.split(args.server_args)
    sentences = [s for s in read_lines(args.input, allow_empty=True) if s.strip()]
    clients = [int(c) for c in args.clients.split(",")]
    with open(os.path.join(args.workdir, "config.json")) as f:
        beam = json.load(f)["decode"]["beam_size"]
    beams = {"greedy": 1, "beam": beam}
    result = {
        "workdir": args.workdir,
        "input": args.input,
        "sentences": len(sentences),
        "seconds": args.seconds,
        "max_batch": args.batch_size,
        "max_wait_ms": args.max_wait_ms,
        "server_args": extra,
        "cpu": os.cpu_count(),
        "runs": [],
    }
    configs = [("batched", args.batch_size, clients)]
    if args.unbatched:
        configs.append(("unbatched", 1, [max(clients)]))
    for name, max_batch, counts in configs:
        started = time.perf_counter()
        server = Server(
            args.workdir,
            f"--max_batch={max_batch}",
            f"--max_wait_ms={args.max_wait_ms}",
            f"--beam_sizes=1,{beam}",
            *([f"--warm_up_beam_sizes=1,{beam}"] if args.full_warm_up else []),
            f"--max_nbest={beam}",  # at most the largest beam size
            *extra,
            cache=os.environ.get("S2S_JAX_CACHE", "off"),
        )
        server.wait_ready(600)
        ready_s = round(time.perf_counter() - started, 1)
        try:
            for mode in args.modes.split(","):
                for count in counts:
                    if args.warm_seconds > 0:
                        load(server.url, sentences, count, args.warm_seconds, beams[mode])
                        wait_compiled(server.url)
                    before = httpx.get(f"{server.url}/info").json()["batches"]["search_calls"]
                    cpu_before = cpu_seconds(server.process.pid), cpu_seconds(os.getpid())
                    run = load(server.url, sentences, count, args.seconds, beams[mode])
                    calls = httpx.get(f"{server.url}/info").json()["batches"]["search_calls"] - before
                    run.update(
                        server_cpu=round((cpu_seconds(server.process.pid) - cpu_before[0]) / run["seconds"], 2),
                        client_cpu=round((cpu_seconds(os.getpid()) - cpu_before[1]) / run["seconds"], 2),
                    )
                    run.update(search_calls=calls, texts_per_search=round(run["requests"] / max(calls, 1), 2))
                    run.update(
                        server=name,
                        mode=mode,
                        beam_size=beams[mode],
                        ready_s=ready_s,
                        peak_rss_mb=peak_rss_mb(server.process.pid),
                    )
                    result["runs"].append(run)
                    print(json.dumps(run), file=sys.stderr, flush=True)
        finally:
            result.setdefault("exit_codes", {})[name] = server.stop()
    if not args.offline:
        print(json.dumps(result, indent=1))
        return
    from s2s_jax.decoding.translator import Translator

    translator = Translator(args.workdir, int8="--int8" in extra, shortlist="--shortlist" in extra)
    result["offline"] = {
        mode: offline(translator, sentences, beams[mode], args.batch_size) for mode in args.modes.split(",")
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
