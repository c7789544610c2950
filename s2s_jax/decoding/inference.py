"""The inference path: source ids -> search -> output ids, for every caller.

Validation during training and `Translator` (decode.py, the Python API) both
call `Inference.run` (and `Inference.score` for given outputs), which owns
- output-length caps, `decode.max_len_a * source_length + decode.max_len_b`,
  inside one static `max_steps` per model;
- batching by length: inputs are sorted by length and cut into batches whose
  shapes come from a small set (rows a power of two up to the batch size,
  source length a multiple of 8), so a long file compiles few search functions
  and every batch is dense;
- placement: rows rounded up to a multiple of the device count and split over
  the mesh's `data` axis (s2s_jax/parallel.py); parameters arrive replicated;
- the dispatch to greedy, beam or sampling search (s2s_jax/decoding/search.py), one jit
  per distinct `SearchOptions`, optionally after a forced target prefix;
- ensembles: several models that share the target vocabulary search as one,
  through a step function whose logits are the members' weighted mean of
  log-probabilities, sum_i w_i log p_i (sum_i w_i = 1). Searches normalise
  logits, so the ensemble's distribution is softmax(sum_i w_i log p_i), the
  normalised weighted geometric mean; an ensemble of one model with itself is
  that model. Each member reads the source its own way (its own ids).
Results come back in input order; an empty input gives n-best empty outputs.
Nothing here imports the training code or optax.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
from collections.abc import Callable, Collection, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax import parallel
from s2s_jax.data.tokenizer import EOS_ID, PAD_ID
from s2s_jax.decoding import constraints as dba
from s2s_jax.decoding import search
from s2s_jax.decoding import shortlist as lexical
from s2s_jax.decoding.shortlist import Shortlist
from s2s_jax.models import time_segments
from s2s_jax.models.seq2seq import Seq2Seq
from s2s_jax.models.time_segments import Segments

SOURCE_LENGTH_MULTIPLE = 8  # batch source lengths are rounded up to this
CONSTRAINED_SEARCH = (
    "constraints need beam search with beam_size >= 2: greedy search and sampling cannot look ahead to place them"
)


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """How to search; hashable, so each distinct setting compiles once."""

    beam_size: int = 1
    alpha: float = 0.6
    nbest: int = 1
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    with_scores: bool = False  # greedy/sampling: report the outputs' log-probabilities (else 0)
    no_repeat_ngram: int = 0  # no n-gram of this size twice in an output (0 = off; repetition.py)
    token_scores: bool = False  # report each output token's log-probability (ScoredTokens.token_scores)

    @classmethod
    def from_config(cls, decode_cfg) -> SearchOptions:
        """The search a run validates with: the config's beam size and length penalty."""
        return cls(beam_size=decode_cfg.beam_size, alpha=decode_cfg.alpha)

    def check(self) -> None:
        if self.beam_size < 1 or self.nbest < 1:
            raise ValueError("beam_size and nbest must be at least 1")
        if self.nbest > self.beam_size and not self.sample:
            raise ValueError(f"nbest={self.nbest} needs beam_size >= nbest (got {self.beam_size})")
        if self.sample and self.temperature <= 0:
            raise ValueError("sampling needs temperature > 0 (use greedy decoding for temperature 0)")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.no_repeat_ngram < 2**31:
            raise ValueError(f"no_repeat_ngram must be >= 0 (0 = off), got {self.no_repeat_ngram}")

    def compiled_key(self) -> SearchOptions:
        """What a search compiles for: sizes and switches, not float values.

        alpha, temperature, top_k, top_p and no_repeat_ngram reach the search as traced
        per-row values, so settings that differ only in them share one compiled search (and
        one batch); top_k > 0, top_p < 1 and no_repeat_ngram > 0 only switch their code on.
        """
        return dataclasses.replace(
            self,
            alpha=0.0,
            temperature=1.0,
            top_k=int(self.sample and self.top_k > 0),
            top_p=0.5 if self.sample and self.top_p < 1.0 else 1.0,
            no_repeat_ngram=int(self.no_repeat_ngram > 0),
        )

    def batch_key(self) -> SearchOptions:
        """What sources must share to be searched in one batch: all but the per-row values (and
        token_scores: a batch reports them for every row when one row asks)."""
        return dataclasses.replace(
            self, alpha=0.0, temperature=1.0, top_k=0, top_p=1.0, no_repeat_ngram=0, token_scores=False
        )

    def row_values(self) -> tuple[float, float, int, float]:
        """(alpha, temperature, top_k, top_p): the traced per-row settings."""
        return self.alpha, self.temperature, self.top_k, self.top_p


