"""Search over a step function: greedy, beam, sampling, teacher-forced scoring.

Nothing here knows about LSTMs. The model supplies

    step_fn(memory, state, tokens) -> (logits [N, V], new_state)

where `memory` (read-only: encoder outputs, source mask, ...) and `state`
(decoder carries, ...) are pytrees with leading dim N, `tokens` is the int32
[N] previous output, and rows are independent. Every search below runs its
step loop on device in a `lax.while_loop` that stops as soon as every sequence
has finished, so all of them are jittable with `step_fn` and the sizes
(`max_steps`, `beam_size`, `nbest`, `top_k`, ...) static, e.g.

    decode = jax.jit(functools.partial(greedy_search, model_step, max_steps=64))

Output conventions: tokens are int32 [.., max_steps], padded with `pad_id`
after a sequence ends; a sequence ends at EOS (included in the tokens and
counted in its length) or when it reaches its length cap.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from s2s_jax.decoding import constraints as dba
from s2s_jax.decoding import repetition
from s2s_jax.kernels import top_log_probs

# Literal defaults (rather than importing the tokenizer) keep search model-agnostic.
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
NEG_INF = -jnp.inf
# Greedy and beam search compact their live decoder rows down to about this many. Each stage is
# one more copy of the step in the compiled program: below ~64 rows a stage saves little time
# (a step's cost is mostly reading the weights) and costs seconds of compile (benchmarks/README.md).
COMPACT_MIN_ROWS = 64

StepFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, Any]]


# ----------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------


def _batch_size(memory: Any, state: Any) -> int:
    leaves = jax.tree.leaves(memory) + jax.tree.leaves(state)
    if not leaves:
        raise ValueError("memory and state are both empty: cannot infer the batch size")
    return jnp.shape(leaves[0])[0]


def _length_caps(max_lengths: jax.Array | int | None, n: int, max_steps: int) -> jax.Array:
    """Per-row caps as int32 [N], never above `max_steps` (the buffer size)."""
    if max_lengths is None:
        return jnp.full((n,), max_steps, jnp.int32)
    caps = jnp.broadcast_to(jnp.asarray(max_lengths, jnp.int32), (n,))
    return jnp.minimum(caps, max_steps)


def _forbid_eos(scores: jax.Array, step: jax.Array, min_length: int, eos_id: int) -> jax.Array:
    """Sets EOS to -inf while fewer than `min_length` tokens have been produced.

    Applied after log-softmax in beam search, so allowed tokens keep their true
    model log-probabilities (and `sequence_log_prob` reproduces beam scores).
    """
    is_eos = jnp.arange(scores.shape[-1]) == eos_id
    return jnp.where(is_eos & (step < min_length), NEG_INF, scores)


def length_penalty(length: jax.Array | int, alpha: float | jax.Array) -> jax.Array:
    """GNMT length penalty ((5 + |Y|) / 6) ** alpha; alpha=0 gives 1 (no normalisation)."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


# ----------------------------------------------------------------------------
# Greedy search and sampling: one token per row per step
# ----------------------------------------------------------------------------


class _LoopState(NamedTuple):
    step: jax.Array  # scalar int32: tokens produced so far
    tokens: jax.Array  # int32 [N, max_steps]
    last: jax.Array  # int32 [N]: the token fed to the next step
    lengths: jax.Array  # int32 [N]
    finished: jax.Array  # bool [N]
    state: Any
    log_prob: jax.Array  # float32 [N]: the chosen tokens' summed log-probabilities
    token_logp: Any = None  # float32 [N, max_steps]: each chosen token's log-probability, when asked
    no_repeat: Any = None  # repetition.RepeatState of each row (its n-gram size [N], 0 = any), when asked


