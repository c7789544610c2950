"""Train state, the jit-compiled train/eval steps, and `train_and_evaluate`.

`train_and_evaluate` runs inside one `contextlib.ExitStack`: whatever ends the
loop (the last step, an early stop, Ctrl-C/SIGTERM, a NaN loss, an exception)
closes the training log, waits for pending checkpoint saves and restores the
process's signal handlers before it returns or raises.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import math
import signal
import threading
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from s2s_jax import bleu, parallel
from s2s_jax.data import languages, training_data
from s2s_jax.decoding.inference import Inference, SearchOptions
from s2s_jax.models import recurrences, time_segments
from s2s_jax.models.seq2seq import Seq2Seq, make_model
from s2s_jax.models.time_segments import BatchSegments
from s2s_jax.training import init_from
from s2s_jax.training.losses import compact_cross_entropy, masked_cross_entropy
from s2s_jax.training.optimizers import ON_PLATEAU, learning_rate_schedule, make_optimizer
from s2s_jax.training.policies import EARLY_STOP_METRICS
from s2s_jax.training.train_log import NullTrainLog, TrainLog
from s2s_jax.workdir import checkpoints as ckpt_lib

TrainState = dict[str, Any]  # {"step", "params", "opt_state"[, "ema"]}: plain pytree, checkpointed as is


class Outcome(enum.Enum):
    """How a call of `train_and_evaluate` ended."""

    FINISHED = "finished"  # reached train.num_steps (or was already there)
    EARLY_STOPPED = "early-stopped"  # the validation score (train.early_stop_metric) stopped improving
    INTERRUPTED = "interrupted"  # SIGINT/SIGTERM: checkpointed, resumable
    NON_FINITE = "non-finite"  # NaN/Inf with train.on_nonfinite=stop


@dataclasses.dataclass
class TrainResult:
    outcome: Outcome
    step: int  # the step the run stopped at
    steps_run: int  # optimizer steps taken by this call (0: nothing was left to do)
    best_scores: dict  # the best checkpoint's validation scores and step ({} before the first evaluation)
    metrics: dict  # the last logged values (train_loss, valid_bleu, ...)
    message: str = ""  # for the user: why it stopped, how to go on

    @property
    def best_valid_bleu(self) -> float:
        """The BLEU of the best checkpoint (-1 before the first evaluation), whichever
        train.early_stop_metric chose it: final_metrics.json's `best_valid_bleu`."""
        return self.best_scores.get("valid_bleu", -1.0)


def init_train_state(
    model: Seq2Seq, optimizer: optax.GradientTransformation, seed: int, ema: bool = False, lr_scale: bool = False
) -> TrainState:
    """Step 0: fresh parameters and optimizer state; with `ema` their moving average (= the
    parameters), with `lr_scale` a learning-rate factor (1.0) that plateau schedules lower."""
    dummy = jnp.ones((1, 4), jnp.int32)

    @jax.jit
    def init(key):  # compiled: about twice as fast as running init op by op
        params = model.init(key, dummy, dummy)["params"]
        state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": optimizer.init(params)}
        if ema:
            state["ema"] = jax.tree.map(jnp.copy, params)
        if lr_scale:
            state["lr_scale"] = jnp.ones((), jnp.float32)
        return state

    return init(jax.random.key(seed))


def output_layer(model: Seq2Seq) -> Callable:
    """params -> (features [N, H] -> logits [N, V]): the model's output layer alone."""
    return lambda params: functools.partial(model.apply, {"params": params}, method=Seq2Seq.project)


def _loss_sums(model: Seq2Seq, label_smoothing: float, teacher_forcing_ratio: float) -> Callable:
    """(params, batch, key) -> {'loss_sum', 'nll_sum', 'tokens'} of one batch, summed over real target tokens."""
    project = output_layer(model)

    def sums(params, batch, key, segments=None):
        dropout_key, sampling_key = jax.random.split(key)
        rngs = {"dropout": dropout_key, "sampling": sampling_key}
        if teacher_forcing_ratio >= 1.0:  # output layer only at real target positions
            features = model.apply(
                {"params": params},
                batch["src"],
                batch["tgt_in"],
                train=True,
                segments=segments,
                rngs=rngs,
                method=Seq2Seq.features,
            )
            return compact_cross_entropy(features, batch["tgt_out"], project(params), label_smoothing)
        # scheduled sampling needs every step's logits anyway
        logits = model.apply(
            {"params": params},
            batch["src"],
            batch["tgt_in"],
            train=True,
            teacher_forcing_ratio=teacher_forcing_ratio,
            segments=segments,
            rngs=rngs,
        )
        return masked_cross_entropy(logits, batch["tgt_out"], label_smoothing)

    return sums


