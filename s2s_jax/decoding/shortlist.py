"""The lexical vocabulary shortlist: which target pieces a sentence's translation may use.

Built once per run from its tokenized training pairs (`build`): for each source piece the k
target pieces most likely to translate it, by plain co-occurrence p(t|s) or by a few EM
iterations of IBM model 1 (the better coverage for its size on multi30k, benchmarks/README.md),
beyond the n most frequent target pieces, which every sentence gets, with EOS and UNK. Saved in
the workdir (`shortlist.npz` + `shortlist.json`), read by `load`.

At decode time each row's set is the frequent pieces, its source pieces' lists and any target ids
it must be able to produce (constraint phrases, a forced prefix) (`Shortlist.row_ids`); a batch
gathers the output layer once for the union of its rows' sets, padded with PAD_ID to one of a few
sizes (`union_size`: powers of two from 128, capped at the vocabulary, so few programs compile),
and a mask [B, S] keeps each row to its own set (`Shortlist.batch`), so a sentence's output never
depends on the sentences it shares a batch with. The step function scatters the [B, S] logits
back into the full vocabulary with NEVER everywhere else (`scatter`): every search, filter and
score then runs on [B, V] as it does without a shortlist.

Pure numpy (the build) and jax.numpy (`scatter`, `restricted_step`); no model code.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from s2s_jax.errors import DataError
from s2s_jax.files import write_atomic

TABLE_FILE = "shortlist.npz"
SETTINGS_FILE = "shortlist.json"
MIN_SIZE = 128  # the smallest padded union: below it the output layer costs little anyway
NEVER = -1e9  # the logit of a piece outside a row's set (decode_step's value for PAD and BOS)
METHODS = ("ibm1", "cooc")
ALWAYS = (EOS_ID, UNK_ID)  # in every row's set
_NOT_OUTPUT = (PAD_ID, BOS_ID)  # in no row's set


# ---------------------------------------------------------------------------
# Building: p(t|s) from tokenized pairs, then each source piece's top k
# ---------------------------------------------------------------------------


def _flat(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(all ids concatenated int64, each row's start offset [N + 1])."""
    lengths = np.fromiter((len(r) for r in rows), np.int64, len(rows))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.fromiter((t for r in rows for t in r), np.int64, int(offsets[-1]))
    return flat, offsets