def _decode_loop(
    step_fn: StepFn,
    memory: Any,
    state: Any,
    choose: Callable[[jax.Array, jax.Array], jax.Array],
    *,
    max_steps: int,
    max_lengths: jax.Array | None,
    min_length: int,
    bos_id: jax.Array | int,
    eos_id: int,
    pad_id: int,
    return_log_prob: bool = False,
    compact: bool = False,
    no_repeat_ngram: jax.Array | int | None = None,
    return_token_log_probs: bool = False,
) -> tuple[jax.Array, ...]:
    """Left-to-right decoding where `choose(logits [N, V], step) -> tokens [N]` picks each token.

    Returns (tokens, lengths), and with `return_log_prob` also each row's summed model
    log-probability of its tokens (EOS included), accumulated as it decodes: what
    `sequence_log_prob` gives for the output, without a second pass over max_steps; with
    `return_token_log_probs` last each token's own log-probability [N, max_steps] (0 after
    the end), what `token_log_probs` gives. `no_repeat_ngram` (int [N] or a scalar, 0 = off):
    `choose` never sees tokens that would repeat an n-gram of that size (repetition.py).
    With `compact` (only for a `choose` that treats rows alike: argmax) finished rows
    stop being computed once half the rows have finished, and so on by halves.
    """
    n = _batch_size(memory, state)
    caps = _length_caps(max_lengths, n, max_steps)
    init = _LoopState(
        step=jnp.int32(0),
        tokens=jnp.full((n, max_steps), pad_id, jnp.int32),
        last=jnp.full((n,), bos_id, jnp.int32),
        lengths=jnp.zeros((n,), jnp.int32),
        finished=caps <= 0,
        state=state,
        log_prob=jnp.zeros((n,), jnp.float32),
        token_logp=jnp.zeros((n, max_steps), jnp.float32) if return_token_log_probs else None,
        no_repeat=None
        if no_repeat_ngram is None
        else repetition.start(jnp.broadcast_to(jnp.asarray(no_repeat_ngram, jnp.int32), (n,)), n, max_steps),
    )

    def cond(s: _LoopState) -> jax.Array:
        return (s.step < max_steps) & ~jnp.all(s.finished)

    def body_for(memory: Any, caps: jax.Array) -> Callable[[_LoopState], _LoopState]:
        """The loop body for these rows' memory and length caps."""

        def body(s: _LoopState) -> _LoopState:
            logits, new_state = step_fn(memory, s.state, s.last)
            raw = logits.astype(jnp.float32)
            logits = _forbid_eos(raw, s.step, min_length, eos_id)
            if s.no_repeat is not None:
                logits = repetition.block(logits, s.tokens, s.step, s.no_repeat, eos_id)
            token = jnp.where(s.finished, pad_id, choose(logits, s.step).astype(jnp.int32))
            log_prob, token_logps = s.log_prob, s.token_logp
            if return_log_prob or token_logps is not None:
                token_logp = jnp.take_along_axis(jax.nn.log_softmax(raw, axis=-1), token[:, None], axis=-1)[:, 0]
                token_logp = jnp.where(s.finished, 0.0, token_logp)
                log_prob = log_prob + token_logp if return_log_prob else log_prob
                if token_logps is not None:
                    token_logps = token_logps.at[:, s.step].set(token_logp)
            # Finished rows keep stepping (on PAD) but their outputs are discarded.
            return _LoopState(
                step=s.step + 1,
                tokens=s.tokens.at[:, s.step].set(token),
                last=token,
                lengths=jnp.where(s.finished, s.lengths, s.step + 1),
                finished=s.finished | (token == eos_id) | (s.step + 1 >= caps),
                state=new_state,
                log_prob=log_prob,
                token_logp=token_logps,
                no_repeat=None if s.no_repeat is None else repetition.extend(s.no_repeat, s.tokens, token),
            )

        return body

    if not compact or n <= COMPACT_MIN_ROWS:
        out = lax.while_loop(cond, body_for(memory, caps), init)
        tokens, lengths, log_prob, token_logp = out.tokens, out.lengths, out.log_prob, out.token_logp
    else:
        tokens, lengths, log_prob, token_logp = _compacting_while_loop(cond, body_for, init, memory, caps)
    return (
        (tokens, lengths) + ((log_prob,) if return_log_prob else ()) + ((token_logp,) if return_token_log_probs else ())
    )