def ema_decay_at(step, ema_decay: float, ema_warmup: bool):
    """The EMA's decay for the update after `step` updates: `ema_decay`, or with `ema_warmup`
    min(ema_decay, (1 + step) / (10 + step)), so the average forgets the initial weights early on
    (0.1 at the first update, 0.5 at the ninth) and early validations of an EMA run mean something."""
    if not ema_warmup:
        return ema_decay
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))


def _apply_update(
    optimizer: optax.GradientTransformation,
    state: TrainState,
    grads,
    out: dict,
    ema_decay: float,
    ema_warmup: bool = False,
):
    """The optimizer update for a mean-per-token gradient, then the EMA (when the state keeps one):
    ema = decay * ema + (1 - decay) * params, decay from `ema_decay_at`. A step whose loss or
    gradient is not finite leaves the state untouched and reports `nonfinite = 1`."""
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(out["loss_sum"]) & jnp.isfinite(grad_norm)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    if "lr_scale" in state:
        updates = jax.tree.map(lambda u: u * state["lr_scale"], updates)
    params = optax.apply_updates(state["params"], updates)
    keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
    new_state = {
        "step": state["step"] + 1,
        "params": jax.tree.map(keep, params, state["params"]),
        "opt_state": jax.tree.map(keep, opt_state, state["opt_state"]),
    }
    if "lr_scale" in state:
        new_state["lr_scale"] = state["lr_scale"]
    if "ema" in state:
        decay = ema_decay_at(state["step"], ema_decay, ema_warmup)
        new_state["ema"] = jax.tree.map(
            lambda e, p: jnp.where(finite, decay * e + (1.0 - decay) * p, e), state["ema"], new_state["params"]
        )
    return new_state, dict(out, grad_norm=grad_norm, nonfinite=1 - finite.astype(jnp.int32))


def make_train_step(
    model: Seq2Seq,
    optimizer: optax.GradientTransformation,
    label_smoothing: float = 0.0,
    teacher_forcing_ratio: float = 1.0,
    ema_decay: float = 0.0,
    ema_warmup: bool = False,
) -> Callable:
    """One jit-compiled update: (state, batch, base_key, segments=None) -> (state, metrics); `state`
    is donated. `segments` is the batch's source and decoder input static time-segment profiles
    (`time_segments.for_batch(batch)`, compiled for), or None for the padded recurrences.

    The gradient is that of the mean loss per real target token. A step whose loss or
    gradient is not finite leaves the state untouched and reports `nonfinite = 1`, so
    poisoned values never reach the parameters.
    """
    sums = _loss_sums(model, label_smoothing, teacher_forcing_ratio)

    def loss_fn(params, batch, key, segments):
        out = sums(params, batch, key, segments)
        return out["loss_sum"] / jnp.maximum(out["tokens"], 1.0), out

    @functools.partial(jax.jit, donate_argnums=0, static_argnames="segments")
    def train_step(state: TrainState, batch: dict, base_key: jax.Array, segments: BatchSegments | None = None):
        key = jax.random.fold_in(base_key, state["step"])
        grads, out = jax.grad(loss_fn, has_aux=True)(state["params"], batch, key, segments)
        return _apply_update(optimizer, state, grads, out, ema_decay, ema_warmup)

    return train_step


