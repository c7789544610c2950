"""Train state, the jit-compiled train/eval steps, and `train_and_evaluate`."""

from __future__ import annotations

import dataclasses
import functools
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from s2s_jax import checkpoints as ckpt_lib
from s2s_jax import corpus as corpus_lib
from s2s_jax import decoding, metrics, parallel
from s2s_jax.logging_utils import MetricsLogger, NullLogger
from s2s_jax.losses import compact_cross_entropy, masked_cross_entropy
from s2s_jax.model import ModelConfig, Seq2Seq
from s2s_jax.tokenizer import BOS_ID, EOS_ID, PAD_ID

TrainState = dict[str, Any]  # {"step", "params", "opt_state"}: plain pytree, checkpointed as is


class NonFiniteLossError(FloatingPointError):
    """Training produced NaN/Inf; the parameters were not updated with it."""


def dtype_of(name: str):
    dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    if name not in dtypes:
        raise ValueError(f"train.dtype must be float32 or bfloat16, not {name!r}")
    return dtypes[name]


def make_model(config, src_vocab_size: int, tgt_vocab_size: int) -> Seq2Seq:
    dtype = dtype_of(config.train.dtype)
    return Seq2Seq(ModelConfig.from_config(config.model, src_vocab_size, tgt_vocab_size, dtype))


def learning_rate_schedule(train_cfg) -> optax.Schedule:
    """Linear warmup, then constant, cosine decay to 10%, or inverse square root."""
    peak, warmup = train_cfg.learning_rate, max(1, train_cfg.warmup_steps)
    if train_cfg.lr_schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup]
        )
    if train_cfg.lr_schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, peak, warmup, max(train_cfg.num_steps, warmup + 1), end_value=0.1 * peak
        )
    if train_cfg.lr_schedule == "rsqrt":
        return lambda step: peak * jnp.minimum((step + 1) / warmup, jnp.sqrt(warmup / (step + 1)))
    raise ValueError(f"train.lr_schedule must be constant, cosine or rsqrt, not {train_cfg.lr_schedule!r}")


def make_optimizer(train_cfg) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(train_cfg)
    if train_cfg.optimizer == "adam":
        opt = optax.adam(schedule)
    elif train_cfg.optimizer == "adamw":
        opt = optax.adamw(schedule, weight_decay=train_cfg.weight_decay)
    else:
        raise ValueError(f"train.optimizer must be adam or adamw, not {train_cfg.optimizer!r}")
    if train_cfg.clip_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(train_cfg.clip_norm), opt)
    return opt


