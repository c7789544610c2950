"""Training: loss goes down, checkpoints round-trip exactly, a resumed run equals an uninterrupted one."""

import os
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.data import batching
from s2s_jax.models.seq2seq import make_model
from s2s_jax.training import loop
from s2s_jax.training.optimizers import make_optimizer
from s2s_jax.training.train_log import read_metrics
from s2s_jax.workdir import checkpoints as ckpt_lib
from tests.helpers import tiny_config, write_tiny_corpus


@pytest.fixture(scope="module")
def setup():
    config = tiny_config({}, learning_rate=1e-2, num_steps=100, warmup_steps=1)
    model = make_model(config, 20, 20)
    optimizer = make_optimizer(config.train)
    step = loop.make_train_step(model, optimizer, label_smoothing=0.1)
    rng = np.random.default_rng(0)
    tgt = rng.integers(3, 20, (8, 6)).astype(np.int32)
    batch = {
        "src": rng.integers(3, 20, (8, 7)).astype(np.int32),
        "tgt_in": np.concatenate([np.ones((8, 1), np.int32), tgt], axis=1),
        "tgt_out": np.concatenate([tgt, np.full((8, 1), 2, np.int32)], axis=1),
    }
    batch["src"][:3, 5:] = 0
    return model, optimizer, step, batch


def test_training_lowers_the_loss_on_a_fixed_batch(setup):
    model, optimizer, step, batch = setup
    state = loop.init_train_state(model, optimizer, seed=0)
    key = jax.random.key(0)
    losses = []
    for _ in range(30):
        state, m = step(state, batch, key)
        losses.append(float(m["loss_sum"] / m["tokens"]))
    assert losses[-1] < 0.65 * losses[0], losses
    assert int(state["step"]) == 30


def test_checkpoint_round_trip_gives_identical_params_and_next_loss(setup, tmp_path):
    model, optimizer, step, batch = setup
    key = jax.random.key(0)
    state = loop.init_train_state(model, optimizer, seed=1)
    for _ in range(3):
        state, _ = step(state, batch, key)
    saver = ckpt_lib.Checkpoints(str(tmp_path), max_to_keep=2)
    saver.save(3, state, {"data_state": {"epoch": 0, "index": 3}, "step": 3})
    saver.wait()
    fresh = loop.init_train_state(model, optimizer, seed=2)
    restored, meta = ckpt_lib.Checkpoints(str(tmp_path), 2).restore(fresh)
    assert meta["data_state"] == {"epoch": 0, "index": 3}
    jax.tree.map(np.testing.assert_array_equal, restored, jax.device_get(state))
    copy = jax.tree.map(jnp.array, state)
    _, m1 = step(copy, batch, key)
    _, m2 = step(restored, batch, key)
    assert float(m1["loss_sum"]) == float(m2["loss_sum"])


@pytest.mark.slow
def test_accumulating_four_micro_batches_equals_one_batch_of_them_all():
    """4 x 32 rows, accumulated, make the update one batch of 128 rows makes (dropout 0; the loss
    normalised by all micro-batches' target tokens together, which differ per micro-batch)."""
    config = tiny_config({}, learning_rate=1e-2, warmup_steps=0)
    config.model.dropout = 0.0
    model = make_model(config, 20, 20)
    optimizer = make_optimizer(config.train)
    rng = np.random.default_rng(3)
    tgt = rng.integers(3, 20, (128, 9)).astype(np.int32)
    tgt[np.arange(9)[None, :] >= rng.integers(1, 10, (128, 1))] = 0  # lengths 1..9: micro-batches differ
    batch = {
        "src": rng.integers(3, 20, (128, 7)).astype(np.int32),
        "tgt_in": np.concatenate([np.ones((128, 1), np.int32), tgt[:, :-1]], axis=1),
        "tgt_out": tgt,
    }
    key = jax.random.key(0)
    one = loop.make_train_step(model, optimizer)
    accumulating = loop.make_accumulating_train_step(model, optimizer)
    state = loop.init_train_state(model, optimizer, seed=0)
    copy = jax.tree.map(jnp.array, state)
    want, m1 = one(state, batch, key)
    micro = [{k: v[i * 32 : (i + 1) * 32] for k, v in batch.items()} for i in range(4)]
    got, m2 = accumulating(copy, micro, key)
    assert float(m2["tokens"]) == float(m1["tokens"]) == float((tgt != 0).sum())
    np.testing.assert_allclose(float(m2["loss_sum"]), float(m1["loss_sum"]), rtol=1e-5)
    np.testing.assert_allclose(float(m2["grad_norm"]), float(m1["grad_norm"]), rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), got["params"], want["params"])
    assert int(got["step"]) == 1