def make_accumulating_train_step(
    model: Seq2Seq,
    optimizer: optax.GradientTransformation,
    label_smoothing: float = 0.0,
    teacher_forcing_ratio: float = 1.0,
    replicated: jax.sharding.Sharding | None = None,
    ema_decay: float = 0.0,
    ema_warmup: bool = False,
) -> Callable:
    """One update from several micro-batches: (state, [batch, ...], base_key) -> (state, metrics).

    The gradient is that of the total loss over all micro-batches divided by their total
    real target tokens, i.e. the update one batch holding them all would make (not a mean
    of per-micro-batch means). Micro-batches may have different shapes: each goes through
    one jit-compiled gradient function (one compile per bucket shape, as without
    accumulation), the sums are added on device, and one compiled update applies them, so
    accumulation adds two compiles in all. Micro-batch i draws dropout with
    fold_in(fold_in(base_key, step), i). `replicated` pins the new state's sharding
    (parallel.replicated(mesh)); the state is donated.
    """
    sums = _loss_sums(model, label_smoothing, teacher_forcing_ratio)

    def total_loss(params, batch, key, segments):
        out = sums(params, batch, key, segments)
        return out["loss_sum"], out

    micro = jax.jit(jax.grad(total_loss, has_aux=True), static_argnums=3)

    add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b), donate_argnums=0)

    @functools.partial(jax.jit, donate_argnums=0, out_shardings=replicated)
    def update(state: TrainState, grad_sums, out: dict):
        grads = jax.tree.map(lambda g: g / jnp.maximum(out["tokens"], 1.0), grad_sums)
        return _apply_update(optimizer, state, grads, out, ema_decay, ema_warmup)

    def train_step(
        state: TrainState,
        batches: list[dict],
        base_key: jax.Array,
        segments: Sequence[BatchSegments | None] | None = None,
    ):
        key = jax.random.fold_in(base_key, state["step"])
        total = None
        for i, batch in enumerate(batches):
            grads, out = micro(state["params"], batch, jax.random.fold_in(key, i), segments[i] if segments else None)
            total = (grads, out) if total is None else add(total, (grads, out))
        return update(state, *total)

    return train_step


def make_eval_step(model: Seq2Seq) -> Callable:
    @jax.jit
    def eval_step(params, batch):
        features = model.apply({"params": params}, batch["src"], batch["tgt_in"], method=Seq2Seq.features)
        return compact_cross_entropy(features, batch["tgt_out"], output_layer(model)(params))

    return eval_step


def evaluate(
    params, eval_step: Callable, inference: Inference, corpus: training_data.Corpus, config
) -> tuple[dict, list[str]]:
    """Validation loss, perplexity and BLEU/chrF of the translations the run's decode settings give.

    With several language pairs, BLEU and chrF are each pair's (`valid_bleu/de-en`, ...) and
    `valid_bleu` / `valid_chrf` their unweighted mean (what train.early_stop_metric reads); the
    loss is over all validation tokens.
    """
    nll_sum, tokens = 0.0, 0.0
    for batch in corpus.valid_batches.epoch(0, shuffle=False):
        out = jax.device_get(eval_step(params, batch))
        nll_sum += float(out["nll_sum"])
        tokens += float(out["tokens"])
    valid_loss = nll_sum / max(tokens, 1.0)
    results = inference.run(
        params, corpus.valid_src_ids, SearchOptions.from_config(config.decode), batch_size=config.decode.batch_size
    )
    hyps = corpus.tgt_tokenizer.detokenize([candidates[0].tokens for candidates in results])
    scores = {"valid_loss": valid_loss, "valid_ppl": float(np.exp(min(valid_loss, 50.0)))}
    scores.update(translation_scores(hyps, corpus.valid_refs, corpus.valid_groups, config.decode.bleu_tokenize or None))
    return scores, hyps


def translation_scores(
    hyps: list[str], refs: list[str], groups: Sequence[tuple[str, int, int]], tokenize: str | None
) -> dict:
    """valid_bleu and valid_chrf of the translations; with `groups` (name, start, end) each group's
    (`valid_bleu/NAME`) and, as valid_bleu / valid_chrf, their mean."""
    if not groups:
        return {
            "valid_bleu": bleu.corpus_bleu(hyps, refs, tokenize=tokenize),
            "valid_chrf": bleu.corpus_chrf(hyps, refs),
        }
    scores = {}
    for name, start, end in groups:
        scores[f"valid_bleu/{name}"] = bleu.corpus_bleu(hyps[start:end], refs[start:end], tokenize=tokenize)
        scores[f"valid_chrf/{name}"] = bleu.corpus_chrf(hyps[start:end], refs[start:end])
    for metric in ("valid_bleu", "valid_chrf"):
        scores[metric] = float(np.mean([scores[f"{metric}/{name}"] for name, _, _ in groups]))
    return scores


class StopRequest(contextlib.AbstractContextManager):
    """While active, SIGINT/SIGTERM ask the loop to finish its step, checkpoint and return;
    a second SIGINT aborts. Leaving the block puts the previous handlers back."""

    def __init__(self):
        self.requested: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name