@dataclasses.dataclass(frozen=True)
class BatchShape:
    """What one compiled search program is for: its compiled key (SearchOptions.compiled_key),
    the batch rows, each ensemble member's source width and the padded size of its vocabulary
    shortlist (0: the whole vocabulary, s2s_jax/decoding/shortlist.py)."""

    key: SearchOptions
    rows: int
    widths: tuple[int, ...]
    shortlist: int = 0

    def covers(self, other: BatchShape) -> bool:
        """Whether a batch of shape `other` can run on this program and give every row the same
        output tokens: more rows and wider sources are padding (filler rows and padded positions
        never change another row's output: the batch-invariance tests), a larger n-best ends in
        the same hypotheses (beam search keeps `beam_size` of them and cuts the list last; sample
        k draws from its own key), a filter switched on passes a row that does not use it
        through unchanged (top_k 0, top_p 1.0, no_repeat_ngram 0), and token scores are an extra
        output; a larger shortlist is padding too (each row keeps its own set). Scores may differ
        in the last float bits, as they do between batch shapes anyway: XLA's kernels depend on the shape."""
        mine, theirs = self.key, other.key
        return (
            (mine.beam_size, mine.sample, mine.with_scores) == (theirs.beam_size, theirs.sample, theirs.with_scores)
            and mine.nbest >= theirs.nbest
            and mine.top_k >= theirs.top_k
            and mine.top_p <= theirs.top_p
            and mine.no_repeat_ngram >= theirs.no_repeat_ngram
            and mine.token_scores >= theirs.token_scores
            and self.rows >= other.rows
            and len(self.widths) == len(other.widths)
            and all(a >= b for a, b in zip(self.widths, other.widths))
            and (self.shortlist == 0) == (other.shortlist == 0)
            and self.shortlist >= other.shortlist
        )


@dataclasses.dataclass
class ScoredTokens:
    """One output: its ids (without EOS) and score (a log-probability, length-normalised for beam),
    and when asked each token's log-probability (EOS last when the output ended with it; a forced
    prefix's tokens 0.0): their sum is the score before length normalisation. `constraints_met` is
    False for a constrained search's output cut at its length cap without every phrase."""

    tokens: list[int]
    score: float
    token_scores: list[float] | None = None
    constraints_met: bool = True


def max_steps_for(max_src_len: int, decode_cfg) -> int:
    """The static output buffer: the cap of the longest source (max_len tokens + EOS)."""
    return int(math.ceil(decode_cfg.max_len_a * (max_src_len + 1) + decode_cfg.max_len_b))


def length_caps(src_lengths: np.ndarray, decode_cfg, max_steps: int) -> np.ndarray:
    """Per-row output cap a * source_length + b (EOS counted in both), within max_steps."""
    cap = np.ceil(decode_cfg.max_len_a * src_lengths + decode_cfg.max_len_b).astype(np.int32)
    return np.minimum(np.maximum(cap, 1), max_steps)


def batch_rows(n: int, batch_size: int) -> int:
    """The rows of a batch that holds n inputs: the smallest power of two >= n, at most
    batch_size, so a caller compiles for few distinct batch shapes."""
    return min(1 << max(n - 1, 0).bit_length(), batch_size)


def row_counts(batch_size: int) -> list[int]:
    """Every row count `batch_rows` gives for batches of up to batch_size inputs, ascending:
    the batch shapes a caller that compiles ahead (the server's warm-up) has to cover."""
    return sorted({batch_rows(n, batch_size) for n in range(1, batch_size + 1)})