def test_the_ema_warmup_decay_follows_its_formula_and_never_exceeds_the_decay():
    got = [float(loop.ema_decay_at(t, 0.998, True)) for t in (0, 8, 90, 10_000)]
    np.testing.assert_allclose(got, [0.1, 0.5, 0.91, 0.998], rtol=1e-6)
    assert loop.ema_decay_at(0, 0.998, False) == 0.998


def test_with_the_warmup_the_first_update_moves_the_ema_nine_tenths_of_the_way(setup):
    model, optimizer, _, batch = setup
    key = jax.random.key(0)
    state = loop.init_train_state(model, optimizer, seed=1, ema=True)
    start = jax.tree.map(jnp.array, state["params"])
    step = loop.make_train_step(model, optimizer, ema_decay=0.998, ema_warmup=True)
    moved, _ = step(state, batch, key)
    jax.tree.map(
        lambda e, old, new: np.testing.assert_allclose(e, 0.1 * old + 0.9 * new, rtol=1e-5, atol=1e-7),
        moved["ema"],
        start,
        moved["params"],
    )


@pytest.mark.slow
def test_an_ema_with_decay_0_is_the_parameters_and_averaging_copies_gives_them_back(setup, tmp_path):
    model, optimizer, _, batch = setup
    key = jax.random.key(0)
    state = loop.init_train_state(model, optimizer, seed=1, ema=True)
    step = loop.make_train_step(model, optimizer, label_smoothing=0.1, ema_decay=0.0)
    for _ in range(3):
        state, _ = step(state, batch, key)
    jax.tree.map(np.testing.assert_array_equal, state["ema"], state["params"])
    slow = loop.make_train_step(model, optimizer, label_smoothing=0.1, ema_decay=0.5)
    moved, _ = slow(jax.tree.map(jnp.array, state), batch, key)
    jax.tree.map(
        lambda e, old, new: np.testing.assert_allclose(e, 0.5 * old + 0.5 * new, rtol=1e-6, atol=1e-7),
        moved["ema"],
        state["params"],
        moved["params"],
    )
    # --checkpoint avg:K: K copies of one checkpoint give it back exactly; the mean of two is their mean.
    saver = ckpt_lib.Checkpoints(str(tmp_path), max_to_keep=5)
    for number in (1, 2, 3):
        saver.save(number, state, {"step": number})
    saver.save(4, moved, {"step": 4})
    saver.close()
    three, meta = ckpt_lib.load_params(str(tmp_path), "3")
    jax.tree.map(np.testing.assert_array_equal, three, jax.device_get(state["ema"]))  # the EMA is what decodes
    same, _ = ckpt_lib.load_params(str(tmp_path), "3")
    shutil.rmtree(os.path.join(str(tmp_path), "checkpoints", "4"))
    averaged, meta = ckpt_lib.load_params(str(tmp_path), "avg:3")
    jax.tree.map(np.testing.assert_array_equal, averaged, same)
    assert meta["averaged_steps"] == [1, 2, 3] and meta["step"] == 3
    with pytest.raises(ckpt_lib.CheckpointError, match="avg:4 needs 4 checkpoints"):
        ckpt_lib.load_params(str(tmp_path), "avg:4")
    with pytest.raises(ckpt_lib.CheckpointError, match="avg:K"):
        ckpt_lib.load_params(str(tmp_path), "avg:0")


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["loss", "bleu"])
def test_best_follows_the_early_stop_metric_and_plateau_halves_the_rate(tmp_path, metric):
    """best/ holds the evaluation with the best train.early_stop_metric; with lr_schedule=plateau
    every evaluation that does not improve it halves the learning rate of the steps after it."""
    paths = write_tiny_corpus(str(tmp_path))
    lr = 1e-2 if metric == "loss" else 1e-6  # 1e-6: BLEU cannot move, so every later evaluation halves
    config = tiny_config(
        paths,
        num_steps=8,
        eval_every=2,
        checkpoint_every=2,
        log_every=1,
        lr_schedule="plateau",
        early_stop_metric=metric,
        learning_rate=lr,
        warmup_steps=0,
    )
    result = loop.train_and_evaluate(config, str(tmp_path / "w"))
    records = read_metrics(str(tmp_path / "w"))
    key = "valid_loss" if metric == "loss" else "valid_bleu"
    evals = [(r["step"], r[key]) for r in records if key in r]
    assert [s for s, _ in evals] == [2, 4, 6, 8]
    better = (lambda a, b: a < b) if metric == "loss" else (lambda a, b: a > b)
    best, best_step, scale, halvings = None, None, 1.0, 0
    rates = {r["step"]: r["learning_rate"] for r in records}
    for step, value in evals:
        np.testing.assert_allclose(rates[step], lr * scale, rtol=1e-6)  # the rate of step `step` itself
        if best is None or better(value, best):
            best, best_step = value, step
        else:
            scale, halvings = scale * 0.5, halvings + 1
        if step + 1 in rates:
            np.testing.assert_allclose(rates[step + 1], lr * scale, rtol=1e-6)
    assert ckpt_lib.load_params(str(tmp_path / "w"), "best")[1]["step"] == best_step
    assert (
        result.best_valid_bleu == [r["valid_bleu"] for r in records if r["step"] == best_step and "valid_bleu" in r][0]
    )
    if metric == "bleu":
        assert halvings == 3