class BestTracker:
    """The best validation score so far (train.early_stop_metric: BLEU, chrF or loss), the
    checkpoint it picks, and early stopping by `train.early_stop_patience`.

    Starts from the best so far as the resumed checkpoint recorded it (best/ may hold a later
    evaluation, saved after that checkpoint by a run that was then killed), else from the best
    checkpoint on disk, so a resumed run decides as an uninterrupted one would (and a rerun after
    an early stop does nothing).
    """

    def __init__(self, train_cfg, best_meta: dict | None):
        self.train_cfg = train_cfg
        self.metric = EARLY_STOP_METRICS[train_cfg.early_stop_metric]
        best_meta = best_meta or {}
        self.step = best_meta.get("step", 0)  # of the best checkpoint
        self.scores = best_meta  # all validation scores of the best checkpoint, and its step
        worst = -math.inf if self.metric.higher_is_better else math.inf
        self.score = best_meta.get(self.metric.key, worst)  # its train.early_stop_metric

    def update(self, step: int, scores: dict, params, checkpoints: ckpt_lib.Checkpoints) -> bool:
        """Saves `params` as the new best if `scores` improve on it; says whether they did."""
        value = scores[self.metric.key]
        improved = value > self.score if self.metric.higher_is_better else value < self.score
        if improved:
            self.step, self.score, self.scores = step, value, dict(scores, step=step)
            checkpoints.save_best(step, params, self.scores)
        return improved

    def patience_ran_out(self, step: int) -> bool:
        patience = self.train_cfg.early_stop_patience
        return patience > 0 and step - self.step >= patience * self.train_cfg.eval_every

    def message(self, step: int) -> str:
        return (
            f"early stop at step {step}: {self.metric.label} has not improved for "
            f"{self.train_cfg.early_stop_patience} evaluations (best {self.score:.2f} at step {self.step})"
        )


class LogWindow:
    """Step metrics gathered on device between two log lines, summed on the host when logged."""

    def __init__(self, schedule: optax.Schedule, offset: int = 0):
        self.schedule, self.offset = schedule, offset  # offset: the optimizer's count at step 0
        self._reset()

    def _reset(self) -> None:
        self.pending: list[dict] = []
        self.tokens = 0
        self.start = time.perf_counter()

    def add(self, step_metrics: dict, tokens: int) -> None:
        self.pending.append(step_metrics)
        self.tokens += tokens

    def sums(self) -> dict:
        host = jax.device_get(self.pending)
        return {k: float(sum(m[k] for m in host)) for k in host[0]}

    def record(self, step: int, sums: dict, lr_scale: float = 1.0) -> dict:
        """The log record of the window ending at `step`; starts a new window."""
        elapsed = time.perf_counter() - self.start
        record = {
            "train_loss": sums["loss_sum"] / max(sums["tokens"], 1.0),
            "train_nll": sums["nll_sum"] / max(sums["tokens"], 1.0),
            "grad_norm": sums["grad_norm"] / len(self.pending),
            "learning_rate": float(self.schedule(self.offset + step - 1)) * lr_scale,
            "tokens_per_sec": self.tokens / max(elapsed, 1e-9),
            "skipped_steps": int(sums["nonfinite"]),
        }
        self._reset()
        return record


