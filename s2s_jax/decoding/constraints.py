"""Lexically constrained beam search: dynamic beam allocation with fixed shapes.

A sentence's constraints are phrases (target ids) that its translation must contain, each as a
contiguous run of tokens somewhere in the output (overlaps allowed; a phrase given twice need
appear once). The batched beam search (search.py) runs them as Post & Vilar (2018) "Fast
Lexically Constrained Decoding with Dynamic Beam Allocation", vectorised as Hu et al. (2019):

- every live hypothesis carries, per phrase, how many of its tokens currently end the output
  (`progress`, int32 [K, P]; the phrase's length once it has appeared: met for good). A
  Knuth-Morris-Pratt table per phrase (`kmp_moves`, built on the host) gives the next progress
  for any token, so "a a b" is found in "a a a b";
- each step's candidates are the 2K best extensions, each hypothesis's best token, and each
  hypothesis's tokens that advance one of its unmet phrases (K x P of them); duplicates dropped;
- a candidate's bank is its matched constraint tokens (met phrases and its longest partial
  match, `matched_tokens`); the beam goes round the banks, highest
  first, taking each bank's best, then each bank's second best, ... (`allocation_order`);
- EOS is allowed only once every phrase is met; a hypothesis cut at its length cap finishes
  partial. Finished hypotheses rank by (matched constraint tokens, score), so a partial one is
  returned only when no complete one was found, and is flagged.

Shapes are static: P phrases of at most L tokens per sentence (both padded to powers of two,
so batches compile for few sizes), at most MAX_TOKENS constraint tokens per sentence. A padding
phrase has length 0 and is met from the start. With no phrases at all the search picks exactly
what the unconstrained beam search picks (tests/test_constraints.py checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from s2s_jax.decoding import repetition

NEG_INF = -jnp.inf
MAX_TOKENS = 32  # constraint tokens per sentence, all its phrases together: the static cap
MIN_SIZE = 2  # the smallest padded phrase count and phrase length


class Constraints(NamedTuple):
    """One sentence's phrases as arrays (a batch has a leading dim N on each)."""

    tokens: Any  # int32 [P, L]: phrase j's ids, PAD after its length
    lengths: Any  # int32 [P]: phrase j's length; 0 for a padding phrase
    moves: Any  # int32 [P, L, L]: progress after token tokens[j, m] when phrase j's progress is s < length


class ConstrainedBeam(NamedTuple):
    """search.py's beam state of one sentence and what the constraints add to it."""

    beam: Any  # search.py's beam state (live_* and fin_* fields)
    progress: jax.Array  # int32 [K, P]: each live hypothesis's matched tokens of each phrase
    fin_met: jax.Array  # int32 [K]: each finished hypothesis's matched constraint tokens; -1 for an empty slot


# ----------------------------------------------------------------------------
# Host side: phrases -> arrays
# ----------------------------------------------------------------------------


def phrase_set(phrases: Sequence[Sequence[int]]) -> list[list[int]]:
    """The distinct non-empty phrases, in their first order."""
    return [list(p) for p in dict.fromkeys(tuple(p) for p in phrases if len(p))]


def token_count(phrases: Sequence[Sequence[int]]) -> int:
    """Constraint tokens of one sentence (its distinct phrases), what MAX_TOKENS caps."""
    return sum(len(p) for p in phrase_set(phrases))


def kmp_moves(phrase: Sequence[int]) -> np.ndarray:
    """int32 [n, n]: from progress s (< n), reading the token phrase[m] gives the longest prefix of
    the phrase that the output then ends with (Knuth-Morris-Pratt); any other token gives 0."""
    n = len(phrase)
    border = [0] * n  # border[i]: the longest proper prefix of phrase[:i + 1] that is also its suffix
    for i in range(1, n):
        k = border[i - 1]
        while k and phrase[i] != phrase[k]:
            k = border[k - 1]
        border[i] = k + (phrase[i] == phrase[k])
    moves = np.zeros((n, n), np.int32)
    for s in range(n):
        for m in range(n):
            t = s
            while phrase[t] != phrase[m] and t:
                t = border[t - 1]
            moves[s, m] = t + 1 if phrase[t] == phrase[m] else 0
    return moves


def padded_size(n: int) -> int:
    """The smallest power of two >= n, at least MIN_SIZE."""
    return max(MIN_SIZE, 1 << max(n - 1, 0).bit_length())