def _compacting_while_loop(
    cond: Callable[[_LoopState], jax.Array],
    body_for: Callable[[Any, jax.Array], Callable[[_LoopState], _LoopState]],
    init: _LoopState,
    memory: Any,
    caps: jax.Array,
) -> tuple[Any, ...]:
    """`lax.while_loop(cond, body_for(memory, caps), init)`'s (tokens, lengths, log_prob, token_logp),
    computed in stages: each stage runs until at most half its rows are still decoding, then the live
    rows move to the front and the next stage continues with half as many rows (static shapes, one
    while loop each); the rows' results are written back to their places after every stage."""
    results = lambda s: (s.tokens, s.lengths, s.log_prob, s.token_logp)  # noqa: E731
    out = results(init)
    where = jnp.arange(init.tokens.shape[0])  # the original row of each stage row
    s, rows = init, init.tokens.shape[0]
    while True:
        next_rows = max((rows + 1) // 2, COMPACT_MIN_ROWS) if rows > COMPACT_MIN_ROWS else 0

        def stage_cond(st: _LoopState, next_rows=next_rows) -> jax.Array:
            return cond(st) & (jnp.sum(~st.finished) > next_rows)

        # Each stage is traced with its own rows' memory and caps.
        s = lax.while_loop(stage_cond, body_for(memory, caps), s)
        out = jax.tree.map(lambda full, part, where=where: full.at[where].set(part), out, results(s))
        if next_rows == 0:
            break
        keep = jnp.argsort(s.finished, stable=True)[:next_rows]  # live rows first
        take = lambda tree, keep=keep: jax.tree.map(lambda a: a[keep], tree)  # noqa: E731
        memory, caps, where = take(memory), caps[keep], where[keep]
        s = s._replace(**{name: take(getattr(s, name)) for name in s._fields if name != "step"})
        rows = next_rows
    return out


def greedy_search(
    step_fn: StepFn,
    memory: Any,
    state: Any,
    *,
    max_steps: int,
    max_lengths: jax.Array | None = None,
    min_length: int = 0,
    bos_id: jax.Array | int = BOS_ID,
    eos_id: int = EOS_ID,
    pad_id: int = PAD_ID,
    return_log_prob: bool = False,
    compact: bool = True,
    no_repeat_ngram: jax.Array | int | None = None,
    return_token_log_probs: bool = False,
) -> tuple[jax.Array, ...]:
    """Argmax decoding of a batch -> (tokens int32 [N, max_steps], lengths int32 [N]), and with
    `return_log_prob` the outputs' log-probabilities [N], with `return_token_log_probs` last
    each token's [N, max_steps]; `no_repeat_ngram` as `_decode_loop` takes it.

    `compact`: once half the rows have finished, the others continue as a batch of half the
    size (and so on, down to COMPACT_MIN_ROWS rows), so finished sentences stop costing steps.

    `max_lengths` (int32 [N], clipped to `max_steps`) caps each row separately,
    e.g. a * src_len + b; `min_length` forbids EOS among the first `min_length`
    tokens (min_length >= max_steps forces exactly max_steps steps, for timing).
    """
    return _decode_loop(
        step_fn,
        memory,
        state,
        lambda logits, step: jnp.argmax(logits, axis=-1),
        max_steps=max_steps,
        max_lengths=max_lengths,
        min_length=min_length,
        bos_id=bos_id,
        eos_id=eos_id,
        pad_id=pad_id,
        return_log_prob=return_log_prob,
        compact=compact,
        no_repeat_ngram=no_repeat_ngram,
        return_token_log_probs=return_token_log_probs,
    )


def filter_logits(logits: jax.Array, *, top_k: int | jax.Array = 0, top_p: float | jax.Array = 1.0) -> jax.Array:
    """Sets logits outside the top-k / nucleus (top-p) set to -inf; 0 and 1.0 disable them.

    The nucleus is the smallest set of most likely tokens whose probability
    reaches `top_p`; the most likely token is always kept, so a tiny `top_p`
    is greedy. Ties at a threshold are kept. Python numbers select the filters
    when tracing; arrays (one value per row, [N], or a scalar) are traced values,
    so a server can mix settings in one batch without compiling per value.
    """
    if isinstance(top_k, int) and isinstance(top_p, (int, float)):
        if top_k > 0:
            kth = lax.top_k(logits, min(top_k, logits.shape[-1]))[0][..., -1:]
            logits = jnp.where(logits < kth, NEG_INF, logits)
        if top_p < 1.0:
            logits = _nucleus(logits, -jnp.sort(-logits, axis=-1), top_p)
        return logits
    rows = logits.shape[:-1]
    k = jnp.broadcast_to(jnp.asarray(top_k, jnp.int32), rows)[..., None]
    p = jnp.broadcast_to(jnp.asarray(top_p, jnp.float32), rows)[..., None]
    sorted_logits = -jnp.sort(-logits, axis=-1)  # descending
    kth = jnp.take_along_axis(sorted_logits, jnp.clip(k - 1, 0, logits.shape[-1] - 1), axis=-1)
    outside_k = (k > 0) & (logits < kth)
    logits = jnp.where(outside_k, NEG_INF, logits)
    # The top-k filtered logits, still sorted: what the static path sorts for the nucleus.
    sorted_logits = jnp.where((k > 0) & (sorted_logits < kth), NEG_INF, sorted_logits)
    return jnp.where(p < 1.0, _nucleus(logits, sorted_logits, p), logits)


def _nucleus(logits: jax.Array, sorted_logits: jax.Array, top_p: float | jax.Array) -> jax.Array:
    """`logits` outside the nucleus of mass `top_p` set to -inf, given them sorted in descending order."""
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    kept = jnp.where(mass_before < top_p, sorted_logits, jnp.inf)
    threshold = jnp.min(kept, axis=-1, keepdims=True)
    return jnp.where(logits < threshold, NEG_INF, logits)


def sample(
    step_fn: StepFn,
    memory: Any,
    state: Any,
    rng: jax.Array,
    *,
    max_steps: int,
    max_lengths: jax.Array | None = None,
    temperature: float | jax.Array = 1.0,
    top_k: int | jax.Array = 0,
    top_p: float | jax.Array = 1.0,
    min_length: int = 0,
    bos_id: jax.Array | int = BOS_ID,
    eos_id: int = EOS_ID,
    pad_id: int = PAD_ID,
    return_log_prob: bool = False,
    no_repeat_ngram: jax.Array | int | None = None,
    return_token_log_probs: bool = False,
) -> tuple[jax.Array, ...]:
    """Ancestral sampling -> (tokens [N, max_steps], lengths [N]); same conventions as greedy
    (with `return_log_prob` also the samples' log-probabilities under the untempered model, and
    with `return_token_log_probs` each token's).

    Logits are divided by `temperature` (> 0; use `greedy_search` for the
    temperature-0 limit), then filtered by `filter_logits`; `temperature`,
    `top_k` and `top_p` may be per-row arrays [N]. `rng` is one key for the batch
    (step t draws with `fold_in(rng, t)`) or one key per row, [N]: then row i
    draws with `fold_in(rng[i], t)`, so its sample does not depend on which rows
    share its batch. The same keys reproduce the same output.
    """
    if isinstance(temperature, (int, float)) and temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use greedy_search for 0), got {temperature}")
    if not isinstance(temperature, (int, float)):
        temperature = jnp.asarray(temperature, jnp.float32)[..., None]
    per_row = jnp.ndim(rng) == 1

    def choose(logits: jax.Array, step: jax.Array) -> jax.Array:
        logits = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
        if per_row:
            draw = lambda key, row: jax.random.categorical(jax.random.fold_in(key, step), row)  # noqa: E731
            return jax.vmap(draw)(rng, logits)
        return jax.random.categorical(jax.random.fold_in(rng, step), logits, axis=-1)

    return _decode_loop(
        step_fn,
        memory,
        state,
        choose,
        max_steps=max_steps,
        max_lengths=max_lengths,
        min_length=min_length,
        bos_id=bos_id,
        eos_id=eos_id,
        pad_id=pad_id,
        return_log_prob=return_log_prob,
        no_repeat_ngram=no_repeat_ngram,
        return_token_log_probs=return_token_log_probs,
    )


