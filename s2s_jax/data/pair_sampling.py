"""Temperature sampling across language pairs: which training rows make each epoch.

With n_i training pairs in language pair i, an epoch of a multilingual run holds
m_i ~ N * n_i^(1/T) / sum_j n_j^(1/T) rows of pair i (N = sum_i n_i, so an epoch keeps its
size). T = 1 is proportional to size (every row once, as a bilingual run); T > 1 flattens:
a small pair is up-sampled (its rows repeated, each floor(m_i/n_i) or one more times) and a
large one down-sampled (a different subset each epoch). Which rows are drawn comes from
np.random.default_rng((seed, epoch, 1)), so an epoch is rebuilt from two integers and a
resumed run reads the same rows (s2s_jax/data/batching.py's exact resume).
"""

from __future__ import annotations

import numpy as np


def epoch_counts(sizes: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of each pair in one epoch: shares ~ n_i^(1/T), rounded (largest remainders) to sum to sum(n_i)."""
    sizes = np.asarray(sizes, np.int64)
    weights = sizes.astype(np.float64) ** (1.0 / temperature)
    exact = weights / weights.sum() * sizes.sum()
    counts = np.floor(exact).astype(np.int64)
    short = int(sizes.sum() - counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return np.maximum(counts, np.minimum(sizes, 1))  # every pair keeps at least one row an epoch


class PairSampler:
    """`sampler(epoch)` -> the row indices (repeats allowed) that make that epoch."""

    def __init__(self, pair_ids: np.ndarray, temperature: float, seed: int):
        pair_ids = np.asarray(pair_ids, np.int64)
        self.rows = [np.flatnonzero(pair_ids == p) for p in range(int(pair_ids.max()) + 1)]
        self.sizes = np.array([len(r) for r in self.rows], np.int64)
        self.counts = epoch_counts(self.sizes, temperature)
        self.temperature, self.seed = float(temperature), int(seed)

    def __call__(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, epoch, 1))
        chosen = []
        for rows, count in zip(self.rows, self.counts):
            repeats = -(-count // len(rows))
            order = np.concatenate([rng.permutation(rows) for _ in range(repeats)])
            chosen.append(order[:count])
        return np.sort(np.concatenate(chosen))

    def fingerprint(self) -> list[int]:
        """What a resumed run's sampling must match (the rows per pair and per epoch, the seed)."""
        return [*self.sizes.tolist(), *self.counts.tolist(), self.seed]


def sampler(pair_ids: np.ndarray, num_pairs: int, temperature: float, seed: int) -> PairSampler | None:
    """The sampler of a run's training rows, or None when every row is read once an epoch (one pair, T = 1)."""
    if num_pairs < 2 or temperature == 1.0:
        return None
    return PairSampler(pair_ids, temperature, seed)
