"""Skipping padded time steps in the recurrences: rows sorted by length, run as a few time segments.

PyTorch's packed sequences skip padded time steps; XLA needs static shapes. So the
host describes a batch's lengths with a `Segments` (static: a jit argument that is
compiled for, not traced): with its rows sorted longest first, segment k runs the
`rows[k]` longest rows from time `ends[k-1]` to `ends[k]`, and every shorter row has
ended by then. The encoder (by source length) and the teacher-forced decoder (by target
length) sort their rows on device, run each recurrence as one `nn.scan` per segment over
the shrinking row block (`run_segments`) and put the rows back, so the outputs at real
positions and the encoder's final states equal the padded computation's.

A batch gets at most `GROUPS` segments, their ends rounded up to a multiple of
`GRID` steps, so batches of one bucket share a handful of profiles (compiles), and
none when it would skip less than `MIN_SAVING` of its real rows' steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax.data.tokenizer import PAD_ID

GROUPS = 4  # row blocks: all rows, the longest 3/4, 1/2, 1/4
GRID = 4  # segment ends are multiples of this many steps (fewer distinct profiles)
# A profile is used only when it skips at least this fraction of the real rows' steps: each new
# profile is a compile, and length-bucketed batches (mostly real tokens already) gain little from it.
MIN_SAVING = 0.15


@dataclasses.dataclass(frozen=True)
class Segments:
    """Static time-segment profile of a batch whose rows are sorted longest first."""

    rows: tuple[int, ...]  # live rows per segment, non-increasing
    ends: tuple[int, ...]  # exclusive end step per segment, increasing; the last may be < width


def _blocks(ordered: np.ndarray, width: int, groups: int, grid: int) -> tuple[list[int], list[int]]:
    """(rows, ends) for lengths sorted longest first; see `Segments`."""
    batch = len(ordered)
    rows: list[int] = []
    ends: list[int] = []
    for q in range(groups):
        live = batch - (q * batch) // groups
        after = batch - ((q + 1) * batch) // groups  # rows [after, batch) end within this segment
        bound = int(ordered[after]) if after < batch else 0  # the longest of them
        end = min(width, -(-bound // grid) * grid)
        if end > (ends[-1] if ends else 0):
            rows.append(live)
            ends.append(end)
    return rows, ends


def _row_steps(rows: list[int], ends: list[int]) -> int:
    return sum(r * (end - start) for r, start, end in zip(rows, [0] + ends[:-1], ends))


def for_lengths(
    lengths: np.ndarray, width: int, groups: int = GROUPS, grid: int = GRID, min_saving: float = MIN_SAVING
) -> Segments | None:
    """The profile for rows of these lengths padded to `width` steps, or None when it would
    skip less than `min_saving` of the real rows' steps (then the plain padded scan runs).

    The decision leaves out filler rows (length 0): they fill only a bucket's last batch of an
    epoch, which is not worth a compile of its own; where a profile is used, they are skipped too.
    """
    ordered = np.sort(np.asarray(lengths))[::-1]
    real = ordered[ordered > 0]
    if not len(real) or _row_steps(*_blocks(real, width, groups, grid)) > (1.0 - min_saving) * len(real) * width:
        return None
    return Segments(*map(tuple, _blocks(ordered, width, groups, grid)))


def for_tokens(tokens: np.ndarray) -> Segments | None:
    """The profile of a padded [B, T] token batch (PAD = padding)."""
    tokens = np.asarray(tokens)
    return for_lengths((tokens != PAD_ID).sum(axis=1), tokens.shape[1])


BatchSegments = tuple[Segments | None, Segments | None]  # (source, decoder input)


def for_batch(batch: dict, target: bool = True) -> BatchSegments | None:
    """The (source, decoder input) profiles of a training batch, or None when neither skips a step;
    `target` False: no decoder-input profile (a decoder that runs step by step reads none, and each
    distinct profile is a compile of the train step)."""
    profiles = (for_tokens(batch["src"]), for_tokens(batch["tgt_in"]) if target else None)
    return None if profiles == (None, None) else profiles


def sort_order(lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(order, inverse): rows longest first, and the permutation that puts them back."""
    order = jnp.argsort(-lengths, stable=True)
    return order, jnp.argsort(order)


def run_segments(scan: Callable, carry: Any, x_proj: jax.Array, segments: Segments) -> tuple[Any, Any]:
    """`scan` (a recurrence over [rows, T] inputs: (carry, x_proj) -> (carry, outputs), outputs a
    pytree of [rows, T, ...] arrays) over rows sorted longest first, one call per segment
    -> (outputs [B, T, ...], final carry).

    Rows past a segment's `rows` keep their carry and emit zeros from there on.
    """
    batch, width = x_proj.shape[:2]
    pieces = []
    start = 0
    for rows, end in zip(segments.rows, segments.ends):
        live = jax.tree.map(lambda a, r=rows: a[:r], carry)
        live, out = scan(live, x_proj[:rows, start:end])
        carry = jax.tree.map(lambda full, part, r=rows: jnp.concatenate([part, full[r:]]), carry, live)
        pieces.append(jax.tree.map(lambda a, r=rows: jnp.pad(a, ((0, batch - r),) + ((0, 0),) * (a.ndim - 1)), out))
        start = end
    if start < width:
        pieces.append(jax.tree.map(lambda a: jnp.zeros((batch, width - start) + a.shape[2:], a.dtype), out))
    return jax.tree.map(lambda *parts: jnp.concatenate(parts, axis=1), *pieces), carry