# ----------------------------------------------------------------------------
# Beam search
# ----------------------------------------------------------------------------


class _BeamState(NamedTuple):
    step: jax.Array  # scalar int32: tokens produced so far
    live_tokens: jax.Array  # int32 [K, max_steps]
    live_last: jax.Array  # int32 [K]: the token fed to the next step
    live_logp: jax.Array  # float32 [K]: sum of log-probs; -inf marks an empty slot
    live_state: Any  # decoder state, leading dim K
    fin_tokens: jax.Array  # int32 [K, max_steps], best first
    fin_scores: jax.Array  # float32 [K]: length-normalised; -inf marks an empty slot
    fin_lengths: jax.Array  # int32 [K]
    # Each token's log-probability, reordered with its hypothesis (float32 [K, max_steps]), when asked.
    live_token_logp: Any = None
    fin_token_logp: Any = None
    no_repeat: Any = None  # repetition.RepeatState of the K hypotheses (one n-gram size, 0 = any), when asked


def _beam_init(
    state: Any,
    *,
    k: int,
    max_steps: int,
    bos_id: jax.Array | int,
    pad_id: int,
    no_repeat: jax.Array | None = None,
    token_log_probs: bool = False,
) -> _BeamState:
    """One sentence's search state before its first step (`state` without a batch dim)."""
    empty_tokens = jnp.full((k, max_steps), pad_id, jnp.int32)
    empty_logp = jnp.zeros((k, max_steps), jnp.float32) if token_log_probs else None
    return _BeamState(
        step=jnp.int32(0),
        live_tokens=empty_tokens,
        live_last=jnp.full((k,), bos_id, jnp.int32),
        # Only beam 0 is real at first, so the K copies do not yield duplicates.
        live_logp=jnp.full((k,), NEG_INF, jnp.float32).at[0].set(0.0),
        live_state=jax.tree.map(lambda x: _expand(x, k), state),
        fin_tokens=empty_tokens,
        fin_scores=jnp.full((k,), NEG_INF, jnp.float32),
        fin_lengths=jnp.zeros((k,), jnp.int32),
        live_token_logp=empty_logp,
        fin_token_logp=empty_logp,
        no_repeat=None if no_repeat is None else repetition.start(no_repeat, k, max_steps),
    )


def _expand(x: Any, k: int) -> jax.Array:
    x = jnp.asarray(x)
    return jnp.broadcast_to(x[None], (k,) + x.shape)


def _beam_cap(max_length: jax.Array | int | None, max_steps: int) -> jax.Array:
    cap = max_steps if max_length is None else max_length
    return jnp.clip(jnp.asarray(cap, jnp.int32), 1, max_steps)