def train_and_evaluate(config, workdir: str) -> TrainResult:
    """Trains (resuming from WORKDIR's latest checkpoint if any) and says how it ended.

    Uses every device of every process (s2s_jax/parallel.py): batches split over the mesh's
    `data` axis, state replicated; only process 0 prints and writes the training log.
    """
    mesh = parallel.make_mesh()
    if not config.train.max_tokens:
        parallel.check_batch_divides(config.train.batch_size, mesh)
    parallel.silence_other_processes()  # their stdout goes to /dev/null: process 0 prints
    with parallel.main_process_first("corpus"):  # process 0 trains the tokenizer, the others load it
        corpus = training_data.prepare(config, workdir, row_multiple=parallel.num_devices(mesh))
    tags = languages.run_languages(config.data).symbol_ids(corpus.tgt_tokenizer)
    model = make_model(config, corpus.src_tokenizer.vocab_size, corpus.tgt_tokenizer.vocab_size, tags)
    optimizer = make_optimizer(config.train)
    state = parallel.replicate(
        init_train_state(
            model,
            optimizer,
            config.seed,
            ema=config.train.ema_decay > 0,
            lr_scale=config.train.lr_schedule in ON_PLATEAU,
        ),
        mesh,
    )
    iterator = _train_iterator(corpus, mesh)
    train_cfg = config.train

    with contextlib.ExitStack() as cleanup:
        stop = cleanup.enter_context(StopRequest())
        checkpoints = cleanup.enter_context(ckpt_lib.Checkpoints(workdir, train_cfg.max_to_keep))
        state, start_step, resumed = _resume_or_initialize(state, checkpoints, iterator, train_cfg, workdir, mesh)
        print(parallel.describe(mesh, train_cfg.batch_size, train_cfg.max_tokens), flush=True)
        print(f"Recurrences: {recurrences.describe(model.config.recurrence)}", flush=True)
        on_disk = checkpoints.best_meta()  # also sets an unreadable best/ aside, with a warning
        # The best as the resumed checkpoint knew it, unless best/ was just set aside: then the next
        # evaluation writes a new one, as it does on a run without a recorded best.
        recorded = resumed.get("best")
        if recorded and on_disk is None:
            recorded = None
        best = BestTracker(train_cfg, on_disk if recorded is None else recorded)
        if start_step and start_step % train_cfg.eval_every == 0 and best.patience_ran_out(start_step):
            return TrainResult(Outcome.EARLY_STOPPED, start_step, 0, best.scores, {}, best.message(start_step))
        loop = _TrainLoop(
            config,
            workdir,
            mesh,
            corpus,
            model,
            optimizer,
            iterator,
            checkpoints,
            best,
            stop,
            start_step,
            cleanup,
        )
        return loop.run(state)


def _train_iterator(corpus: training_data.Corpus, mesh: jax.sharding.Mesh):
    """The training batches; with several processes each reads only the rows its own devices
    hold (shard_batch places those)."""
    local_rows = None
    if jax.process_count() > 1:
        sharding = parallel.batch_sharding(mesh)
        local_rows = lambda rows: parallel.process_rows(sharding, rows)  # noqa: E731
    return corpus.train_iterator(local_rows)


def _resume_or_initialize(
    state: TrainState, checkpoints: ckpt_lib.Checkpoints, iterator, train_cfg, workdir: str, mesh: jax.sharding.Mesh
) -> tuple[TrainState, int, dict]:
    """(state, start step, the checkpoint's meta): the newest checkpoint's state and data position
    if there is one, else `state` (fresh) or what train.init_from starts from, and an empty meta."""
    if checkpoints.latest_step() is not None:
        state, meta = checkpoints.restore(state)
        state = parallel.replicate(state, mesh)
        iterator.set_state(meta["data_state"])
        start_step = int(state["step"])
        print(f"Resumed from step {start_step} in {workdir}/checkpoints", flush=True)
        return state, start_step, meta
    if train_cfg.init_from:
        state = init_from.initial_state(
            train_cfg.init_from,
            jax.device_get(state),
            train_cfg.init_keep_optimizer,
            workdir if parallel.is_main_process() else None,
            train_cfg,
        )
        state = parallel.replicate(state, mesh)
    return state, 0, {}


def _compiled_train_step(
    model: Seq2Seq, optimizer: optax.GradientTransformation, train_cfg, mesh: jax.sharding.Mesh
) -> Callable:
    """The run's update: accumulating over train.accum_steps micro-batches, or data-parallel on one batch."""
    if train_cfg.accum_steps > 1:
        return make_accumulating_train_step(
            model,
            optimizer,
            train_cfg.label_smoothing,
            train_cfg.teacher_forcing_ratio,
            parallel.replicated(mesh),
            train_cfg.ema_decay,
            train_cfg.ema_warmup,
        )
    return parallel.data_parallel_train_step(
        make_train_step(
            model,
            optimizer,
            train_cfg.label_smoothing,
            train_cfg.teacher_forcing_ratio,
            train_cfg.ema_decay,
            train_cfg.ema_warmup,
        ),
        mesh,
    )


def _nonfinite_message(first: int, step: int, count: int) -> str:
    return (
        f"NaN/Inf loss or gradient in {count} of the steps {first}..{step}; "
        "those updates were skipped and no checkpoint was written from them. Lower "
        "train.learning_rate or set train.on_nonfinite=skip."
    )