def pack(rows: Sequence[Sequence[Sequence[int]]]) -> Constraints:
    """The phrases of each sentence (a list of id lists; empty: none) as numpy Constraints [N, ...],
    padded to P phrases of L tokens (`padded_size`). Phrases are deduplicated; a sentence over
    MAX_TOKENS is refused."""
    rows = [phrase_set(r) for r in rows]
    for i, r in enumerate(rows):
        if sum(map(len, r)) > MAX_TOKENS:
            raise ValueError(f"sentence {i}: {sum(map(len, r))} constraint tokens, at most {MAX_TOKENS}")
    p = padded_size(max((len(r) for r in rows), default=0))
    width = padded_size(max((len(ph) for r in rows for ph in r), default=0))
    tokens = np.zeros((len(rows), p, width), np.int32)
    lengths = np.zeros((len(rows), p), np.int32)
    moves = np.zeros((len(rows), p, width, width), np.int32)
    for i, r in enumerate(rows):
        for j, phrase in enumerate(r):
            n = len(phrase)
            tokens[i, j, :n], lengths[i, j], moves[i, j, :n, :n] = phrase, n, kmp_moves(phrase)
    return Constraints(tokens, lengths, moves)


# ----------------------------------------------------------------------------
# Device side: one sentence's search (search.py vmaps it over the batch)
# ----------------------------------------------------------------------------


def advance(cons: Constraints, progress: jax.Array, token: jax.Array) -> jax.Array:
    """Progress [..., P] after appending `token` [...]; met phrases stay met."""
    width = cons.tokens.shape[-1]
    match = (cons.tokens == token[..., None, None]) & (jnp.arange(width) < cons.lengths[:, None])  # [..., P, L]
    first = jnp.argmax(match, axis=-1)  # the token's position in each phrase (any one: they share the move)
    phrase = jnp.arange(cons.lengths.shape[0])
    moved = cons.moves[phrase, jnp.minimum(progress, width - 1), first]
    met = progress >= cons.lengths
    return jnp.where(met, cons.lengths, jnp.where(jnp.any(match, axis=-1), moved, 0))


def matched_tokens(cons: Constraints, progress: jax.Array) -> jax.Array:
    """A hypothesis's bank: the tokens of its met phrases and of its longest partial match. (Summing
    all partial matches would reward a token that starts several phrases, and then stepping along
    one of them would gain nothing.)"""
    met = progress >= cons.lengths
    return jnp.sum(jnp.where(met, progress, 0), axis=-1) + jnp.max(jnp.where(met, 0, progress), axis=-1)


def all_met(cons: Constraints, progress: jax.Array) -> jax.Array:
    return jnp.all(progress >= cons.lengths, axis=-1)


def candidates(total: jax.Array, progress: jax.Array, cons: Constraints, k: int) -> tuple[jax.Array, ...]:
    """(beam, token, logp) of each step candidate [M = 3K + K * P] from the extensions' summed
    log-probabilities `total` [K, V]: the 2K best, each beam's best, and each beam's tokens that
    advance an unmet phrase. A repeat of an earlier candidate, or an advancing token of a met
    phrase, gets -inf."""
    beams, vocab = total.shape
    flat_total = total.reshape(-1)
    _, top = lax.top_k(flat_total, 2 * k)
    best = jnp.arange(beams) * vocab + jnp.argmax(total, axis=-1)
    width = cons.tokens.shape[-1]
    following = cons.tokens[jnp.arange(cons.lengths.shape[0]), jnp.minimum(progress, width - 1)]  # [K, P]
    advancing = (jnp.arange(beams)[:, None] * vocab + following).reshape(-1)
    flat = jnp.concatenate([top, best, advancing])
    usable = jnp.concatenate([jnp.ones(2 * k + beams, bool), (progress < cons.lengths).reshape(-1)])
    key = jnp.where(usable, flat, -1 - jnp.arange(flat.shape[0]))  # unusable ones never repeat anything
    by_key = jnp.argsort(key, stable=True)
    sorted_key = key[by_key]
    repeat = (
        jnp.zeros(flat.shape, bool)
        .at[by_key]
        .set(jnp.concatenate([jnp.zeros(1, bool), sorted_key[1:] == sorted_key[:-1]]))
    )
    logp = jnp.where(usable & ~repeat, flat_total[flat], NEG_INF)
    return flat // vocab, flat % vocab, logp


def allocation_order(bank: jax.Array, logp: jax.Array) -> jax.Array:
    """Candidate indices in the order the beam takes them: each bank's best (highest bank first),
    then each bank's second best, ...; -inf candidates last, by index. With one bank this is
    best score first, ties by index: what lax.top_k gives."""
    m = logp.shape[0]
    index = jnp.arange(m)
    usable = logp > NEG_INF
    bank = jnp.where(usable, bank, 0)
    _, _, by_bank = lax.sort((bank, -logp, index), num_keys=3)
    sorted_bank = bank[by_bank]
    starts = jnp.where(jnp.concatenate([jnp.ones(1, bool), sorted_bank[1:] != sorted_bank[:-1]]), index, 0)
    rank = jnp.zeros(m, jnp.int32).at[by_bank].set(index - lax.cummax(starts))
    rank = jnp.where(usable, rank, m)
    _, _, order = lax.sort((rank, -bank, index), num_keys=3)
    return order