def _beam_running(
    s: _BeamState, cap: jax.Array, alpha: float | jax.Array, max_steps: int, floor: jax.Array | None = None
) -> jax.Array:
    """Whether a live beam can still beat the worst of the K finished hypotheses (or `floor`).

    Log-probs only decrease, so a live beam's best final score is
    logp / max(lp(t + 1), lp(cap)), which is logp when alpha = 0.
    """
    penalty = jnp.maximum(length_penalty(s.step + 1, alpha), length_penalty(cap, alpha))
    best_possible = jnp.max(s.live_logp) / penalty
    # -inf vs -inf (no live beam left) also stops.
    return (s.step < max_steps) & (best_possible > (jnp.min(s.fin_scores) if floor is None else floor))


def _best_candidates(
    logits: jax.Array, live_logp: jax.Array, allowed: Callable[[jax.Array], jax.Array] | None, n: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The n best extensions (live_logp[b] + log_softmax(logits[b])[t], with `allowed` setting the
    tokens a hypothesis may not take to -inf; None: none banned) over every hypothesis b and token
    t: (their scores, hypotheses, tokens, token log-probabilities), best first.

    Adding a hypothesis's score keeps its tokens' order, so each row's n best logits hold the n best
    overall: only K x n candidates get the log-softmax's subtraction and the final top-k, not K x V
    (at batch 1 the vocabulary-wide passes were a third of a beam step). Their log-probabilities are
    log_softmax's own arithmetic, (x - max) - log(sum(exp(x - max))), on the same values. With none
    banned, the rows' n best and their log-probabilities come from `top_log_probs` (one pass over
    each row, a CPU kernel; the same candidates, log-probabilities within an ulp or two)."""
    x = logits.astype(jnp.float32)
    vocab = x.shape[-1]
    if allowed is None and n < vocab:
        logp, top_t = top_log_probs.top_log_probs(x, n)  # [K, n] per row
    else:
        allowed = allowed or (lambda scores: scores)
        x_max = jnp.max(x, axis=-1, keepdims=True)
        shifted_lse = jnp.log(jnp.sum(jnp.exp(x - x_max), axis=-1, keepdims=True))
        if n >= vocab:  # a tiny vocabulary: every token is a candidate
            logp = allowed((x - x_max) - shifted_lse)
            scores, flat = lax.top_k((live_logp[:, None] + logp).reshape(-1), n)
            return scores, flat // vocab, flat % vocab, logp.reshape(-1)[flat]
        top_x, top_t = lax.top_k(allowed(x), n)  # [K, n] per row
        logp = (top_x - x_max) - shifted_lse
    scores, pick = lax.top_k((live_logp[:, None] + logp).reshape(-1), n)
    return scores, pick // n, top_t.reshape(-1)[pick], logp.reshape(-1)[pick]


def _beam_step(
    step_fn: StepFn,
    memory: Any,
    s: _BeamState,
    cap: jax.Array,
    alpha: float | jax.Array,
    *,
    k: int,
    min_length: int,
    eos_id: int,
) -> _BeamState:
    """One step of one sentence's search; `memory` has the leading dim K."""
    logits, new_state = step_fn(memory, s.live_state, s.live_last)

    def allowed(scores: jax.Array) -> jax.Array:
        scores = _forbid_eos(scores, s.step, min_length, eos_id)
        if s.no_repeat is not None:
            scores = repetition.block(scores, s.live_tokens, s.step, s.no_repeat, eos_id)
        return scores

    bans = min_length > 0 or s.no_repeat is not None  # static: whether any token can be banned
    cand_logp, cand_beam, cand_token, cand_token_logp = _best_candidates(
        logits, s.live_logp, allowed if bans else None, 2 * k
    )
    cand_tokens = s.live_tokens[cand_beam].at[:, s.step].set(cand_token)  # [2K, T]
    length = s.step + 1
    ended = (cand_token == eos_id) | (length >= cap)

    # Live: the K best that go on (at most K of the 2K end with EOS).
    live_logp, live_idx = lax.top_k(jnp.where(ended, NEG_INF, cand_logp), k)
    live_beam = cand_beam[live_idx]

    # Finished: merge ended candidates from this step's top K into the K kept.
    new_scores = jnp.where(ended & (jnp.arange(2 * k) < k), cand_logp / length_penalty(length, alpha), NEG_INF)
    fin_scores, fin_idx = lax.top_k(jnp.concatenate([s.fin_scores, new_scores]), k)
    fin_tokens = jnp.concatenate([s.fin_tokens, cand_tokens])[fin_idx]
    new_lengths = jnp.full((2 * k,), length, jnp.int32)
    fin_lengths = jnp.concatenate([s.fin_lengths, new_lengths])[fin_idx]
    live_token_logp = fin_token_logp = None
    if s.live_token_logp is not None:
        cand_token_logp = s.live_token_logp[cand_beam].at[:, s.step].set(cand_token_logp)
        live_token_logp = cand_token_logp[live_idx]
        fin_token_logp = jnp.concatenate([s.fin_token_logp, cand_token_logp])[fin_idx]
    no_repeat = None
    if s.no_repeat is not None:
        no_repeat = repetition.extend(s.no_repeat.take(cand_beam), cand_tokens, cand_token).take(live_idx)

    return _BeamState(
        step=length,
        live_tokens=cand_tokens[live_idx],
        live_last=cand_token[live_idx],
        live_logp=live_logp,
        live_state=jax.tree.map(lambda x: x[live_beam], new_state),
        fin_tokens=fin_tokens,
        fin_scores=fin_scores,
        fin_lengths=fin_lengths,
        live_token_logp=live_token_logp,
        fin_token_logp=fin_token_logp,
        no_repeat=no_repeat,
    )