class _TrainLoop:
    """The steps of one `train_and_evaluate` call after its start: train, evaluate and keep the
    best, log, checkpoint, stop. Its log and progress bar close with `cleanup`."""

    def __init__(
        self,
        config,
        workdir: str,
        mesh: jax.sharding.Mesh,
        corpus: training_data.Corpus,
        model: Seq2Seq,
        optimizer: optax.GradientTransformation,
        iterator,
        checkpoints: ckpt_lib.Checkpoints,
        best: BestTracker,
        stop: StopRequest,
        start_step: int,
        cleanup: contextlib.ExitStack,
    ):
        self.config, self.train_cfg, self.mesh, self.corpus = config, config.train, mesh, corpus
        self.iterator, self.checkpoints, self.best, self.stop = iterator, checkpoints, best, stop
        self.start_step = start_step
        # Sorting rows across devices would move them between devices: one device only. The fused
        # recurrences skip each row's padding without sorting, so they need no profiles (compiles).
        self.skip_padding = (
            config.model.get("skip_padding", True) and parallel.num_devices(mesh) == 1 and not model.config.fused
        )
        # Scheduled sampling and input feeding run the decoder step by step: no decoder-input profiles.
        self.target_segments = config.train.teacher_forcing_ratio >= 1.0 and not (
            config.model.attention != "none" and config.model.input_feeding
        )
        self.plateau = config.train.lr_schedule in ON_PLATEAU
        main = parallel.is_main_process()
        self.train_step = _compiled_train_step(model, optimizer, self.train_cfg, mesh)
        self.eval_step = parallel.data_parallel_eval_step(make_eval_step(model), mesh)
        self.inference = Inference(model, config.decode, config.data.max_len, mesh, skip_padding=self.skip_padding)
        self.log = cleanup.enter_context(
            contextlib.closing(TrainLog(workdir, resume_step=start_step) if main else NullTrainLog())
        )
        self.base_key = jax.random.wrap_key_data(
            parallel.replicate(jax.random.key_data(jax.random.key(config.seed)), mesh)
        )
        self.window = LogWindow(
            learning_rate_schedule(self.train_cfg), init_from.schedule_offset(workdir, self.train_cfg)
        )
        self.bar = cleanup.enter_context(
            contextlib.closing(
                tqdm(
                    total=self.train_cfg.num_steps,
                    initial=start_step,
                    desc="train",
                    dynamic_ncols=True,
                    mininterval=1.0,
                    disable=not main,
                )
            )
        )
        self.last: dict = {}  # the last logged values

    def result(self, outcome: Outcome, step: int, message: str = "") -> TrainResult:
        return TrainResult(outcome, step, step - self.start_step, self.best.scores, self.last, message)

    def run(self, state: TrainState) -> TrainResult:
        """Steps from the start step to train.num_steps, or until a stop, and says how it ended."""
        cfg = self.train_cfg
        self.lr_scale = float(state["lr_scale"]) if self.plateau else 1.0  # mirrors the state's, read once
        for step in range(self.start_step + 1, cfg.num_steps + 1):
            scale_used = self.lr_scale  # this step's factor, before an evaluation lowers it
            state = self.train_one_step(state)
            record: dict = {}
            early_stop = False
            if step % cfg.eval_every == 0 or step == cfg.num_steps:
                state, scores, early_stop = self.evaluate_and_keep_best(state, step)
                record.update(scores)
            stopping = parallel.agree_to_stop(self.stop.requested is not None, step, cfg.log_every) or early_stop
            is_checkpoint = step % cfg.checkpoint_every == 0 or step == cfg.num_steps or stopping
            # Logging at every checkpoint too keeps metrics.jsonl identical after a resume from a periodic
            # checkpoint (a stop between log steps logs the window up to it, a line an uninterrupted run lacks).
            if step % cfg.log_every == 0 or is_checkpoint:
                sums = self.window.sums()
                if sums["nonfinite"] > 0 and cfg.on_nonfinite == "stop":
                    first = step - len(self.window.pending) + 1
                    return self.result(
                        Outcome.NON_FINITE, step, _nonfinite_message(first, step, int(sums["nonfinite"]))
                    )
                record.update(self.log_window(step, sums, scale_used))
            if record:
                self.write_log(step, record)
            if is_checkpoint:
                # the best so far goes with the state: best/ may hold a later step than this checkpoint
                meta = {"data_state": self.iterator.get_state(), "step": step, "best": self.best.scores}
                self.checkpoints.save(step, state, meta)
            if early_stop:
                return self.result(Outcome.EARLY_STOPPED, step, self.best.message(step))
            if stopping:
                who = self.stop.requested or "a stop on another process"
                return self.result(
                    Outcome.INTERRUPTED,
                    step,
                    (f"{who}: stopped after step {step} with a checkpoint; run the same command to resume."),
                )
        return self.result(Outcome.FINISHED, max(self.start_step, cfg.num_steps))

    def next_batches(self) -> tuple[Any, Any, int]:
        """(placed batch or micro-batches, their time-segment profiles, real target tokens) of the next step."""
        batches, tokens = [], 0
        for _ in range(self.train_cfg.accum_steps):
            batches.append(next(self.iterator))
            tokens += self.iterator.last_tokens
        segments = [time_segments.for_batch(b, self.target_segments) if self.skip_padding else None for b in batches]
        if self.train_cfg.accum_steps > 1:
            return [parallel.shard_batch(self.mesh, b) for b in batches], tuple(segments), tokens
        return parallel.shard_batch(self.mesh, batches[0]), segments[0], tokens

    def train_one_step(self, state: TrainState) -> TrainState:
        placed, segments, tokens = self.next_batches()
        state, step_metrics = self.train_step(state, placed, self.base_key, segments=segments)
        self.window.add(step_metrics, tokens)
        self.bar.update(1)
        return state

    def evaluate_and_keep_best(self, state: TrainState, step: int) -> tuple[TrainState, dict, bool]:
        """Validates `step`'s decode parameters, saves them as the best checkpoint if they improve on
        it (train.early_stop_metric), lowers the plateau schedule's rate if not, and prints the scores;
        (state, scores, whether early stopping stops the run here)."""
        jax.block_until_ready(state)  # the queued train steps count as training time
        eval_start = time.perf_counter()
        scores, hyps = evaluate(ckpt_lib.decode_params(state), self.eval_step, self.inference, self.corpus, self.config)
        self.window.start += time.perf_counter() - eval_start  # tokens/s counts training time only
        improved = self.best.update(step, scores, ckpt_lib.decode_params(state), self.checkpoints)
        if self.plateau and not improved:
            self.lr_scale = float(np.float32(self.lr_scale) * np.float32(self.train_cfg.plateau_factor))
            state = dict(state, lr_scale=parallel.replicate(np.float32(self.lr_scale), self.mesh))
            self.bar.write(f"step {step}: no better {self.best.metric.label}: learning rate x{self.lr_scale:g}")
        early_stop = step < self.train_cfg.num_steps and self.best.patience_ran_out(step)
        self.print_scores(step, scores, hyps)
        return state, scores, early_stop

    def print_scores(self, step: int, scores: dict, hyps: list[str]) -> None:
        self.bar.write(
            f"step {step}: valid loss {scores['valid_loss']:.3f} ppl {scores['valid_ppl']:.2f} "
            f"BLEU {scores['valid_bleu']:.2f} chrF {scores['valid_chrf']:.2f}"
            + "".join(
                f"\n  {name}: BLEU {scores[f'valid_bleu/{name}']:.2f} chrF {scores[f'valid_chrf/{name}']:.2f}"
                for name, _, _ in self.corpus.valid_groups
            )
        )
        ranges = [(start, end) for _, start, end in self.corpus.valid_groups] or [(0, len(hyps))]  # each pair's
        rows = [i for start, end in ranges for i in range(start, min(end, start + self.train_cfg.num_samples))]
        samples = [(self.corpus.valid_src_text[i], hyps[i], self.corpus.valid_refs[i]) for i in rows]
        for src, hyp, ref in samples:
            self.bar.write(f"  src: {src}\n  hyp: {hyp}\n  ref: {ref}")

    def log_window(self, step: int, sums: dict, lr_scale: float) -> dict:
        """The training metrics of the steps since the last log line; starts a new window."""
        record = self.window.record(step, sums, lr_scale)
        self.bar.set_postfix(loss=f"{record['train_loss']:.3f}", tok_s=f"{record['tokens_per_sec']:.0f}")
        return record

    def write_log(self, step: int, record: dict) -> None:
        self.checkpoints.check()  # a background save that failed stops the run here
        self.log.write(step, record)
        self.last.update(record)
