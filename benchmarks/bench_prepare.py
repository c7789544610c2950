#!/usr/bin/env python3
"""Wall time and peak RSS (`/usr/bin/time -v`) of `train.py` up to the end of step 2 on a given
corpus: first with an empty corpus cache (preparation included), then with a new workdir (the
prepared corpus reused); prints one JSON object.

    python benchmarks/make_big_corpus.py --input ../shared/data/fra-eng/fra.txt --pairs 5000000 --output /tmp/fra5m.txt
    python benchmarks/bench_prepare.py --tsv /tmp/fra5m.txt

The run is issue 18's protocol: `configs/fra_eng.py` with `--config.train.num_steps=2
--config.data.holdout_valid=100 --config.decode.beam_size=1`. GNU time's maximum resident set
size is that of the largest process (the trainer or one of the preparation's workers).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(args: list[str], env: dict) -> dict:
    done = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", done.stderr).group(1)
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(wall.split(":"))))
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    lines = [line for line in done.stdout.splitlines() if line.startswith(("prepare:", "train:", "valid:"))]
    return {
        "exit": done.returncode,
        "seconds": round(seconds, 1),
        "peak_rss_gb": round(rss_kb / 1024**2, 2),
        "log": lines,
        "error": done.stderr.strip().splitlines()[-30:] if done.returncode else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tsv", required=True)
    ap.add_argument("--work", default=None, help="directory for the cache and the workdirs (default: a new temp dir)")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="bench-prepare-")
    env = dict(os.environ, S2S_JAX_CORPUS_CACHE=os.path.join(work, "cache"), JAX_PLATFORMS="cpu")
    flags = [
        "--config=configs/fra_eng.py",
        f"--config.data.train_tsv={os.path.abspath(args.tsv)}",
        "--config.train.num_steps=2",
        "--config.data.holdout_valid=100",
        "--config.decode.beam_size=1",
    ]
    result = {"tsv": args.tsv, "cpu": os.cpu_count(), "runs": {}}
    for name in ("first", "second"):
        result["runs"][name] = timed(["train.py", f"--workdir={work}/run-{name}", *flags], env)
        print(json.dumps({name: result["runs"][name]}), file=sys.stderr, flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
