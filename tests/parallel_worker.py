"""Run by tests/test_parallel.py in subprocesses whose XLA_FLAGS fix the CPU device count.

    python -m tests.parallel_worker OUT.npz BASE_DIR [--bf16] [--decode_workdir DIR]
        [--resume_from DIR] [--skip_decode]

Trains the tiny config with `train_and_evaluate` (every device, as train.py does) in
BASE_DIR/f32 and writes to OUT.npz: per-step training losses, the final parameters,
how one batch was placed on the devices, greedy and beam translations (with
--decode_workdir's checkpoint, so that two device counts decode with the very same
parameters), and the error for a batch size the devices do not divide.
--resume_from DIR continues DIR's run from its step-20 checkpoint to the end on this
device count. --bf16 also trains with train.dtype=bfloat16 and records the dtypes of
parameters, optimizer state, loss and activations. Under jax.distributed (the test
sets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) only process 0
writes OUT.npz.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

import jax
import numpy as np

from s2s_jax import errors, parallel
from s2s_jax.cli import runtime
from s2s_jax.data import training_data
from s2s_jax.decoding.translator import SearchOptions, Translator
from s2s_jax.models.seq2seq import make_model
from s2s_jax.training import loop
from s2s_jax.training.optimizers import make_optimizer
from s2s_jax.training.train_log import read_metrics
from s2s_jax.workdir import checkpoints as ckpt_lib
from s2s_jax.workdir import run_config
from tests.helpers import tiny_config, write_tiny_corpus

STEPS = 40


def config_for(paths, dtype="float32"):
    config = tiny_config(
        paths,
        num_steps=STEPS,
        log_every=1,
        eval_every=STEPS,
        checkpoint_every=STEPS // 2,
        learning_rate=1e-2,
        dtype=dtype,
        num_samples=0,
    )
    config.data.num_buckets = 1  # one batch shape: one compile of each step
    config.model.num_layers = 1
    config.model.skip_padding = False  # as several devices run: the runs compare like with like
    config.decode.batch_size = 12  # validation batches of 12 rows: padded to 16 on 8 devices
    return config


def train(paths, workdir, dtype="float32"):
    """train_and_evaluate as train.py runs it -> (losses per step, final record, params, seconds)."""
    config = config_for(paths, dtype)
    with parallel.main_process_first("workdir"):
        os.makedirs(workdir, exist_ok=True)
        run_config.check_and_save(config, workdir)
    start = time.perf_counter()
    final = loop.train_and_evaluate(config, workdir).metrics
    seconds = time.perf_counter() - start
    records = read_metrics(workdir) if parallel.is_main_process() else []  # process 0 writes metrics
    losses = np.array([r["train_loss"] for r in records if "train_loss" in r])
    params, _ = ckpt_lib.load_params(workdir, "latest")
    return losses, final, params, seconds


def add_params(result, prefix, params):
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        result[f"{prefix}{jax.tree_util.keystr(path)}"] = np.asarray(leaf)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("base")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--decode_workdir", default=None)
    parser.add_argument("--resume_from", default=None)
    parser.add_argument("--skip_decode", action="store_true")
    args = parser.parse_args()
    parallel.maybe_initialize_distributed()  # several processes only when the environment says so
    runtime.setup()  # the persistent compile cache ($S2S_JAX_CACHE), as train.py uses it
    with parallel.main_process_first("tiny corpus"):
        paths = write_tiny_corpus(args.base)
    result: dict = {"device_count": jax.device_count(), "process_count": jax.process_count()}

    f32_dir = os.path.join(args.base, "f32")
    losses, final, params, seconds = train(paths, f32_dir)
    result.update(losses=losses, train_seconds=seconds, valid_loss=final["valid_loss"])
    add_params(result, "param:", params)

    # How one training batch lands on the devices.
    mesh = parallel.make_mesh()
    corpus = training_data.prepare(config_for(paths), f32_dir, verbose=False)
    src = parallel.shard_batch(mesh, next(corpus.train_iterator()))["src"]
    result["batch_rows"] = src.shape[0]
    result["shard_rows"] = np.array([shard.data.shape[0] for shard in src.addressable_shards])
    result["shard_starts"] = np.array([shard.index[0].start or 0 for shard in src.addressable_shards])
    result["shard_devices"] = np.array([shard.device.id for shard in src.addressable_shards])
    result["batch_spec"] = str(src.sharding.spec)

    if jax.device_count() > 1:  # a global batch the devices do not divide
        bad = config_for(paths)
        bad.train.batch_size = 12
        try:
            loop.train_and_evaluate(bad, os.path.join(args.base, "bad"))
            result["batch_error"] = ""
        except errors.ConfigError as err:
            result["batch_error"] = str(err)

    if args.resume_from:  # continue another device count's run from its step-20 checkpoint
        resumed = os.path.join(args.base, "resumed")
        with parallel.main_process_first("resume copy"):
            if parallel.is_main_process():
                shutil.copytree(args.resume_from, resumed)
                shutil.rmtree(os.path.join(resumed, "checkpoints", str(STEPS)))
        resumed_losses, _, resumed_params, _ = train(paths, resumed)
        result["resumed_losses"] = resumed_losses
        add_params(result, "resumed:", resumed_params)

    if not args.skip_decode:  # greedy and beam search over the validation sources
        translator = Translator(args.decode_workdir or f32_dir, "latest")
        with open(paths["valid_src"], encoding="utf-8") as f:
            lines = f.read().splitlines()
        for name, opts in (("greedy", SearchOptions()), ("beam", SearchOptions(beam_size=3))):
            hyps = translator.translate(lines, opts, batch_size=32)  # one batch: one compile
            result[f"decode_{name}"] = np.array([h[0].text for h in hyps])

    if args.bf16:
        # The same stream of batches and keys as train_and_evaluate, stepped by hand with
        # train.dtype=bfloat16 (its losses line up step for step with `losses`).
        config = config_for(paths, "bfloat16")
        model = make_model(config, corpus.src_tokenizer.vocab_size, corpus.tgt_tokenizer.vocab_size)
        optimizer = make_optimizer(config.train)
        state = loop.init_train_state(model, optimizer, config.seed)
        step = loop.make_train_step(model, optimizer, config.train.label_smoothing)
        iterator, key, bf16_losses = corpus.train_iterator(), jax.random.key(config.seed), []
        for _ in range(STEPS):
            state, metrics = step(state, next(iterator), key)
            bf16_losses.append(float(metrics["loss_sum"] / metrics["tokens"]))
        result["bf16_losses"] = np.array(bf16_losses)
        result["bf16_state_dtypes"] = np.array(sorted({str(x.dtype) for x in jax.tree.leaves(state) if x.ndim}))
        result["bf16_loss_dtype"] = str(metrics["loss_sum"].dtype)
        # ... while the activations really are bfloat16 (the encoder's LSTM outputs, for one).
        outputs, _, _ = model.apply(
            {"params": state["params"]}, next(iterator)["src"], method=lambda m, src: m.encoder(src, train=False)
        )
        result["bf16_activation_dtype"] = str(outputs.dtype)

    if parallel.is_main_process():
        np.savez(args.out, **result)


if __name__ == "__main__":
    main()