def _constrained_step(
    step_fn: StepFn,
    memory: Any,
    s: dba.ConstrainedBeam,
    cap: jax.Array,
    alpha: float | jax.Array,
    cons: dba.Constraints,
    *,
    k: int,
    min_length: int,
    eos_id: int,
) -> dba.ConstrainedBeam:
    """`_beam_step` with constraints: the model's step here, the choice of beams in constraints.py."""
    logits, new_state = step_fn(memory, s.beam.live_state, s.beam.live_last)
    logp = _forbid_eos(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), s.beam.step, min_length, eos_id)
    if s.beam.no_repeat is not None:
        logp = repetition.block(logp, s.beam.live_tokens, s.beam.step, s.beam.no_repeat, eos_id)
    penalty = length_penalty(s.beam.step + 1, alpha)
    return dba.beam_step(s, logp, new_state, cap, penalty, cons, k=k, eos_id=eos_id)


def _batch_beam_parts(
    step_fn: StepFn, *, constrained: bool, k: int, max_steps: int, min_length: int, eos_id: int
) -> tuple[Callable, Callable, Callable]:
    """batch_beam_search's vmapped (running, step, finished), each taking the sentences' constraints
    last (None without: the plain beam step); `finished` gives (tokens, scores, lengths, token
    log-probabilities, complete), the last two None when not asked for / unconstrained."""
    if not constrained:
        plain_step = functools.partial(_beam_step, step_fn, k=k, min_length=min_length, eos_id=eos_id)
        return (
            jax.vmap(lambda s, cap, a, c: _beam_running(s, cap, a, max_steps)),
            jax.vmap(lambda m, s, cap, a, c: plain_step(m, s, cap, a)),
            lambda s, cons: (s.fin_tokens, s.fin_scores, s.fin_lengths, s.fin_token_logp, None),
        )
    return (
        jax.vmap(lambda s, cap, a, c: _beam_running(s.beam, cap, a, max_steps, dba.floor(s, c))),
        jax.vmap(functools.partial(_constrained_step, step_fn, k=k, min_length=min_length, eos_id=eos_id)),
        lambda s, cons: (
            s.beam.fin_tokens,
            s.beam.fin_scores,
            s.beam.fin_lengths,
            s.beam.fin_token_logp,
            jax.vmap(dba.complete)(s, cons),
        ),
    )


def beam_search(
    step_fn: StepFn,
    memory: Any,
    state: Any,
    *,
    beam_size: int,
    max_steps: int,
    max_length: jax.Array | int | None = None,
    alpha: float | jax.Array = 0.0,
    nbest: int = 1,
    min_length: int = 0,
    bos_id: jax.Array | int = BOS_ID,
    eos_id: int = EOS_ID,
    pad_id: int = PAD_ID,
    no_repeat_ngram: jax.Array | int | None = None,
    return_token_log_probs: bool = False,
) -> tuple[jax.Array, ...]:
    """Beam search for ONE sentence (`memory`/`state` without a batch dim).

    Returns the `nbest` best finished hypotheses, best first: tokens int32
    [nbest, max_steps], scores float32 [nbest] (sum of log-probs divided by the
    GNMT penalty `length_penalty(length, alpha)`, length counting EOS) and
    lengths int32 [nbest]. Slots with no hypothesis (only when fewer than
    `nbest` sequences are possible) have score -inf.

    Each step keeps the 2K best extensions (K = beam_size), so K live beams
    survive even when up to K of them end. As in fairseq, an ended candidate
    joins the finished set only if it ranks among the K best of its step,
    which makes beam_size=1 exactly greedy search. Hypotheses hitting
    `max_length` (clipped to [1, max_steps]) without EOS count as finished.
    The search stops once no live beam can beat the worst of the K finished
    hypotheses (`_beam_running`). `no_repeat_ngram` (0 = off) bans tokens that would repeat an
    n-gram of that size in a hypothesis (repetition.py); `return_token_log_probs` adds each
    token's log-probability [nbest, max_steps] (0 after the end; the sum is the score's
    numerator), carried with its hypothesis.
    """
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"need 1 <= nbest <= beam_size, got nbest={nbest}, beam_size={beam_size}")
    k = beam_size
    cap = _beam_cap(max_length, max_steps)
    memory = jax.tree.map(lambda x: _expand(x, k), memory)
    init = _beam_init(
        state,
        k=k,
        max_steps=max_steps,
        bos_id=bos_id,
        pad_id=pad_id,
        no_repeat=no_repeat_ngram,
        token_log_probs=return_token_log_probs,
    )
    out = lax.while_loop(
        lambda s: _beam_running(s, cap, alpha, max_steps),
        lambda s: _beam_step(step_fn, memory, s, cap, alpha, k=k, min_length=min_length, eos_id=eos_id),
        init,
    )
    found = (out.fin_tokens[:nbest], out.fin_scores[:nbest], out.fin_lengths[:nbest])
    return found + ((out.fin_token_logp[:nbest],) if return_token_log_probs else ())