def init_train_state(model: Seq2Seq, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
    dummy = jnp.ones((1, 4), jnp.int32)

    @jax.jit
    def init(key):  # compiled: about twice as fast as running init op by op
        params = model.init(key, dummy, dummy)["params"]
        return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": optimizer.init(params)}

    return init(jax.random.key(seed))


def _projector(model: Seq2Seq) -> Callable:
    """params -> (features [N, H] -> logits [N, V]): the model's output layer alone."""
    return lambda params: functools.partial(model.apply, {"params": params}, method=Seq2Seq.project)


def make_train_step(
    model: Seq2Seq,
    optimizer: optax.GradientTransformation,
    label_smoothing: float = 0.0,
    teacher_forcing_ratio: float = 1.0,
) -> Callable:
    """One jit-compiled update: (state, batch, base_key) -> (state, metrics); `state` is donated.

    A step whose loss or gradient is not finite leaves the state untouched and
    reports `nonfinite = 1`, so poisoned values never reach the parameters.
    """
    project = _projector(model)

    def loss_fn(params, batch, key):
        dropout_key, sampling_key = jax.random.split(key)
        rngs = {"dropout": dropout_key, "sampling": sampling_key}
        if teacher_forcing_ratio >= 1.0:  # output layer only at real target positions
            features = model.apply(
                {"params": params}, batch["src"], batch["tgt_in"], train=True, rngs=rngs, method=Seq2Seq.features
            )
            out = compact_cross_entropy(features, batch["tgt_out"], project(params), label_smoothing)
        else:  # scheduled sampling needs every step's logits anyway
            logits = model.apply(
                {"params": params}, batch["src"], batch["tgt_in"], train=True,
                teacher_forcing_ratio=teacher_forcing_ratio, rngs=rngs,
            )
            out = masked_cross_entropy(logits, batch["tgt_out"], label_smoothing)
        return out["loss_sum"] / jnp.maximum(out["tokens"], 1.0), out

    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(state: TrainState, batch: dict, base_key: jax.Array):
        key = jax.random.fold_in(base_key, state["step"])
        grads, out = jax.grad(loss_fn, has_aux=True)(state["params"], batch, key)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(out["loss_sum"]) & jnp.isfinite(grad_norm)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        new_state = {
            "step": state["step"] + 1,
            "params": jax.tree.map(keep, params, state["params"]),
            "opt_state": jax.tree.map(keep, opt_state, state["opt_state"]),
        }
        step_metrics = dict(out, grad_norm=grad_norm, nonfinite=1 - finite.astype(jnp.int32))
        return new_state, step_metrics

    return train_step


def make_eval_step(model: Seq2Seq) -> Callable:
    @jax.jit
    def eval_step(params, batch):
        features = model.apply({"params": params}, batch["src"], batch["tgt_in"], method=Seq2Seq.features)
        return compact_cross_entropy(features, batch["tgt_out"], _projector(model)(params))

    return eval_step


def make_translate_fn(model: Seq2Seq, max_steps: int, beam_size: int = 1, alpha: float = 0.0) -> Callable:
    """jit-compiled (params, src [B, S], max_lengths [B]) -> best token ids [B, max_steps]."""

    @jax.jit
    def translate(params, src, max_lengths):
        memory, state = model.apply({"params": params}, src, method=Seq2Seq.encode)
        step_fn = functools.partial(model.apply, {"params": params}, method=Seq2Seq.decode_step)
        if beam_size <= 1:
            tokens, _ = decoding.greedy_search(
                step_fn, memory, state, max_steps=max_steps, max_lengths=max_lengths
            )
            return tokens
        tokens, _, _ = decoding.batch_beam_search(
            step_fn, memory, state, beam_size=beam_size, max_steps=max_steps,
            max_length=max_lengths, alpha=alpha, nbest=1,
        )
        return tokens[:, 0]

    return translate


def max_output_lengths(src: np.ndarray, decode_cfg, max_steps: int) -> np.ndarray:
    """Per-sentence output cap a * source_length + b, within the compiled max_steps."""
    src_len = (src != PAD_ID).sum(axis=1)
    cap = np.ceil(decode_cfg.max_len_a * src_len + decode_cfg.max_len_b).astype(np.int32)
    return np.minimum(np.maximum(cap, 1), max_steps)


def static_max_steps(config) -> int:
    return int(np.ceil(config.decode.max_len_a * (config.data.max_len + 1) + config.decode.max_len_b))


def translate_batches(translate, params, batches, tokenizer, config, max_steps: int, total: int) -> list[str]:
    """Translates bucketed batches and returns hypotheses in the input order."""
    hyps = [""] * total
    for batch in batches:
        tokens = np.asarray(translate(params, batch["src"], max_output_lengths(batch["src"], config.decode, max_steps)))
        for row, index in enumerate(batch["index"]):
            if index >= 0:
                hyps[index] = tokenizer.decode([tokens[row]])[0]
    return hyps


@dataclasses.dataclass
class Evaluator:
    """Validation loss, perplexity and BLEU/chrF of greedy (or beam) translations."""

    eval_step: Callable
    translate: Callable
    corpus: corpus_lib.Corpus
    config: Any
    max_steps: int

    def __call__(self, params) -> tuple[dict, list[str]]:
        totals = {"nll_sum": 0.0, "tokens": 0.0}
        batches = self.corpus.valid_batches.epoch(0, shuffle=False)
        for batch in batches:
            out = jax.device_get(self.eval_step(params, batch))
            totals["nll_sum"] += float(out["nll_sum"])
            totals["tokens"] += float(out["tokens"])
        valid_loss = totals["nll_sum"] / max(totals["tokens"], 1.0)
        hyps = translate_batches(
            self.translate, params, batches, self.corpus.tgt_tokenizer, self.config,
            self.max_steps, len(self.corpus.valid_refs),
        )
        tokenize = self.config.decode.bleu_tokenize or None
        result = {
            "valid_loss": valid_loss,
            "valid_ppl": float(np.exp(min(valid_loss, 50.0))),
            "valid_bleu": metrics.corpus_bleu(hyps, self.corpus.valid_refs, tokenize=tokenize),
            "valid_chrf": metrics.corpus_chrf(hyps, self.corpus.valid_refs),
        }
        return result, hyps


class StopRequest:
    """SIGINT/SIGTERM ask the loop to finish its step, checkpoint and return (a second SIGINT aborts)."""

    def __init__(self):
        self.requested: str | None = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def _sum_metrics(pending: list[dict]) -> dict:
    host = jax.device_get(pending)
    return {k: float(sum(m[k] for m in host)) for k in host[0]}


def _patience_ran_out(step: int, best_step: int, train_cfg) -> bool:
    """Early stopping: `early_stop_patience` evaluations since the best validation BLEU.

    Decided from the best step on disk, so a resumed run stops where an
    uninterrupted one would (and a rerun after an early stop does nothing).
    """
    patience = train_cfg.early_stop_patience
    return patience > 0 and step - best_step >= patience * train_cfg.eval_every


def _early_stop_message(step: int, best_step: int, best_bleu: float, train_cfg) -> str:
    return (
        f"early stop at step {step}: validation BLEU has not improved for "
        f"{train_cfg.early_stop_patience} evaluations (best {best_bleu:.2f} at step {best_step})"
    )


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains (resuming from WORKDIR's latest checkpoint if any) and returns the final metrics.

    Uses every device of every process (s2s_jax/parallel.py): batches split over the mesh's
    `data` axis, state replicated; only process 0 prints and writes metrics.
    """
    mesh = parallel.make_mesh()
    parallel.check_batch_divides(config.train.batch_size, mesh)
    main = parallel.is_main_process()
    parallel.silence_other_processes()  # their stdout goes to /dev/null: process 0 prints
    with parallel.main_process_first("corpus"):  # process 0 trains the tokenizer, the others load it
        corpus = corpus_lib.prepare(config, workdir)
    model = make_model(config, corpus.src_tokenizer.vocab_size, corpus.tgt_tokenizer.vocab_size)
    optimizer = make_optimizer(config.train)
    state = parallel.replicate(init_train_state(model, optimizer, config.seed), mesh)
    checkpoints = ckpt_lib.Checkpoints(workdir, config.train.max_to_keep)
    iterator = corpus.train_iterator()
    start_step = 0
    if checkpoints.latest_step() is not None:
        state, meta = checkpoints.restore(state)
        state = parallel.replicate(state, mesh)
        iterator.set_state(meta["data_state"])
        start_step = int(state["step"])
        print(f"Resumed from step {start_step} in {workdir}/checkpoints", flush=True)
    print(parallel.describe(mesh, config.train.batch_size), flush=True)
    best_meta = checkpoints.best_meta() or {}
    best_bleu = best_meta.get("valid_bleu", -1.0)
    best_step = best_meta.get("step", 0)
    if start_step and start_step % config.train.eval_every == 0 and _patience_ran_out(start_step, best_step, config.train):
        print(_early_stop_message(start_step, best_step, best_bleu, config.train))
        checkpoints.close()
        return {"early_stopped_at": start_step, "best_valid_bleu": best_bleu}

    train_step = parallel.data_parallel_train_step(make_train_step(
        model, optimizer, config.train.label_smoothing, config.train.teacher_forcing_ratio
    ), mesh)
    max_steps = static_max_steps(config)
    evaluator = Evaluator(
        parallel.data_parallel_eval_step(make_eval_step(model), mesh),
        parallel.data_parallel_translate(
            make_translate_fn(model, max_steps, config.decode.beam_size, config.decode.alpha), mesh
        ),
        corpus, config, max_steps,
    )
    logger = MetricsLogger(workdir, resume_step=start_step) if main else NullLogger()
    base_key = jax.random.wrap_key_data(parallel.replicate(jax.random.key_data(jax.random.key(config.seed)), mesh))
    num_steps = config.train.num_steps
    schedule = learning_rate_schedule(config.train)
    pending, window_tokens, window_start = [], 0, time.perf_counter()
    final: dict = {}
    stop = StopRequest()
    bar = tqdm(total=num_steps, initial=start_step, desc="train", dynamic_ncols=True, mininterval=1.0, disable=not main)
    for step in range(start_step + 1, num_steps + 1):
        batch = next(iterator)
        window_tokens += int((batch["tgt_out"] != PAD_ID).sum())
        state, step_metrics = train_step(state, parallel.shard_batch(mesh, batch), base_key)
        pending.append(step_metrics)
        bar.update(1)
        record: dict = {}
        early_stop = False
        if step % config.train.eval_every == 0 or step == num_steps:
            scores, hyps = evaluator(state["params"])
            record.update(scores)
            if scores["valid_bleu"] > best_bleu:
                best_bleu, best_step = scores["valid_bleu"], step
                checkpoints.save_best(step, state["params"], dict(scores, step=step))
            early_stop = step < num_steps and _patience_ran_out(step, best_step, config.train)
            bar.write(
                f"step {step}: valid loss {scores['valid_loss']:.3f} ppl {scores['valid_ppl']:.2f} "
                f"BLEU {scores['valid_bleu']:.2f} chrF {scores['valid_chrf']:.2f}"
            )
            for src, hyp, ref in list(zip(corpus.valid_src_text, hyps, corpus.valid_refs))[: config.train.num_samples]:
                bar.write(f"  src: {src}\n  hyp: {hyp}\n  ref: {ref}")
        stopping = parallel.agree_to_stop(stop.requested is not None, step, config.train.log_every) or early_stop
        is_checkpoint = step % config.train.checkpoint_every == 0 or step == num_steps or stopping
        # Logging at every checkpoint too keeps metrics.jsonl identical after a resume.
        if step % config.train.log_every == 0 or is_checkpoint:
            sums = _sum_metrics(pending)
            elapsed = time.perf_counter() - window_start
            if sums["nonfinite"] > 0 and config.train.on_nonfinite == "stop":
                bar.close()
                stop.restore()
                checkpoints.wait()
                raise NonFiniteLossError(
                    f"NaN/Inf loss or gradient in {int(sums['nonfinite'])} of the steps "
                    f"{step - len(pending) + 1}..{step}; those updates were skipped and no "
                    "checkpoint was written from them. Lower train.learning_rate or set "
                    "train.on_nonfinite=skip."
                )
            record.update(
                train_loss=sums["loss_sum"] / max(sums["tokens"], 1.0),
                train_nll=sums["nll_sum"] / max(sums["tokens"], 1.0),
                grad_norm=sums["grad_norm"] / len(pending),
                learning_rate=float(schedule(step - 1)),
                tokens_per_sec=window_tokens / max(elapsed, 1e-9),
                skipped_steps=int(sums["nonfinite"]),
            )
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", tok_s=f"{record['tokens_per_sec']:.0f}")
            pending = []
        if record:
            logger.write(step, record)
            final.update(record)
        if is_checkpoint:
            checkpoints.save(step, state, {"data_state": iterator.get_state(), "step": step})
        if stopping:
            bar.close()
            checkpoints.wait()
            if early_stop:
                print(_early_stop_message(step, best_step, best_bleu, config.train))
                final["early_stopped_at"] = step
            else:
                print(f"{stop.requested or 'a stop on another process'}: stopped after step {step} with a checkpoint; run the same command to resume.")
                final["interrupted_at"] = step
            break
        if record:
            window_tokens, window_start = 0, time.perf_counter()
    bar.close()
    stop.restore()
    checkpoints.wait()
    checkpoints.close()
    logger.close()
    final["best_valid_bleu"] = best_bleu
    return final
