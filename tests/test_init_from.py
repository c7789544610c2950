"""Fine-tuning (train.init_from) and reusing a sentencepiece model (data.spm_model)."""

import json
import os

import jax
import numpy as np
import pytest
import sentencepiece as spm

from s2s_jax.cli import train as train_cli
from s2s_jax.data import training_data
from s2s_jax.errors import ConfigError, DataError
from s2s_jax.training import init_from, loop
from s2s_jax.workdir import checkpoints, run_config
from tests.helpers import tiny_config, write_tiny_corpus


def equal_trees(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


@pytest.fixture(scope="module")
def second_corpus(tmp_path_factory):
    return write_tiny_corpus(str(tmp_path_factory.mktemp("corpus2")), n_train=120, n_valid=20, seed=1)


def fine_tune_config(source: str, paths: dict, **train):
    """The source run's config on new data, starting from the source.

    A constant rate: train.num_steps is then no constant of the compiled steps, so a run
    continued to more steps reuses them (each batch-length profile compiles a step).
    """
    config = run_config.load(source)
    for key, value in paths.items():
        setattr(config.data, key, value)
    config.train.init_from = source
    config.train.eval_every = config.train.checkpoint_every = config.train.log_every = 10
    config.train.warmup_steps = 0
    config.train.lr_schedule = "constant"
    for key, value in train.items():
        setattr(config.train, key, value)
    return config


def test_spec_parsing():
    parse = training_data.parse_init_from
    assert parse("runs/a") == ("runs/a", "best")
    assert parse("runs/a:latest") == ("runs/a", "latest")
    assert parse("runs/a:1500") == ("runs/a", "1500")
    assert parse("runs/a:avg:3") == ("runs/a", "avg:3")
    assert parse("C:/runs/a") == ("C:/runs/a", "best")  # a colon in the path stays in the path


def test_a_runs_tokenizers_come_from_one_source_in_order(tmp_path):
    """The workdir's own copies, else train.init_from's run's, else data.spm_model (none trained here)."""
    source, run = tmp_path / "source", tmp_path / "run"
    source.mkdir()
    (source / "spm.model").write_bytes(b"")
    config = tiny_config({}, init_from=f"{source}:latest")
    assert training_data.tokenizer_models(config, None, workdir=str(run)) == [str(source / "spm.model")]
    config.data.joint_vocab = False
    with pytest.raises(DataError, match="that run has one joint model; set data.joint_vocab=True"):
        training_data.tokenizer_models(config, None)
    run.mkdir()
    (run / "spm_src.model").write_bytes(b"")
    (run / "spm_tgt.model").write_bytes(b"")
    assert training_data.tokenizer_models(config, None, workdir=str(run)) == [
        str(run / "spm_src.model"),
        str(run / "spm_tgt.model"),
    ]
    config = tiny_config({})
    config.data.spm_model = str(source / "spm.model")
    assert training_data.tokenizer_models(config, None, workdir=str(tmp_path / "new")) == [config.data.spm_model]


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_the_initial_state_is_the_source_exactly(trained_workdir):
    source = trained_workdir.workdir
    config = run_config.load(source)
    from s2s_jax.data.tokenizer import load_workdir_tokenizers
    from s2s_jax.models.seq2seq import make_model
    from s2s_jax.training.optimizers import make_optimizer

    src_tok, tgt_tok = load_workdir_tokenizers(source)
    model = make_model(config, src_tok.vocab_size, tgt_tok.vocab_size)
    fresh = jax.device_get(loop.init_train_state(model, make_optimizer(config.train), seed=7))
    best, meta = checkpoints.load_params(source, "best")
    state = init_from.initial_state(source, fresh, keep_optimizer=False, workdir=None)
    assert equal_trees(state["params"], best) and int(state["step"]) == 0
    assert equal_trees(state["opt_state"], fresh["opt_state"])  # a fresh optimizer
    kept = init_from.initial_state(f"{source}:latest", fresh, keep_optimizer=True, workdir=None)
    latest, _ = checkpoints.load_train_state(source, checkpoints.load_params(source, "latest")[1]["step"], fresh)
    assert equal_trees(kept["params"], latest["params"]) and equal_trees(kept["opt_state"], latest["opt_state"])
    assert int(kept["step"]) == 0
    unclipped = run_config.load(source).train
    unclipped.clip_norm = 0.0  # its optimizer chain lacks the clipping step: another state structure
    with pytest.raises(ConfigError, match="train.clip_norm=1.0, this run with 0.0, so gradient clipping differs"):
        init_from.initial_state(f"{source}:latest", fresh, keep_optimizer=True, workdir=None, train_cfg=unclipped)


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_fine_tuning_starts_from_the_source_and_lowers_the_loss_on_new_data(trained_workdir, second_corpus, tmp_path):
    source = trained_workdir.workdir
    # A learning rate too small to move any float32 parameter: the run's parameters are the source's
    # (two steps: each new batch-length profile is a compile).
    still = str(tmp_path / "still")
    result = loop.train_and_evaluate(fine_tune_config(source, second_corpus, num_steps=2, learning_rate=1e-30), still)
    assert equal_trees(checkpoints.load_params(still, "latest")[0], checkpoints.load_params(source, "best")[0])
    before = result.metrics["valid_loss"]
    with open(os.path.join(still, "init_from.json"), encoding="utf-8") as f:
        assert json.load(f)["step"] == checkpoints.load_params(source, "best")[1]["step"]
    for name in ("spm.model", "spm.vocab"):
        with open(os.path.join(source, name), "rb") as a, open(os.path.join(still, name), "rb") as b:
            assert a.read() == b.read()
    tuned = str(tmp_path / "tuned")
    config = fine_tune_config(source, second_corpus, num_steps=20, learning_rate=0.01)
    after = loop.train_and_evaluate(config, tuned).metrics["valid_loss"]
    assert after < before - 0.05, (before, after)
    # A rerun resumes the fine-tuning run itself, even once the source is gone.
    os.rename(source, source + ".moved")
    try:
        config.train.num_steps = 30
        resumed = loop.train_and_evaluate(config, tuned)
    finally:
        os.rename(source + ".moved", source)
    assert resumed.steps_run == 10


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_a_different_model_shape_is_one_error_naming_the_keys(trained_workdir, second_corpus, tmp_path, capsys):
    config = fine_tune_config(trained_workdir.workdir, second_corpus, num_steps=5)
    config.model.hidden_size += 8
    assert train_cli.run(config, str(tmp_path / "w")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"error: train.init_from={trained_workdir.workdir}: the model shapes differ ("
    )
    assert "hidden" in err or "kernel" in err
    config = fine_tune_config(trained_workdir.workdir, second_corpus, num_steps=5, init_from=str(tmp_path / "nowhere"))
    assert train_cli.run(config, str(tmp_path / "w2")) == 1
    assert "is not a training workdir" in capsys.readouterr().err


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_an_existing_sentencepiece_model_is_copied_not_trained(trained_workdir, second_corpus, tmp_path, capsys):
    config = run_config.load(trained_workdir.workdir)
    for key, value in second_corpus.items():
        setattr(config.data, key, value)
    config.data.spm_model = os.path.join(trained_workdir.workdir, "spm.model")
    config.train.num_steps = config.train.eval_every = config.train.checkpoint_every = 2
    workdir = str(tmp_path / "reuse")
    status = train_cli.run(config, workdir)
    assert status == 0, capsys.readouterr().err
    capsys.readouterr()
    with open(config.data.spm_model, "rb") as a, open(os.path.join(workdir, "spm.model"), "rb") as b:
        assert a.read() == b.read()
    # A model with sentencepiece's default special ids is refused with the existing clear error.
    with open(second_corpus["train_src"], encoding="utf-8") as f:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(f.read().splitlines()),
            model_prefix=str(tmp_path / "plain"),
            vocab_size=30,
            minloglevel=2,
        )
    config.data.spm_model = str(tmp_path / "plain.model")
    assert train_cli.run(config, str(tmp_path / "refused")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plain.model: special ids are" in err
    config.data.joint_vocab = False
    assert train_cli.run(config, str(tmp_path / "w3")) == 1
    assert "data.spm_model is one joint model" in capsys.readouterr().err


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_a_run_that_keeps_the_optimizer_logs_the_rate_its_schedule_gives_at_the_sources_step(
    trained_workdir, second_corpus, tmp_path
):
    """With train.init_keep_optimizer the optimizer's step count goes on from the source's, and so
    does the schedule: the logged learning rate is the one at source step + step."""
    from s2s_jax.training.optimizers import learning_rate_schedule
    from s2s_jax.training.train_log import read_metrics

    source = trained_workdir.workdir
    config = fine_tune_config(source, second_corpus, num_steps=2, init_keep_optimizer=True, log_every=1)
    config.train.lr_schedule, config.train.warmup_steps = "cosine", 100  # a rate that differs step by step
    tuned = str(tmp_path / "kept")
    loop.train_and_evaluate(config, tuned)
    with open(os.path.join(tuned, "init_from.json"), encoding="utf-8") as f:
        offset = json.load(f)["step"]  # the source checkpoint's
    schedule = learning_rate_schedule(config.train)
    logged = [(r["step"], r["learning_rate"]) for r in read_metrics(tuned) if "learning_rate" in r]
    assert logged == [(s, pytest.approx(float(schedule(offset + s - 1)), rel=1e-6)) for s in (1, 2)]
    assert offset > 0 and float(schedule(offset)) != pytest.approx(float(schedule(0)))
