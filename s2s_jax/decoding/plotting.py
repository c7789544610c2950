"""Attention heatmaps as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import os

import numpy as np


def plot_attention(weights: np.ndarray, src_pieces: list[str], tgt_pieces: list[str], path: str) -> None:
    """One heatmap: output tokens down the rows, source tokens across the columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(tgt_pieces), len(src_pieces)
    fig, ax = plt.subplots(figsize=(max(3.0, 0.45 * cols + 1.5), max(2.5, 0.4 * rows + 1.2)))
    ax.imshow(weights[:rows, :cols], cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(cols), src_pieces, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(rows), tgt_pieces, fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
