#!/usr/bin/env python3
"""A large corpus built reproducibly from a small one: its lines repeated, each copy in a new
shuffled order, cut at --pairs lines; prints one JSON line.

    python benchmarks/make_big_corpus.py --input ../shared/data/fra-eng/fra.txt --pairs 5000000 --output /tmp/fra5m.txt

Used to measure the prepared-corpus pipeline (s2s_jax/data/corpus_cache.py) at 1M and 5M pairs:
copy k is np.random.default_rng((seed, k)).permutation of the input's lines, so the same
arguments always give the same bytes. The output is written in blocks (memory stays about
the size of the input).
"""

from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True)
    ap.add_argument("--pairs", type=int, required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with open(args.input, "rb") as f:
        lines = [line if line.endswith(b"\n") else line + b"\n" for line in f if line.strip()]
    digest, written, copy = hashlib.sha256(), 0, 0
    with open(args.output, "wb") as out:
        while written < args.pairs:
            order = np.random.default_rng((args.seed, copy)).permutation(len(lines))[: args.pairs - written]
            block = b"".join(lines[i] for i in order)
            out.write(block)
            digest.update(block)
            written, copy = written + len(order), copy + 1
    print(
        json.dumps(
            {
                "output": args.output,
                "pairs": written,
                "copies": copy,
                "input_pairs": len(lines),
                "sha256": digest.hexdigest()[:16],
            }
        )
    )


if __name__ == "__main__":
    main()