def test_averaging_two_checkpoints_is_their_mean(setup, tmp_path):
    model, optimizer, step, batch = setup
    key = jax.random.key(0)
    a = loop.init_train_state(model, optimizer, seed=1)
    b, _ = step(jax.tree.map(jnp.array, a), batch, key)
    saver = ckpt_lib.Checkpoints(str(tmp_path), max_to_keep=5)
    saver.save(1, a, {"step": 1})
    saver.save(2, b, {"step": 2})
    saver.close()
    mean, _ = ckpt_lib.load_params(str(tmp_path), "avg:2")
    jax.tree.map(
        lambda m, x, y: np.testing.assert_allclose(m, (np.float64(x) + np.float64(y)) / 2, rtol=1e-7),
        mean,
        jax.device_get(a["params"]),
        jax.device_get(b["params"]),
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"accum_steps": 2},
        {"ema_decay": 0.9},
        {"lr_schedule": "plateau", "early_stop_metric": "loss"},
        {"model.cell": "gru", "model.bidirectional": True, "model.attention": "luong_general"},
        {"data.spm_alpha": 0.5, "max_tokens": 300},
    ],
    ids=["plain", "accum2", "ema", "plateau", "gru", "sampled-tokens"],
)
def test_train_and_evaluate_writes_a_workdir_and_resumes_bit_for_bit(tmp_path, overrides):
    paths = write_tiny_corpus(str(tmp_path))
    config = tiny_config(paths, **{k: v for k, v in overrides.items() if "." not in k})
    for key, value in overrides.items():
        if "." in key:
            section, name = key.split(".")
            setattr(config[section], name, value)
    full = str(tmp_path / "full")
    os.makedirs(full)
    result = loop.train_and_evaluate(config, full)
    assert result.outcome is loop.Outcome.FINISHED and result.steps_run == 6
    final = result.metrics
    assert np.isfinite(final["valid_loss"]) and 0.0 <= final["valid_bleu"] <= 100.0
    for name in ("spm.model", "metrics.jsonl", "checkpoints", "best", "tensorboard"):
        assert os.path.exists(os.path.join(full, name)), name
    records = read_metrics(full)
    assert [r["step"] for r in records] == [2, 3, 4, 6]
    assert {"train_loss", "tokens_per_sec"} <= set(records[0])
    assert {"valid_loss", "valid_bleu", "valid_chrf"} <= set(records[1])

    # Simulate a crash after step 3: drop the step-6 checkpoint and rerun the same command.
    resumed = str(tmp_path / "resumed")
    shutil.copytree(full, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", "6"))
    loop.train_and_evaluate(config, resumed)
    a, _ = ckpt_lib.load_params(full, "latest")
    b, _ = ckpt_lib.load_params(resumed, "latest")
    jax.tree.map(np.testing.assert_array_equal, a, b)
    drop_speed = lambda rs: [{k: v for k, v in r.items() if k != "tokens_per_sec"} for r in rs]  # noqa: E731
    assert drop_speed(read_metrics(resumed)) == drop_speed(records)


@pytest.mark.slow
def test_a_resume_behind_a_newer_best_decides_as_the_uninterrupted_run(tmp_path):
    """Killed after best/ took step 8 but before checkpoint 8 was written: the rerun resumes from
    step 4 and must judge steps 6 and 8 against the best as of step 4 (not step 8's), or plateau
    halves the rate where the uninterrupted run did not."""
    paths = write_tiny_corpus(str(tmp_path))
    config = tiny_config(
        paths,
        num_steps=8,
        eval_every=2,
        checkpoint_every=4,
        log_every=1,
        lr_schedule="plateau",
        early_stop_metric="loss",
        learning_rate=1e-2,
        warmup_steps=0,
    )
    full = str(tmp_path / "full")
    loop.train_and_evaluate(config, full)
    records = read_metrics(full)
    losses = [r["valid_loss"] for r in records if "valid_loss" in r]
    assert ckpt_lib.load_params(full, "best")[1]["step"] == 8 and losses == sorted(losses, reverse=True)
    killed = str(tmp_path / "killed")
    shutil.copytree(full, killed)
    shutil.rmtree(os.path.join(killed, "checkpoints", "8"))
    loop.train_and_evaluate(config, killed)
    drop_speed = lambda rs: [{k: v for k, v in r.items() if k != "tokens_per_sec"} for r in rs]  # noqa: E731
    assert drop_speed(read_metrics(killed)) == drop_speed(records)
    jax.tree.map(
        np.testing.assert_array_equal,
        ckpt_lib.load_params(full, "latest")[0],
        ckpt_lib.load_params(killed, "latest")[0],
    )


@pytest.mark.slow
def test_an_exception_inside_the_loop_restores_signal_handlers_and_leaves_the_last_checkpoint_readable(
    tmp_path, monkeypatch
):
    paths = write_tiny_corpus(str(tmp_path))
    config = tiny_config(paths, eval_every=1000)  # checkpoints at steps 3 and 6; nothing to evaluate
    config.data.num_buckets = 1  # one batch shape: one compiled step
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    next_batch, taken = batching.TrainIterator.__next__, []

    def failing_next(self):
        taken.append(1)
        if len(taken) == 5:  # fetching step 5's batch
            raise RuntimeError("disk went away")
        return next_batch(self)

    monkeypatch.setattr(batching.TrainIterator, "__next__", failing_next)

    def caller_handler(signum, frame):  # what an embedding program (a notebook, a test) installed
        pass

    previous = {sig: signal.signal(sig, caller_handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(RuntimeError, match="disk went away"):
            loop.train_and_evaluate(config, workdir)
        assert signal.getsignal(signal.SIGINT) is caller_handler
        assert signal.getsignal(signal.SIGTERM) is caller_handler
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    params, meta = ckpt_lib.load_params(workdir, "latest")
    assert meta["step"] == 3
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