def batch_beam_search(
    step_fn: StepFn,
    memory: Any,
    state: Any,
    *,
    beam_size: int,
    max_steps: int,
    max_length: jax.Array | int | None = None,
    alpha: float | jax.Array = 0.0,
    nbest: int = 1,
    min_length: int = 0,
    bos_id: jax.Array | int = BOS_ID,
    eos_id: int = EOS_ID,
    pad_id: int = PAD_ID,
    compact: bool = True,
    no_repeat_ngram: jax.Array | int | None = None,
    return_token_log_probs: bool = False,
    constraints: dba.Constraints | None = None,
) -> tuple[jax.Array, ...]:
    """`beam_search` over a leading batch dim of memory/state (and max_length [N]).

    `bos_id` may be an int32 [N] array: each row's first input token (the last token
    of a forced prefix, with `state` advanced through the rest of it); `alpha` may be
    a float32 [N] array, each row's length penalty (a traced value: no compile per value), and
    so may `no_repeat_ngram` (int32 [N]). Returns tokens [N, nbest, max_steps], scores [N, nbest],
    lengths [N, nbest] (and with `return_token_log_probs` token log-probabilities [N, nbest,
    max_steps]), the same as `jax.vmap(beam_search)`. `step_fn` sees arrays of leading dim
    beam_size, vmapped.

    `compact`: once half the sentences have finished, the others continue as a batch of
    half the size (and so on, down to COMPACT_MIN_ROWS decoder rows), so finished
    sentences stop costing steps; without it every sentence steps until the last ends.

    `constraints` (constraints.Constraints with a leading batch dim, `constraints.pack`): phrases
    each output must contain, searched by dynamic beam allocation (s2s_jax/decoding/constraints.py);
    the result then ends with bool [N, nbest] (after the token log-probabilities, when asked):
    whether the hypothesis contains them all (False only for one cut at its length cap, returned
    when no complete one was found). A `no_repeat_ngram` ban holds against a phrase too.
    """
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"need 1 <= nbest <= beam_size, got nbest={nbest}, beam_size={beam_size}")
    k = beam_size
    n = _batch_size(memory, state)
    caps = _beam_cap(_length_caps(max_length, n, max_steps), max_steps)
    starts = jnp.broadcast_to(jnp.asarray(bos_id, jnp.int32), (n,))
    alphas = jnp.broadcast_to(jnp.asarray(alpha, jnp.float32), (n,))
    memory = jax.tree.map(jax.vmap(lambda x: _expand(x, k)), memory)
    ngrams = None if no_repeat_ngram is None else jnp.broadcast_to(jnp.asarray(no_repeat_ngram, jnp.int32), (n,))
    init = functools.partial(
        _beam_init, k=k, max_steps=max_steps, pad_id=pad_id, token_log_probs=return_token_log_probs
    )
    s = jax.vmap(lambda st, b, g: init(st, bos_id=b, no_repeat=g))(state, starts, ngrams)
    if constraints is not None:
        s = jax.vmap(functools.partial(dba.init, k=k))(s, constraints)
    running, step, finished = _batch_beam_parts(
        step_fn, constrained=constraints is not None, k=k, max_steps=max_steps, min_length=min_length, eos_id=eos_id
    )

    def body(s: Any, memory: Any, caps: jax.Array, alphas: jax.Array, cons: Any) -> Any:
        """Every sentence steps; those that have stopped keep their state (as a vmapped while_loop does)."""
        go = running(s, caps, alphas, cons)
        new = step(memory, s, caps, alphas, cons)
        keep = lambda a, b: jnp.where(go.reshape(go.shape + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
        return jax.tree.map(keep, new, s)

    def stage(s: Any, memory: Any, caps: jax.Array, alphas: jax.Array, cons: Any, stop_at: int) -> Any:
        """Steps until at most `stop_at` sentences are still running."""
        return lax.while_loop(
            lambda s: jnp.sum(running(s, caps, alphas, cons)) > stop_at,
            lambda s: body(s, memory, caps, alphas, cons),
            s,
        )

    min_rows = max(-(-COMPACT_MIN_ROWS // k), 1)  # sentences
    cons = constraints
    fin = finished(s, cons)
    where, rows = jnp.arange(n), n
    while True:
        next_rows = max((rows + 1) // 2, min_rows) if compact and rows > min_rows else 0
        s = stage(s, memory, caps, alphas, cons, next_rows)
        fin = jax.tree.map(lambda f, x, where=where: f.at[where].set(x), fin, finished(s, cons))
        if next_rows == 0:
            break
        # Running sentences first; the next stage is traced with the kept rows only.
        keep = jnp.argsort(~running(s, caps, alphas, cons), stable=True)[:next_rows]
        s, memory, caps, alphas, cons, where = jax.tree.map(
            lambda a, keep=keep: a[keep], (s, memory, caps, alphas, cons, where)
        )
        rows = next_rows
    return tuple(f[:, :nbest] for f in fin if f is not None)


def advance(
    step_fn: StepFn, memory: Any, state: Any, prefix: jax.Array, lengths: jax.Array, *, bos_id: int = BOS_ID
) -> tuple[Any, jax.Array]:
    """Feeds each row's forced prefix (int32 [N, P], its first `lengths[i]` tokens) to the decoder.

    Returns the state after BOS and all but the last prefix token, and that last token
    (BOS for an empty prefix): what a search continues from, so that its first step
    predicts the token after the prefix.
    """
    n, width = prefix.shape
    inputs = jnp.concatenate([jnp.full((n, 1), bos_id, jnp.int32), prefix[:, :-1].astype(jnp.int32)], axis=1)

    def body(st: Any, t: jax.Array) -> tuple[Any, None]:
        _, new = step_fn(memory, st, inputs[:, t])
        live = t < lengths
        return jax.tree.map(lambda a, b: jnp.where(live.reshape((n,) + (1,) * (a.ndim - 1)), a, b), new, st), None

    state, _ = lax.scan(body, state, jnp.arange(width))
    last = jnp.take_along_axis(prefix.astype(jnp.int32), jnp.maximum(lengths - 1, 0)[:, None], axis=1)[:, 0]
    return state, jnp.where(lengths > 0, last, bos_id)


# ----------------------------------------------------------------------------
# Teacher-forced scoring
# ----------------------------------------------------------------------------


def teacher_forced_logits(
    step_fn: StepFn, memory: Any, state: Any, tokens: jax.Array, *, bos_id: jax.Array | int = BOS_ID
) -> jax.Array:
    """Float32 logits [N, T, V] at each position of `tokens` [N, T] given its gold prefix."""
    n = tokens.shape[0]
    bos = jnp.broadcast_to(jnp.reshape(jnp.asarray(bos_id, jnp.int32), (-1, 1)), (n, 1))  # one, or one per row
    inputs = jnp.concatenate([bos, tokens[:, :-1].astype(jnp.int32)], axis=1)

    def body(st: Any, tok: jax.Array) -> tuple[Any, jax.Array]:
        logits, st = step_fn(memory, st, tok)
        return st, logits.astype(jnp.float32)

    _, logits = lax.scan(body, state, inputs.T)
    return logits.transpose(1, 0, 2)


def sequence_log_prob(
    step_fn: StepFn,
    memory: Any,
    state: Any,
    tokens: jax.Array,
    lengths: jax.Array,
    *,
    bos_id: jax.Array | int = BOS_ID,
) -> jax.Array:
    """Sum of log p(token | prefix) over the first `lengths[i]` tokens of each row -> [N].

    The model's own scores for given outputs (EOS included when it is within
    the length): rescoring, or checking a search's scores.
    """
    return jnp.sum(token_log_probs(step_fn, memory, state, tokens, lengths, bos_id=bos_id), axis=1)


def token_log_probs(
    step_fn: StepFn,
    memory: Any,
    state: Any,
    tokens: jax.Array,
    lengths: jax.Array,
    *,
    bos_id: jax.Array | int = BOS_ID,
) -> jax.Array:
    """log p(token | prefix) of each of the first `lengths[i]` tokens of each row, 0 after -> [N, T]."""
    logp = jax.nn.log_softmax(teacher_forced_logits(step_fn, memory, state, tokens, bos_id=bos_id))
    token_logp = jnp.take_along_axis(logp, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
    within = jnp.arange(tokens.shape[1])[None, :] < jnp.asarray(lengths)[:, None]
    return jnp.where(within, token_logp, 0.0)
