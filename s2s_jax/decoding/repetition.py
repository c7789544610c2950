"""Repetition control: no n-gram of size N twice in a hypothesis (`--no_repeat_ngram N`).

Before each step the search bans every token that would complete an n-gram the hypothesis
already contains: token w is banned after y_0 .. y_{t-1} when some earlier position j has
y_{j-N+1} .. y_{j-1} == y_{t-N+1} .. y_{t-1} and y_j == w (fairseq's `--no-repeat-ngram-size`).

The check is incremental and elementwise, with fixed shapes: each hypothesis carries `run`
[T], run[j] = how many tokens before position j equal the same number of tokens at the end of
the hypothesis (their common suffix). Then y_j is banned exactly when j < t and
run[j] >= N - 1, and appending y_t gives run'[j] = run[j - 1] + 1 where y_{j-1} == y_t, else 0.
No loop over N: one compare, one shift and one scatter into the vocabulary per step, and N is
a traced per-row value (0 = off), so rows with different N share one compiled program.

EOS is never banned, so a hypothesis can always end. The n-grams are those of the searched
tokens: a forced prefix is not among them. Banned tokens get -inf before the search picks;
the scores the search reports stay the model's log-probabilities of the chosen tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class RepeatState(NamedTuple):
    """What a search carries for the check: the n-gram size (a scalar, or [R]) and `run` [R, T]."""

    n: jax.Array
    run: jax.Array

    def take(self, rows: jax.Array) -> RepeatState:
        """The hypotheses `rows` (beam search reorders them), under one shared n-gram size."""
        return RepeatState(self.n, self.run[rows])


def start(n: jax.Array | int, rows: int, width: int) -> RepeatState:
    """The state before the first token: `n` a scalar or int [rows] (0 = off), buffers of `width`."""
    return RepeatState(jnp.asarray(n, jnp.int32), jnp.zeros((rows, width), jnp.int32))


def banned_tokens(tokens: jax.Array, step: jax.Array, state: RepeatState, vocab: int) -> jax.Array:
    """bool [R, vocab]: the tokens that would complete an n-gram already among the first `step`
    of `tokens` [R, T] (`step` a scalar or [R])."""
    rows, width = tokens.shape
    n = jnp.broadcast_to(state.n, (rows,))[:, None]
    step = jnp.broadcast_to(jnp.asarray(step, jnp.int32), (rows,))[:, None]
    match = (n > 0) & (jnp.arange(width)[None, :] < step) & (state.run >= n - 1)
    # A scatter of the repeated tokens; positions that do not match go out of range and are dropped.
    target = jnp.where(match, tokens, vocab)
    return jnp.zeros((rows, vocab), bool).at[jnp.arange(rows)[:, None], target].set(True, mode="drop")


def block(scores: jax.Array, tokens: jax.Array, step: jax.Array, state: RepeatState, eos_id: int) -> jax.Array:
    """`scores` [R, V] with the tokens `banned_tokens` names (EOS excepted) set to -inf."""
    banned = banned_tokens(tokens, step, state, scores.shape[-1]) & (jnp.arange(scores.shape[-1]) != eos_id)
    return jnp.where(banned, -jnp.inf, scores)


def extend(state: RepeatState, tokens: jax.Array, new: jax.Array) -> RepeatState:
    """The state after appending `new` [R] to hypotheses whose tokens so far are in `tokens` [R, T]
    (the new token may already be written there: only positions before it are read)."""
    before = jnp.roll(tokens, 1, axis=1)  # column j holds y_{j-1}
    run = jnp.where(before == new[:, None], jnp.roll(state.run, 1, axis=1) + 1, 0)
    return RepeatState(state.n, run.at[:, 0].set(0))


def repeated_ngrams(tokens: list[int], n: int) -> list[tuple[int, ...]]:
    """The n-grams that occur more than once in `tokens` (a check for tests and benchmarks)."""
    seen: dict[tuple[int, ...], int] = {}
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i : i + n])
        seen[gram] = seen.get(gram, 0) + 1
    return [gram for gram, count in seen.items() if count > 1]