def _products(src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (source position, target position) pair within each sentence pair, vectorised:
    (source ids, target ids, the target token's global index) [sum_i |src_i| |tgt_i|]."""
    s_flat, s_off = _flat(src)
    t_flat, t_off = _flat(tgt)
    a, b = np.diff(s_off), np.diff(t_off)
    counts = a * b
    pair = np.repeat(np.arange(len(src)), counts)
    q = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    t_index = t_off[pair] + q % b[pair]
    return s_flat[s_off[pair] + q // b[pair]], t_flat[t_index], t_index


def cooccurrence(
    src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], tgt_vocab: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """p(t|s) = (pairs whose source has s and target has t) / (pairs whose source has s), as
    sparse (s, t, p) over the pieces that occur together."""
    src_sets = [sorted(set(r)) for r in src]
    s, t, _ = _products(src_sets, [sorted(set(r)) for r in tgt])
    keys, counts = np.unique(s * tgt_vocab + t, return_counts=True)
    s_of, t_of = keys // tgt_vocab, keys % tgt_vocab
    sentences = np.bincount(_flat(src_sets)[0], minlength=int(s_of.max(initial=0)) + 1)
    return s_of, t_of, counts / sentences[s_of]


def ibm1(
    src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], tgt_vocab: int, iterations: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IBM model 1's translation table t(t|s) after `iterations` EM iterations from uniform, with
    a NULL source word (id -1, left out of the result), as sparse (s, t, p)."""
    null = max((max(r, default=0) for r in src), default=0) + 1
    s, t, t_index = _products([[null, *r] for r in src], tgt)
    keys, inverse = np.unique(s * tgt_vocab + t, return_inverse=True)
    s_of = keys // tgt_vocab
    theta = np.ones(len(keys))
    for _ in range(iterations):
        weight = theta[inverse]
        posterior = weight / np.bincount(t_index, weight)[t_index]  # over each target token's sources
        counts = np.bincount(inverse, posterior, minlength=len(keys))
        theta = counts / np.bincount(s_of, counts)[s_of]
    real = s_of != null
    return s_of[real], (keys % tgt_vocab)[real], theta[real]


def top_k_table(s: np.ndarray, t: np.ndarray, p: np.ndarray, src_vocab: int, k: int, exclude: np.ndarray) -> np.ndarray:
    """int32 [src_vocab, k]: each source piece's k most likely target pieces by `p` (ties by id),
    leaving out `exclude` (the frequent pieces, which every row has anyway); PAD_ID where fewer."""
    keep = ~np.isin(t, exclude) & (s < src_vocab)
    s, t, p = s[keep], t[keep], p[keep]
    order = np.lexsort((t, -p, s))
    s, t = s[order], t[order]
    starts = np.searchsorted(s, s, side="left")
    rank = np.arange(len(s)) - starts
    table = np.full((src_vocab, max(k, 0)), PAD_ID, np.int32)
    top = rank < k
    table[s[top], rank[top]] = t[top]
    return table


def frequent_targets(tgt: Sequence[Sequence[int]], n: int, tgt_vocab: int) -> np.ndarray:
    """int32: the n most frequent target pieces of the training targets (ties by id), specials out."""
    counts = np.bincount(_flat(tgt)[0], minlength=tgt_vocab).astype(np.int64)
    counts[list(_NOT_OUTPUT + ALWAYS)] = -1
    order = np.lexsort((np.arange(tgt_vocab), -counts))
    return np.sort(order[: min(n, int((counts > 0).sum()))]).astype(np.int32)


# ---------------------------------------------------------------------------
# The shortlist: per row, per batch
# ---------------------------------------------------------------------------


def union_size(n: int, vocab_size: int) -> int:
    """The padded size of a batch's union of n ids: the smallest power of two >= n, at least
    MIN_SIZE, at most the vocabulary."""
    return min(max(MIN_SIZE, 1 << max(n - 1, 0).bit_length()), vocab_size)


def union_sizes(vocab_size: int) -> list[int]:
    """Every size `union_size` gives for this vocabulary, ascending: the shapes a server compiles."""
    sizes, size = [], MIN_SIZE
    while size < vocab_size:
        sizes.append(size)
        size *= 2
    return sizes + [vocab_size]


@dataclasses.dataclass(frozen=True)
class Shortlist:
    """A run's lexical table (`table[s]`: source piece s's k target pieces) and frequent pieces."""

    table: np.ndarray  # int32 [src_vocab, k], PAD_ID where a piece has fewer than k
    frequent: np.ndarray  # int32 [n]
    tgt_vocab_size: int
    settings: dict = dataclasses.field(default_factory=dict)  # method, k, frequent, pairs, coverage

    def check(self, workdir: str, src_vocab: int, tgt_vocab: int) -> None:
        """DataError when the shortlist was built for other vocabulary sizes than the model's."""
        if (self.table.shape[0], self.tgt_vocab_size) != (src_vocab, tgt_vocab):
            raise DataError(
                f"{os.path.join(workdir, TABLE_FILE)} was built for vocabularies of {self.table.shape[0]} and "
                f"{self.tgt_vocab_size} pieces, the model has {src_vocab} and {tgt_vocab}: rebuild it with "
                f"`{build_command(workdir)}`"
            )

    def row_ids(self, source: Sequence[int], extra: Sequence[int] = ()) -> np.ndarray:
        """The sorted target ids one row may output: the frequent pieces, EOS and UNK, its source
        pieces' lists and `extra` (its constraint phrases' and forced prefix's ids)."""
        source = np.asarray(source, np.int64)
        source = source[(source >= 0) & (source < self.table.shape[0])]
        ids = np.concatenate([self.frequent, ALWAYS, self.table[source].ravel(), np.asarray(extra, np.int64)])
        ids = np.unique(ids.astype(np.int32))
        return ids[~np.isin(ids, _NOT_OUTPUT) & (ids < self.tgt_vocab_size)]

    def size(self, rows: Sequence[np.ndarray]) -> int:
        """The padded union size of a batch of these rows' sets."""
        return union_size(len(np.unique(np.concatenate([*rows, ALWAYS]))), self.tgt_vocab_size)

    def batch(
        self, rows: Sequence[np.ndarray], num_rows: int, size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids int32 [S], mask bool [num_rows, S]) for a batch of these rows' sets (`row_ids`):
        the union padded with PAD_ID to `size` (default `self.size(rows)`), and which of the ids
        each row may output (filler rows past `rows`: none)."""
        union = np.unique(np.concatenate([*rows, ALWAYS]).astype(np.int32))
        size = self.size(rows) if size is None else size
        if len(union) > size:
            raise ValueError(f"a batch's shortlist has {len(union)} ids, more than the size {size} it is padded to")
        ids = np.full((size,), PAD_ID, np.int32)
        ids[: len(union)] = union
        mask = np.zeros((num_rows, size), bool)
        for r, row in enumerate(rows):
            mask[r, : len(union)] = np.isin(union, row)
        return ids, mask


def coverage(shortlist: Shortlist, src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]]) -> dict:
    """How well the lists fit held-out pairs: the share of reference target pieces inside their
    sentence's set, the share of sentences whose reference is wholly inside, and the mean set size."""
    inside = total = whole = size = 0
    for s, t in zip(src, tgt):
        ids = shortlist.row_ids(s)
        hit = int(np.isin(np.asarray(t, np.int32), ids).sum())
        inside, total, whole, size = inside + hit, total + len(t), whole + (hit == len(t)), size + len(ids)
    n = max(len(src), 1)
    return {"coverage": inside / max(total, 1), "whole_sentences": whole / n, "mean_size": size / n}


def build(
    src: Sequence[Sequence[int]],
    tgt: Sequence[Sequence[int]],
    src_vocab: int,
    tgt_vocab: int,
    k: int,
    frequent: int,
    method: str = "ibm1",
    iterations: int = 5,
) -> Shortlist:
    """The shortlist of tokenized training pairs (ids without BOS/EOS): `method` ibm1 or cooc
    scores p(t|s); each source piece keeps its k best beyond the `frequent` most frequent targets."""
    if method not in METHODS:
        raise ValueError(f"shortlist method must be one of {', '.join(METHODS)}, got {method!r}")
    if k < 0 or frequent < 0:
        raise ValueError(f"k and frequent must be >= 0, got k={k} frequent={frequent}")
    common = frequent_targets(tgt, frequent, tgt_vocab)
    s, t, p = ibm1(src, tgt, tgt_vocab, iterations) if method == "ibm1" else cooccurrence(src, tgt, tgt_vocab)
    table = top_k_table(s, t, p, src_vocab, k, np.asarray([*common, *_NOT_OUTPUT, *ALWAYS]))
    settings = {"method": method, "k": k, "frequent": frequent, "pairs": len(src)}
    if method == "ibm1":
        settings["iterations"] = iterations
    return Shortlist(table, common, tgt_vocab, settings)


# ---------------------------------------------------------------------------
# In the workdir
# ---------------------------------------------------------------------------


def exists(workdir: str) -> bool:
    return os.path.isfile(os.path.join(workdir, TABLE_FILE))


def build_command(workdir: str) -> str:
    return f"python shortlist.py --workdir {workdir}"


def save(shortlist: Shortlist, workdir: str) -> None:
    """shortlist.npz (table, frequent pieces, vocabulary size) and shortlist.json (its settings)."""
    buffer = io.BytesIO()
    np.savez(buffer, table=shortlist.table, frequent=shortlist.frequent, tgt_vocab_size=shortlist.tgt_vocab_size)
    write_atomic(os.path.join(workdir, TABLE_FILE), buffer.getvalue())
    write_atomic(os.path.join(workdir, SETTINGS_FILE), json.dumps(shortlist.settings, indent=2) + "\n")


def load(workdir: str) -> Shortlist:
    """The workdir's shortlist; DataError (with the command that builds it) when it has none."""
    path = os.path.join(workdir, TABLE_FILE)
    if not os.path.isfile(path):
        raise DataError(
            f"{workdir} has no vocabulary shortlist ({TABLE_FILE}): build it with `{build_command(workdir)}`"
        )
    try:
        with np.load(path) as data:
            table, common, size = data["table"], data["frequent"], int(data["tgt_vocab_size"])
    except (OSError, ValueError, KeyError) as err:
        raise DataError(
            f"{path}: not a readable shortlist ({err}): rebuild it with `{build_command(workdir)}`"
        ) from None
    settings_path = os.path.join(workdir, SETTINGS_FILE)
    settings = {}
    if os.path.isfile(settings_path):
        with open(settings_path, encoding="utf-8") as f:
            settings = json.load(f)
    return Shortlist(table.astype(np.int32), common.astype(np.int32), size, settings)


# ---------------------------------------------------------------------------
# In the step function
# ---------------------------------------------------------------------------


def scatter(logits: jax.Array, ids: jax.Array, mask: jax.Array, vocab_size: int) -> jax.Array:
    """[..., S] logits of `ids` -> [..., V]: a row's own ids (mask) keep theirs, all else NEVER."""
    kept = jnp.where(mask, logits, NEVER).astype(jnp.float32)
    return jnp.full(logits.shape[:-1] + (vocab_size,), NEVER, jnp.float32).at[..., ids].set(kept)


def restricted_step(step_fn: Callable, output, ids: jax.Array, vocab_size: int) -> Callable:
    """A search step function over memory (model memory, mask [N, S]) from a model step function
    that takes `output=` (the gathered output layer, Seq2Seq.decode_step's): full-vocabulary
    logits with NEVER outside each row's set. The mask lives in the memory so that it follows its
    row through beam expansion, sampling's repeats and compaction."""

    def step(memory, state, tokens):
        inner, mask = memory
        logits, state = step_fn(inner, state, tokens, output=output)
        return scatter(logits, ids, mask, vocab_size), state

    return step
