#!/usr/bin/env python3
"""Time the training batch stream on a prepared corpus: milliseconds per batch of `TrainIterator`
(plan an epoch, gather rows from the memory-mapped ids); prints one JSON object.

    S2S_JAX_CORPUS_CACHE=/tmp/cache python benchmarks/bench_loader.py --tsv /tmp/fra5m.txt

Uses `configs/fra_eng.py` on the given TSV (prepared first if needed). Compare the figure with a
training step (`bench.py`, metrics.jsonl): the loader matters only if it is a visible fraction of it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from s2s_jax.configs import fra_eng  # noqa: E402
from s2s_jax.data import training_data  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tsv", required=True)
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--workdir", default="/tmp/bench-loader-run")
    args = ap.parse_args()
    config = fra_eng.get_config()
    config.data.train_tsv, config.data.holdout_valid = os.path.abspath(args.tsv), 100
    start = time.perf_counter()
    corpus = training_data.prepare(config, args.workdir, verbose=False)
    opened = time.perf_counter() - start
    iterator = corpus.train_iterator()
    start = time.perf_counter()
    first = next(iterator)  # plans epoch 0
    plan_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    tokens = 0
    for _ in range(args.batches):
        batch = next(iterator)
        tokens += iterator.last_tokens
    per_batch = (time.perf_counter() - start) / args.batches * 1000
    print(
        json.dumps(
            {
                "tsv": args.tsv,
                "pairs": corpus.train_batches.num_pairs,
                "open_s": round(opened, 2),
                "first_batch_ms (plans the epoch)": round(plan_ms, 1),
                "ms_per_batch": round(per_batch, 3),
                "rows": int(first["src"].shape[0]),
                "tokens_per_batch": round(tokens / args.batches, 1),
                "batch_shape": list(batch["src"].shape),
            }
        )
    )


if __name__ == "__main__":
    main()