def source_width(tokens: int) -> int:
    """The batch width that holds `tokens` source positions (EOS included): a multiple of
    SOURCE_LENGTH_MULTIPLE, at least one."""
    return -(-max(tokens, 1) // SOURCE_LENGTH_MULTIPLE) * SOURCE_LENGTH_MULTIPLE


def row_settings(settings: Sequence[SearchOptions], sample_keys: Sequence[tuple[int, int]]) -> dict:
    """The per-row arrays a compiled search reads (`search_batch`'s `rows`): each row's alpha,
    temperature, top_k, top_p, no_repeat_ngram and sampling key (seed, index)."""
    alpha, temperature, top_k, top_p = zip(*(one.row_values() for one in settings))
    seed, index = zip(*sample_keys)
    return {
        "no_repeat_ngram": np.asarray([one.no_repeat_ngram for one in settings], np.int32),
        "alpha": np.asarray(alpha, np.float32),
        "temperature": np.asarray(temperature, np.float32),
        "top_k": np.asarray(top_k, np.int32),
        "top_p": np.asarray(top_p, np.float32),
        "seed": np.asarray([s & 0xFFFFFFFF for s in seed], np.uint32),
        "index": np.asarray(index, np.int32),
    }


def pad_batch(
    seqs: Sequence[Sequence[int]], chunk: list[int], rows: int, eos: bool, width: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The sequences `seqs[i]` for i in chunk (+ EOS when `eos`) as one batch, int32 [rows, W]
    PAD-padded to `source_width` (a multiple of 8; `width` when given, which must hold them), and
    their lengths (EOS counted); rows past the chunk are all PAD with length 0. The shapes every
    batch of the inference path has."""
    lengths = np.zeros((rows,), np.int32)
    lengths[: len(chunk)] = [len(seqs[i]) + eos for i in chunk]
    width = source_width(int(lengths.max())) if width is None else width
    out = np.full((rows, width), PAD_ID, np.int32)
    for row, i in enumerate(chunk):
        n = len(seqs[i])
        out[row, :n] = seqs[i]
        if eos:
            out[row, n] = EOS_ID
    return out, lengths


def constrained_sources(constraints: Sequence[Sequence[Sequence[int]]] | None, n: int, opts: SearchOptions) -> set[int]:
    """The indices of the sources with phrases; ValueError when `constraints` does not hold one list
    per source, when the search is not a beam search, or when a source has more than
    constraints.MAX_TOKENS constraint tokens."""
    if constraints is None:
        return set()
    if len(constraints) != n:
        raise ValueError(f"{len(constraints)} constraint lists for {n} sources")
    constrained = {i for i, phrases in enumerate(constraints) if dba.phrase_set(phrases)}
    if constrained and (opts.sample or opts.beam_size == 1):
        raise ValueError(CONSTRAINED_SEARCH)
    for i in sorted(constrained):
        if (count := dba.token_count(constraints[i])) > dba.MAX_TOKENS:
            raise ValueError(f"source {i}: its constraints have {count} target tokens, at most {dba.MAX_TOKENS}")
    return constrained


def _row_lists(
    shortlist: Shortlist,
    sources: Sequence[Sequence[int]],
    chunk: list[int],
    prefixes: Sequence[Sequence[int]] | None,
    constraints: Sequence[Sequence[Sequence[int]]] | None,
) -> list[np.ndarray]:
    """Each row's shortlist set: its source pieces' lists and the target ids it must be able to
    produce (its constraint phrases' and forced prefix's)."""
    out = []
    for i in chunk:
        extra = [t for phrase in (constraints[i] if constraints is not None else []) for t in phrase]
        extra += list(prefixes[i]) if prefixes is not None else []
        out.append(shortlist.row_ids(sources[i], extra))
    return out


def _candidates(
    out: list[np.ndarray], row: int, forced: list[int], nbest: int, constrained: bool
) -> list[ScoredTokens]:
    """One row's n-best from a search's host arrays (tokens, scores[, token scores][, constraints
    met]: the compiled key says whether token scores are there, a covering one may add them),
    after its forced prefix."""
    tokens, scores, *rest = out
    met = rest.pop() if constrained else None
    token_logp = rest[0] if rest else None
    return [
        dataclasses.replace(
            _scored_tokens(forced, tokens[row, k], scores[row, k], None if token_logp is None else token_logp[row, k]),
            constraints_met=True if met is None else bool(met[row, k]),
        )
        for k in range(nbest)
    ]


def _cut(row: np.ndarray) -> list[int]:
    """Ids up to the first EOS (or PAD)."""
    out = []
    for token in row.tolist():
        if token in (EOS_ID, PAD_ID):
            break
        out.append(token)
    return out


def _scored_tokens(forced: list[int], tokens: np.ndarray, score: float, token_logp: np.ndarray | None) -> ScoredTokens:
    """One search output as a ScoredTokens: the forced prefix and the tokens up to EOS, and with
    `token_logp` the log-probabilities of those tokens and the EOS (the prefix's as 0.0)."""
    out = _cut(tokens)
    if token_logp is None:
        return ScoredTokens(forced + out, float(score))
    ended = len(out) < len(tokens) and int(tokens[len(out)]) == EOS_ID
    return ScoredTokens(forced + out, float(score), [0.0] * len(forced) + token_logp[: len(out) + ended].tolist())


def _encoded(
    models: tuple[Seq2Seq, ...],
    weights: tuple[float, ...],
    params: tuple,
    srcs: tuple,
    segments: tuple[Segments | None, ...] | None = None,
    shortlist: tuple | None = None,
):
    """(memory, decoder state, step_fn) for a batch of sources: what every search starts from.

    One model's own step function, or for an ensemble (`params` and `srcs` hold one entry per
    member) one over tuples of the members' memories and states whose logits are the weighted
    mean of their log-probabilities. `segments`: each member source's time-segment profile.
    `shortlist` (ids [S], mask [B, S]; `Shortlist.batch`): each member's output layer is gathered
    for the ids once, here, and its steps give NEVER outside each row's set (shortlist.py); the
    mask joins each member's memory, so it follows its rows through every search.
    """
    segments = segments or (None,) * len(models)
    encoded = [
        model.apply({"params": p}, src, segments=seg, method=Seq2Seq.encode)
        for model, p, src, seg in zip(models, params, srcs, segments)
    ]
    step_fns = [
        functools.partial(model.apply, {"params": p}, method=Seq2Seq.decode_step) for model, p in zip(models, params)
    ]
    if shortlist is not None:
        ids, mask = shortlist
        vocab = models[0].config.tgt_vocab_size
        step_fns = [
            lexical.restricted_step(fn, model.apply({"params": p}, ids, method=Seq2Seq.output_layer), ids, vocab)
            for fn, model, p in zip(step_fns, models, params)
        ]
        encoded = [((memory, mask), state) for memory, state in encoded]
    if len(models) == 1:
        return encoded[0][0], encoded[0][1], step_fns[0]

    def step_fn(memory, state, tokens):
        outs = [fn(m, s, tokens) for fn, m, s in zip(step_fns, memory, state)]
        logp = sum(w * jax.nn.log_softmax(logits.astype(jnp.float32)) for w, (logits, _) in zip(weights, outs))
        return logp, tuple(s for _, s in outs)

    return tuple(m for m, _ in encoded), tuple(s for _, s in encoded), step_fn


def search_batch(
    models: tuple[Seq2Seq, ...],
    weights: tuple[float, ...],
    opts: SearchOptions,
    max_steps: int,
    params: tuple,
    srcs: tuple,
    caps,
    rows: dict,
    prefix=None,
    prefix_len=None,
    segments: tuple[Segments | None, ...] | None = None,
    compact: bool = True,
    constraints: dba.Constraints | None = None,
    shortlist: tuple | None = None,
):
    """(tokens [B, nbest, max_steps], scores [B, nbest]) for one batch: encoder and search, the
    traceable function `Inference` compiles (and export.py exports) for each compiled key; with
    `opts.token_scores` also each token's log-probability [B, nbest, max_steps].

    `models`, `weights`, `params` and `srcs` hold one entry per ensemble member (one for a single
    model, weight 1.0); `srcs` are `pad_batch` batches, `caps` [B] the rows' output-length caps.
    With a forced prefix (int32 [B, P] and lengths [B]) the tokens and scores are those of the
    continuation. `segments` (static) skips the sources' padded encoder steps. `compact`: greedy
    and beam search continue with fewer rows once half have finished (search.py); the output
    is the same either way.

    `opts` is a compiled key (SearchOptions.compiled_key); `rows` holds the per-row traced
    settings (alpha, temperature, top_k, top_p, no_repeat_ngram) and sampling keys (seed, index),
    `row_settings`: row r's sample k draws from fold_in(fold_in(key(seed[r]), index[r]), k)
    (`_sample_batch`), so its samples do not depend on its batch.

    `constraints` (beam search only; `constraints.pack`, [B, ...]): phrases each row's output must
    contain; the result then ends with bool [B, nbest]: whether each output contains them.

    `shortlist` (ids int32 [S], mask bool [B, S]; `Shortlist.batch`): each row outputs only its
    own set of target ids (s2s_jax/decoding/shortlist.py).
    """
    memory, state, step_fn = _encoded(models, weights, params, srcs, segments, shortlist)
    start = search.BOS_ID
    if prefix is not None:
        state, start = search.advance(step_fn, memory, state, prefix, prefix_len)

    # Switched on by the compiled key: the n-gram sizes are per-row values, the token scores an output.
    more = {
        "no_repeat_ngram": rows["no_repeat_ngram"] if opts.no_repeat_ngram else None,
        "return_token_log_probs": opts.token_scores,
    }

    def scored(out):
        """(tokens, scores[, token scores]): the log-probabilities accumulated in the loop when
        with_scores asks, else zeros."""
        scores = out[2] if opts.with_scores else jnp.zeros(out[0].shape[0])
        return (out[0], scores) + ((out[-1],) if opts.token_scores else ())

    if constraints is not None and (opts.sample or opts.beam_size == 1):
        raise ValueError(CONSTRAINED_SEARCH)
    if opts.sample:
        return _sample_batch(step_fn, memory, state, opts, max_steps, caps, rows, start, scored, more)
    if opts.beam_size == 1:
        found = scored(
            search.greedy_search(
                step_fn,
                memory,
                state,
                max_steps=max_steps,
                max_lengths=caps,
                bos_id=start,
                return_log_prob=opts.with_scores,
                compact=compact,
                **more,
            )
        )
        return tuple(x[:, None] for x in found)
    found = search.batch_beam_search(
        step_fn,
        memory,
        state,
        beam_size=opts.beam_size,
        max_steps=max_steps,
        max_length=caps,
        alpha=rows["alpha"],
        nbest=opts.nbest,
        bos_id=start,
        compact=compact,
        constraints=constraints,
        **more,
    )
    return found[:2] + found[3:]  # without the lengths (found[2])


def _sample_batch(
    step_fn, memory, state, opts: SearchOptions, max_steps: int, caps, rows: dict, start, scored, more: dict
):
    """(tokens [B, nbest, max_steps], scores [B, nbest][, token scores [B, nbest, max_steps]]):
    `opts.nbest` samples of each row, drawn as one batch of B * nbest rows (row r's sample k is row
    r * nbest + k, one loop however many samples are asked for) with the key
    fold_in(fold_in(key(seed[r]), index[r]), k): it depends only on the source, its seed, index and k."""
    n = opts.nbest
    keys = jax.vmap(lambda seed, index: jax.random.fold_in(jax.random.key(seed), index))(rows["seed"], rows["index"])
    keys = jax.vmap(lambda key: jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.arange(n)))(keys).reshape(-1)

    def repeated(tree):
        return jax.tree.map(lambda x: jnp.repeat(x, n, axis=0), tree)

    if more["no_repeat_ngram"] is not None:
        more = {**more, "no_repeat_ngram": repeated(more["no_repeat_ngram"])}
    outs = scored(
        search.sample(
            step_fn,
            repeated(memory),
            repeated(state),
            keys,
            max_steps=max_steps,
            max_lengths=repeated(caps),
            temperature=repeated(rows["temperature"]),
            top_k=repeated(rows["top_k"]) if opts.top_k else 0,
            top_p=repeated(rows["top_p"]) if opts.top_p < 1.0 else 1.0,
            bos_id=repeated(start) if jnp.ndim(start) else start,
            return_log_prob=opts.with_scores,
            **more,
        )
    )
    return tuple(x.reshape(-1, n, *x.shape[1:]) for x in outs)


def _teacher_forced_log_prob(models, weights, params, srcs, tgt, lengths):
    """(sum, per token [N, T]) of log p(token | source, prefix) over the first `lengths` tokens of
    each row of tgt."""
    memory, state, step_fn = _encoded(models, weights, params, srcs)
    token_logp = search.token_log_probs(step_fn, memory, state, tgt, lengths)
    return jnp.sum(token_logp, axis=1), token_logp  # search.sequence_log_prob's sum


def ensemble_weights(weights: Sequence[float] | None, members: int) -> tuple[float, ...]:
    """Member weights scaled to sum to 1 (equal when None); each must be >= 0, their sum > 0."""
    if weights is None:
        return (1.0 / members,) * members
    weights = [float(w) for w in weights]
    if len(weights) != members:
        raise ValueError(f"{len(weights)} ensemble weights for {members} models")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"ensemble weights must be finite, >= 0 and not all 0, got {weights}")
    return tuple(w / sum(weights) for w in weights)


def ensemble_weights_flag(values: Sequence[str] | None, members: int) -> list[float] | None:
    """decode.py's and serve.py's `--ensemble_weights` (strings, one per --workdir) as numbers,
    checked by `ensemble_weights` before any model loads; None when the flag is not given."""
    if not values:
        return None
    try:
        weights = [float(w) for w in values]
    except ValueError:
        raise ValueError(f"--ensemble_weights must be numbers, got {','.join(values)}") from None
    if len(weights) != members:
        raise ValueError(f"--ensemble_weights has {len(weights)} weights for {members} --workdir")
    ensemble_weights(weights, members)
    return weights


class Inference:
    """Searches a model's (or an ensemble's) outputs for lists of source ids; see the module docstring.

    With one model, `params` and `sources` are that model's; with an ensemble (a sequence of
    models) they are tuples with one entry per member, and member 0's source lengths order
    the batches and set the output-length caps. `skip_padding` and `compact` choose how the
    compiled searches run (time segments, fewer rows as outputs finish), never what they output.
    """

    def __init__(
        self,
        model: Seq2Seq | Sequence[Seq2Seq],
        decode_cfg,
        max_src_len: int,
        mesh: jax.sharding.Mesh | None = None,
        weights: Sequence[float] | None = None,
        max_compiled: int = 16,
        skip_padding: bool = False,
        compact: bool = True,
    ):
        self.models = (model,) if isinstance(model, Seq2Seq) else tuple(model)
        self.weights = ensemble_weights(weights, len(self.models))
        self.decode_cfg = decode_cfg
        self.mesh = parallel.make_mesh() if mesh is None else mesh
        self.max_steps = max_steps_for(max_src_len, decode_cfg)
        self._compiled: dict[SearchOptions, Callable] = {}  # insertion order = least recently used first
        self.max_compiled = max_compiled
        self._lock = threading.Lock()
        self._score_fn: Callable | None = None
        # Each batch's source time-segment profile is compiled for (s2s_jax/models/time_segments.py): worth it
        # for decode.py's length-sorted batches, not for a server that compiles its shapes ahead.
        # The fused recurrences skip each row's padding themselves (no profiles needed).
        self.skip_padding = (
            skip_padding and parallel.num_devices(self.mesh) == 1 and not all(m.config.fused for m in self.models)
        )
        # Greedy and beam search continue with fewer rows once half have finished (search_batch);
        # the outputs are the same either way, so only a benchmark of the plain loop turns it off.
        self.compact = compact
        # The shape a batch runs on, given its own (`BatchShape`): by default its own; a server that
        # compiles ahead runs it on a compiled shape that covers it (s2s_jax/serving/shapes.py).
        # Consulted for batches without a forced prefix when skip_padding is off.
        self.choose_shape: Callable[[BatchShape], BatchShape] | None = None

    def _members(self, params, sources) -> tuple[tuple, tuple]:
        """(params, sources) as one entry per member."""
        if len(self.models) == 1:
            return (params,), (sources,)
        if len(params) != len(self.models) or len(sources) != len(self.models):
            raise ValueError(f"an ensemble of {len(self.models)} needs params and sources for each member")
        if len({len(s) for s in sources}) != 1:
            raise ValueError("ensemble members were given different numbers of sources")
        return tuple(params), tuple(sources)

    def search_fn(self, opts: SearchOptions) -> Callable:
        """jit-compiled (params, srcs, caps [B], rows, prefix, prefix_len) -> (tokens, scores), one per
        compiled key (SearchOptions.compiled_key). The `max_compiled` most recently used are kept, so
        a long-running caller (the server) holds a bounded number of compiled searches."""
        key = opts.compiled_key()
        with self._lock:  # threads (a server's warm-up) must not build two functions for one key
            fn = self._compiled.pop(key, None)
            if fn is None:
                fn = jax.jit(
                    functools.partial(
                        search_batch, self.models, self.weights, key, self.max_steps, compact=self.compact
                    ),
                    static_argnames="segments",
                )
            self._compiled[key] = fn
            while len(self._compiled) > self.max_compiled:
                self._compiled.pop(next(iter(self._compiled)))
        return fn

    def batches(
        self, sources: Sequence[Sequence[int]], batch_size: int, apart: Collection[int] = ()
    ) -> list[list[int]]:
        """Indices of the non-empty sources, sorted by length and cut into batches; the sources in
        `apart` are cut into batches of their own."""
        out = []
        for group in (set(range(len(sources))) - set(apart), set(apart)):
            order = sorted((i for i in sorted(group) if len(sources[i])), key=lambda i: len(sources[i]))
            out += [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        return out

    def padded_rows(self, rows: int) -> int:
        """A batch's `rows` rounded up to a multiple of the device count (one share per device)."""
        return parallel.round_up_rows(rows, self.mesh)

    def batch_shape(
        self, sources: tuple, chunk: list[int], batch_size: int, key: SearchOptions, shortlist: int = 0
    ) -> BatchShape:
        """The shape of the batch of `chunk` (indices into each member's `sources`) searched with `key`
        (and a vocabulary shortlist of padded size `shortlist`, 0: none)."""
        rows = self.padded_rows(batch_rows(len(chunk), batch_size))
        widths = tuple(source_width(max((len(member[i]) + 1 for i in chunk), default=1)) for member in sources)
        return BatchShape(key.compiled_key(), rows, widths, shortlist)

    def _placed_shortlist(self, ids: np.ndarray, mask: np.ndarray) -> tuple:
        """(ids [S] on every device, mask [rows, S] split by rows like the batch)."""
        mask = parallel.search_inputs(self.mesh, {"mask": mask})["mask"]
        return (ids if parallel.num_devices(self.mesh) == 1 else parallel.replicate(ids, self.mesh)), mask

    def _arrays(
        self,
        sources: tuple,
        chunk: list[int],
        batch_size: int,
        settings: list[SearchOptions],
        sample_keys: Sequence[tuple[int, int]],
        shape: BatchShape | None = None,
    ) -> dict:
        """srcs (one [rows, S_m] per member), caps [rows] and the per-row settings and sampling
        keys; filler rows are all PAD with cap 0. `shape`: the rows and widths to pad to
        (default: the batch's own)."""
        if shape is None:
            rows = self.padded_rows(batch_rows(len(chunk), batch_size))
            padded = [pad_batch(member, chunk, rows, eos=True) for member in sources]
        else:
            rows = shape.rows
            padded = [pad_batch(member, chunk, rows, eos=True, width=w) for member, w in zip(sources, shape.widths)]
        caps = length_caps(padded[0][1], self.decode_cfg, self.max_steps)
        caps[len(chunk) :] = 0
        filler = rows - len(chunk)
        per_row = row_settings(
            [settings[i] for i in chunk] + [SearchOptions(alpha=0.0)] * filler,
            [sample_keys[i] for i in chunk] + [(0, 0)] * filler,
        )
        return {"srcs": tuple(src for src, _ in padded), "caps": caps, "rows": per_row}

    def _prefix_arrays(self, prefixes: Sequence[Sequence[int]], chunk: list[int], caps: np.ndarray) -> dict:
        """prefix [rows, P] and prefix_len [rows]; shortens `caps` by each prefix (in place, at least 1)."""
        prefix, lengths = pad_batch(prefixes, chunk, caps.shape[0], eos=False)
        caps[: len(chunk)] = np.maximum(caps[: len(chunk)] - lengths[: len(chunk)], 1)
        return {"prefix": prefix, "prefix_len": lengths}

    def run(
        self,
        params,
        sources: Sequence[Sequence[int]] | tuple,
        opts: SearchOptions | Sequence[SearchOptions] = SearchOptions(),
        batch_size: int = 64,
        seed: int = 0,
        progress: Callable[[Iterable], Iterable] | None = None,
        prefixes: Sequence[Sequence[int]] | None = None,
        sample_keys: Sequence[tuple[int, int]] | None = None,
        constraints: Sequence[Sequence[Sequence[int]]] | None = None,
        shortlist: Shortlist | None = None,
    ) -> list[list[ScoredTokens]]:
        """The n-best candidates of every source (ids without EOS), in input order.

        `opts` is one setting for every source, or one per source; those must share one
        compiled key (they may differ in alpha, temperature, top_k and top_p, which are
        traced per row). Sampling draws source i from fold_in(key(seed), i), or from
        fold_in(key(s), j) with `sample_keys[i] = (s, j)`, whatever else shares its batch.
        With `prefixes` (target ids per source; empty = none) each output is its prefix
        followed by the search's continuation from the decoder state after the prefix;
        scores are the continuation's, and its length cap is the row's cap minus the
        prefix (at least 1). With `constraints` (per source a list of phrases, target ids; none =
        unconstrained) beam search finds outputs that contain every phrase of their source
        (s2s_jax/decoding/constraints.py; after the prefix, if any); the sources with phrases are
        batched apart from the others, which get exactly the unconstrained search. With a
        `shortlist` (s2s_jax/decoding/shortlist.py) each source's output uses only its own set of
        target ids (from member 0's source ids, its phrases and its prefix).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        params, sources = self._members(params, sources)
        n = len(sources[0])
        settings = [opts] * n if isinstance(opts, SearchOptions) else list(opts)
        if len(settings) != n:
            raise ValueError(f"{len(settings)} search settings for {n} sources")
        for one in set(settings):
            one.check()
        if len({one.batch_key() for one in settings}) > 1:
            raise ValueError("per-source search settings may differ only in alpha, temperature, top_k and top_p")
        if prefixes is not None and len(prefixes) != n:
            raise ValueError(f"{len(prefixes)} prefixes for {n} sources")
        if sample_keys is not None and len(sample_keys) != n:
            raise ValueError(f"{len(sample_keys)} sample keys for {n} sources")
        sample_keys = [(seed, i) for i in range(n)] if sample_keys is None else sample_keys
        first = settings[0] if settings else (opts if isinstance(opts, SearchOptions) else SearchOptions())
        # One search for all rows: a filter is switched on when any row uses it (the others pass through it).
        union = dataclasses.replace(
            first,
            top_k=max(s.top_k for s in settings) if settings else 0,
            top_p=min(s.top_p for s in settings) if settings else 1.0,
            no_repeat_ngram=max(s.no_repeat_ngram for s in settings) if settings else 0,
            token_scores=any(s.token_scores for s in settings),
        )
        constrained = constrained_sources(constraints, n, first)
        # An empty source's empty output contains none of its phrases.
        empty = [] if union.token_scores else None
        results = [
            [ScoredTokens([], 0.0, empty, constraints_met=i not in constrained) for _ in range(first.nbest)]
            for i in range(n)
        ]
        # Constrained sources search in batches of their own: the others keep the plain beam search.
        chunks = self.batches(sources[0], batch_size, apart=constrained)
        choose = self.choose_shape if prefixes is None and not self.skip_padding else None
        for chunk in progress(chunks) if progress else chunks:
            phrases = [constraints[i] for i in chunk] if chunk[0] in constrained else None
            lists = None if shortlist is None else _row_lists(shortlist, sources[0], chunk, prefixes, constraints)
            size = 0 if lists is None else shortlist.size(lists)
            own = self.batch_shape(sources, chunk, batch_size, union, size)
            shape = choose(own) if choose and not phrases else None
            search_fn = self.search_fn(union if shape is None else shape.key)
            arrays = self._arrays(sources, chunk, batch_size, settings, sample_keys, shape)
            if lists is not None:
                ids, mask = shortlist.batch(lists, arrays["caps"].shape[0], (shape or own).shortlist)
            if prefixes is not None:
                arrays.update(self._prefix_arrays(prefixes, chunk, arrays["caps"]))
            if phrases:
                arrays["constraints"] = dba.pack(phrases + [[]] * (arrays["caps"].shape[0] - len(chunk)))
            segments = tuple(time_segments.for_tokens(src) for src in arrays["srcs"]) if self.skip_padding else None
            placed = parallel.search_inputs(self.mesh, arrays)
            out = search_fn(
                params,
                placed["srcs"],
                placed["caps"],
                placed["rows"],
                placed.get("prefix"),
                placed.get("prefix_len"),
                segments=segments,
                # Only when given: a keyword the warm-up (compile_shape) does not pass would compile again.
                **({"constraints": placed["constraints"]} if phrases else {}),
                **({} if lists is None else {"shortlist": self._placed_shortlist(ids, mask)}),
            )
            out = [parallel.to_host(x) for x in out]
            for row, i in enumerate(chunk):
                forced = list(prefixes[i]) if prefixes is not None else []
                results[i] = _candidates(out, row, forced, first.nbest, bool(phrases))
        return results

    def compile_shape(self, params, shape: BatchShape) -> None:
        """Compiles the search of `shape` as `run` calls it (the same arguments' shapes, types and
        placement), running it once on an all-PAD batch whose rows end at once."""
        arrays = self._arrays(tuple([] for _ in shape.widths), [], shape.rows, [], [], shape)
        placed = parallel.search_inputs(self.mesh, arrays)
        params = (params,) if len(self.models) == 1 else tuple(params)
        fn = self.search_fn(shape.key)
        more = {}
        if shape.shortlist:
            ids = np.full((shape.shortlist,), PAD_ID, np.int32)
            more["shortlist"] = self._placed_shortlist(ids, np.zeros((shape.rows, shape.shortlist), bool))
        out = fn(params, placed["srcs"], placed["caps"], placed["rows"], None, None, segments=None, **more)
        jax.block_until_ready(out)

    def score(
        self, params, sources: Sequence[Sequence[int]] | tuple, targets: Sequence[Sequence[int]], batch_size: int = 64
    ) -> list[ScoredTokens]:
        """The model's log-probability of each given target (ids without EOS) after its source.

        The score sums log p over the target's tokens and the EOS after them, under the
        distribution the searches use (PAD and BOS excluded; an ensemble's averaged one), so
        scoring a beam search output with alpha=0 gives its beam score back; `token_scores`
        holds the terms, one per token and the EOS. An empty source is read as EOS alone.
        """
        params, sources = self._members(params, sources)
        if len(sources[0]) != len(targets):
            raise ValueError(f"{len(sources[0])} sources but {len(targets)} targets")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        order = sorted(range(len(targets)), key=lambda i: (len(sources[0][i]), len(targets[i])))
        results: list[ScoredTokens] = [ScoredTokens([], 0.0) for _ in targets]
        if self._score_fn is None:
            self._score_fn = jax.jit(functools.partial(_teacher_forced_log_prob, self.models, self.weights))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            rows = parallel.round_up_rows(batch_rows(len(chunk), batch_size), self.mesh)
            tgt, lengths = pad_batch(targets, chunk, rows, eos=True)
            srcs = tuple(pad_batch(member, chunk, rows, eos=True)[0] for member in sources)
            placed = parallel.search_inputs(self.mesh, {"srcs": srcs, "tgt": tgt, "lengths": lengths})
            logp, token_logp = (
                parallel.to_host(x) for x in self._score_fn(params, placed["srcs"], placed["tgt"], placed["lengths"])
            )
            for row, i in enumerate(chunk):
                per_token = token_logp[row, : len(targets[i]) + 1].tolist()
                results[i] = ScoredTokens(list(targets[i]), float(logp[row]), per_token)
        return results
