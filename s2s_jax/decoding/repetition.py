"""Repetition control: no n-gram of size N twice in a hypothesis (`--no_repeat_ngram N`).

Before each step the search bans every token that would complete an n-gram the hypothesis
already contains: token w is banned after y_0 .. y_{t-1} when some earlier position j has
y_{j-N+1} .. y_{j-1} == y_{t-N+1} .. y_{t-1} and y_j == w (fairseq's `--no-repeat-ngram-size`).
The check runs inside the jitted search on the fixed-shape token buffer: N - 1 comparisons of
the buffer with the current suffix, one [rows, T] array each, then one scatter into the
vocabulary. N is a traced per-row value (0 = off), so rows with different N share a program.

EOS is never banned, so a hypothesis can always end. The n-grams are those of the searched
tokens: a forced prefix is not among them. Banned tokens get -inf before the search picks;
the scores the search reports stay the model's log-probabilities of the chosen tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def banned_tokens(tokens: jax.Array, step: jax.Array, n: jax.Array, vocab: int) -> jax.Array:
    """bool [R, vocab]: the tokens that would complete an n-gram of size n[r] already in row r.

    `tokens` int [R, T] holds each row's first `step` tokens (the rest is ignored); `step` is a
    scalar or int [R]; `n` int [R] or a scalar, 0 (or 1 > step) bans nothing for that row.
    """
    rows, width = tokens.shape
    step = jnp.broadcast_to(jnp.asarray(step, jnp.int32), (rows,))[:, None]
    n = jnp.broadcast_to(jnp.asarray(n, jnp.int32), (rows,))[:, None]
    j = jnp.arange(width, dtype=jnp.int32)[None, :]  # the position of the token that would repeat
    # The n-gram ending at j lies inside the tokens, and so does the one the next token would end.
    candidate = (n > 0) & (j >= n - 1) & (j < step) & (step >= n - 1)

    def compare(d: jax.Array, match: jax.Array) -> jax.Array:
        """Token d + 1 places before j against token d + 1 places before the next one (d < n - 1)."""
        before_j = jnp.take_along_axis(tokens, jnp.clip(j - 1 - d, 0, width - 1), axis=1)
        before_next = jnp.take_along_axis(tokens, jnp.clip(step - 1 - d, 0, width - 1), axis=1)
        return match & ((d >= n - 1) | (before_j == before_next))

    # Rows with n > step + 1 have no candidate: the loop runs only as far as some row needs.
    last = jnp.minimum(jnp.max(n), jnp.max(step) + 1) - 1
    match = lax.fori_loop(0, last, compare, candidate)
    # A scatter of the repeated tokens; positions that do not match go out of range and are dropped.
    target = jnp.where(match, tokens, vocab)
    return jnp.zeros((rows, vocab), bool).at[jnp.arange(rows)[:, None], target].set(True, mode="drop")


def block_repeats(scores: jax.Array, tokens: jax.Array, step: jax.Array, n: jax.Array, eos_id: int) -> jax.Array:
    """`scores` [R, V] with the tokens `banned_tokens` names (EOS excepted) set to -inf."""
    banned = banned_tokens(tokens, step, n, scores.shape[-1])
    banned = banned & (jnp.arange(scores.shape[-1]) != eos_id)
    return jnp.where(banned, -jnp.inf, scores)


def repeated_ngrams(tokens: list[int], n: int) -> list[tuple[int, ...]]:
    """The n-grams that occur more than once in `tokens` (a check for tests and benchmarks)."""
    seen: dict[tuple[int, ...], int] = {}
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i : i + n])
        seen[gram] = seen.get(gram, 0) + 1
    return [gram for gram, count in seen.items() if count > 1]