def init(beam: Any, cons: Constraints, k: int) -> ConstrainedBeam:
    """The constrained state of one sentence before its first step, around search.py's beam state."""
    return ConstrainedBeam(beam, jnp.zeros((k, cons.lengths.shape[0]), jnp.int32), jnp.full((k,), -1, jnp.int32))


def floor(s: ConstrainedBeam, cons: Constraints) -> jax.Array:
    """The score a live hypothesis must beat to matter: the worst finished one's, or -inf while
    a finished slot is empty or partial (a complete hypothesis outranks those whatever its score)."""
    complete = s.fin_met[-1] >= jnp.sum(cons.lengths)
    return jnp.where(complete, s.beam.fin_scores[-1], NEG_INF)


def beam_step(
    s: ConstrainedBeam,
    logp: jax.Array,
    new_state: Any,
    cap: jax.Array,
    penalty: jax.Array,
    cons: Constraints,
    *,
    k: int,
    eos_id: int,
) -> ConstrainedBeam:
    """One step of one sentence: the model's log-probabilities `logp` [K, V] (and decoder state
    after it) -> the new live and finished hypotheses. `penalty` is this step's length penalty.
    As in the unconstrained step, an ended candidate (EOS, or the cap) joins the finished ones
    only if it is among the first K the beam takes."""
    beam = s.beam
    logp = logp.at[:, eos_id].set(jnp.where(all_met(cons, s.progress), logp[:, eos_id], NEG_INF))
    cand_beam, cand_token, cand_logp = candidates(beam.live_logp[:, None] + logp, s.progress, cons, k)
    cand_progress = advance(cons, s.progress[cand_beam], cand_token)  # [M, P]
    bank = matched_tokens(cons, cand_progress)
    order = allocation_order(bank, cand_logp)
    length = beam.step + 1
    ended = (cand_token == eos_id) | (length >= cap)

    def extended(idx: jax.Array) -> jax.Array:
        return beam.live_tokens[cand_beam[idx]].at[:, beam.step].set(cand_token[idx])

    # Live: the first K in the beam's order that go on (the others after them, as -inf slots).
    going = (~ended & (cand_logp > NEG_INF))[order]
    live = order[jnp.argsort(~going, stable=True)[:k]]
    # Finished: the ended ones among the first K, merged into the K kept by (matched tokens, score).
    new = order[:k]
    new_scores = jnp.where(ended[new], cand_logp[new] / penalty, NEG_INF)
    new_met = jnp.where(new_scores > NEG_INF, bank[new], -1)
    scores = jnp.concatenate([beam.fin_scores, new_scores])
    met = jnp.concatenate([s.fin_met, new_met])
    _, _, keep = lax.sort((-met, -scores, jnp.arange(2 * k)), num_keys=3)
    keep = keep[:k]
    fin_lengths = jnp.concatenate([beam.fin_lengths, jnp.full((k,), length, jnp.int32)])
    carried = {}  # the beam's optional fields, reordered with their hypotheses
    if beam.live_token_logp is not None:
        token_logp = logp[cand_beam, cand_token]

        def with_logp(idx: jax.Array) -> jax.Array:
            return beam.live_token_logp[cand_beam[idx]].at[:, beam.step].set(token_logp[idx])

        carried["live_token_logp"] = with_logp(live)
        carried["fin_token_logp"] = jnp.concatenate([beam.fin_token_logp, with_logp(new)])[keep]
    if beam.no_repeat is not None:
        carried["no_repeat"] = repetition.extend(beam.no_repeat.take(cand_beam[live]), extended(live), cand_token[live])
    beam = beam._replace(
        **carried,
        step=length,
        live_tokens=extended(live),
        live_last=cand_token[live],
        live_logp=jnp.where(ended, NEG_INF, cand_logp)[live],
        live_state=jax.tree.map(lambda x: x[cand_beam[live]], new_state),
        fin_tokens=jnp.concatenate([beam.fin_tokens, extended(new)])[keep],
        fin_scores=scores[keep],
        fin_lengths=fin_lengths[keep],
    )
    return ConstrainedBeam(beam, cand_progress[live], met[keep])


def complete(s: ConstrainedBeam, cons: Constraints) -> jax.Array:
    """bool [K]: whether each finished hypothesis contains every phrase."""
    return s.fin_met >= jnp.sum(cons.lengths)
