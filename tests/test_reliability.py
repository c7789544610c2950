"""Crashes, interrupts, damaged checkpoints, NaN losses and hostile text.

Every run here is train.py / decode.py as a user runs them (subprocesses) on the
tiny corpus, sharing one XLA compile cache, plus in-process checks of what those
runs left behind. A killed-and-rerun training must equal an uninterrupted one
bit for bit.
"""

import glob
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from s2s_jax.cli import decode
from s2s_jax.training.train_log import read_metrics
from s2s_jax.workdir import checkpoints as ckpt_lib
from tests.helpers import cli_cache, decode_flags, fill_disk, flip_bytes, tmpfs, write_tiny_corpus

pytestmark = pytest.mark.slow  # train.py/decode.py subprocesses, killed and rerun

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = [
    "--config=configs/default.py",
    "--config.data.vocab_size=60",
    "--config.data.max_len=16",
    "--config.data.num_buckets=2",
    "--config.model.emb_dim=16",
    "--config.model.hidden_size=24",
    "--config.model.num_layers=1",
    "--config.model.dropout=0.1",  # dropout keys must line up across a resume too
    "--config.train.batch_size=16",
    "--config.train.num_steps=30",
    "--config.train.learning_rate=0.01",
    "--config.train.warmup_steps=5",
    "--config.train.log_every=5",
    "--config.train.eval_every=15",
    "--config.train.checkpoint_every=10",
    "--config.train.max_to_keep=3",
    "--config.train.num_samples=0",
    "--config.decode.max_len_b=4",
    "--config.decode.batch_size=16",
]

# train.py with every batch slowed by 0.1 s, so that a signal can land mid-run. The
# sleep is outside the computation: numerics are those of plain train.py.
SLOW_TRAIN = (
    "import runpy, sys, time\n"
    "from s2s_jax.data import batching\n"
    "_next = batching.TrainIterator.__next__\n"
    "def _slow_next(self):\n"
    "    time.sleep(0.1)\n"
    "    return _next(self)\n"
    "batching.TrainIterator.__next__ = _slow_next\n"
    "sys.argv = ['train.py', *sys.argv[1:]]\n"
    "runpy.run_path('train.py', run_name='__main__')\n"
)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("reliability")
    paths = write_tiny_corpus(str(base))
    data_flags = [f"--config.data.{key}={path}" for key, path in paths.items()]
    process_env = dict(os.environ, S2S_JAX_CACHE=cli_cache(), JAX_PLATFORMS="cpu", OPENBLAS_NUM_THREADS="1")
    return types.SimpleNamespace(base=base, flags=FLAGS + data_flags, env=process_env)


# train.py on a disk that fills up just before the checkpoint of step FILL_AT_STEP: what is
# left free on FILL_DIR's file system (FILL_LEAVE bytes) is too little for a checkpoint.
FULL_DISK_TRAIN = (
    "import os, runpy, sys\n"
    "from s2s_jax.workdir import checkpoints\n"
    "from tests.helpers import fill_disk\n"
    "_save = checkpoints.Checkpoints.save\n"
    "def _save_on_a_full_disk(self, step, state, meta):\n"
    "    if step == int(os.environ['FILL_AT_STEP']):\n"
    "        fill_disk(os.environ['FILL_DIR'], int(os.environ['FILL_LEAVE']))\n"
    "    return _save(self, step, state, meta)\n"
    "checkpoints.Checkpoints.save = _save_on_a_full_disk\n"
    "sys.argv = ['train.py', *sys.argv[1:]]\n"
    "runpy.run_path('train.py', run_name='__main__')\n"
)


def train(env, workdir, *extra, slow=False, background=False, script=None, more_env=None):
    head = ["-c", script or SLOW_TRAIN] if slow or script else ["train.py"]
    args = [sys.executable, *head, *env.flags, f"--workdir={workdir}", *extra]
    process_env = dict(env.env, **(more_env or {}))
    if background:
        return subprocess.Popen(
            args, cwd=ROOT, env=process_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(args, cwd=ROOT, env=process_env, capture_output=True, text=True, timeout=600)


def wait_for(path, process, timeout=300.0, containing=None):
    def ready():
        if not os.path.exists(path):
            return False
        if containing is None:
            return True
        with open(path, encoding="utf-8") as f:
            return containing in f.read()

    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"training ended (rc {process.returncode}) before {path} appeared:\n{out}\n{err[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path} did not appear in {timeout} s")
        time.sleep(0.02)


def assert_same_params(workdir_a, workdir_b):
    a, meta_a = ckpt_lib.load_params(str(workdir_a), "latest")
    b, meta_b = ckpt_lib.load_params(str(workdir_b), "latest")
    assert meta_a["step"] == meta_b["step"] == 30
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def without_speed(workdir):
    return [{k: v for k, v in r.items() if k != "tokens_per_sec"} for r in read_metrics(str(workdir))]


def clean_stderr(stderr):
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "Event loop is closed" not in stderr, stderr[-3000:]


@pytest.fixture(scope="module")
def reference(env):
    """The uninterrupted run every interrupted one must reproduce."""
    workdir = env.base / "reference"
    result = train(env, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.mark.parametrize("rerun_cache", ["same", "new"], ids=["same-prepared-corpus", "corpus-prepared-again"])
def test_sigkill_then_rerun_equals_an_uninterrupted_run(env, reference, rerun_cache):
    """Also when the rerun finds no prepared corpus (another machine, a cleared cache): it prepares the
    same ids again (with the workdir's tokenizer) and resumes the same batch stream."""
    workdir = env.base / f"killed-{rerun_cache}"
    process = train(env, workdir, slow=True, background=True)
    # Kill after step 15 was logged (and evaluated) but before the step-20 checkpoint, so the
    # rerun resumes from step 10 and must recompute, not duplicate, steps 11..15.
    wait_for(workdir / "metrics.jsonl", process, containing='{"step": 15,')
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert not (workdir / "checkpoints" / "20").exists(), "the kill came too late to test anything"
    assert 15 in [r["step"] for r in read_metrics(str(workdir))]

    fresh = {"S2S_JAX_CORPUS_CACHE": str(env.base / "rerun-corpora")} if rerun_cache == "new" else None
    result = train(env, workdir, more_env=fresh)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from step 10 " in result.stdout
    assert ("prepare: cleaning" in result.stdout) == (rerun_cache == "new")
    clean_stderr(result.stderr)
    assert_same_params(reference, workdir)
    assert without_speed(workdir) == without_speed(reference)


def test_sigterm_checkpoints_says_how_to_resume_and_resumes_exactly(env, reference):
    workdir = env.base / "terminated"
    process = train(env, workdir, slow=True, background=True)
    wait_for(workdir / "checkpoints" / "10", process)
    time.sleep(0.15)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    clean_stderr(err)
    match = re.search(r"SIGTERM: stopped after step (\d+) with a checkpoint; run the same command to resume", out)
    assert match, out
    stopped = int(match.group(1))
    assert 10 <= stopped < 30
    assert (workdir / "checkpoints" / str(stopped)).is_dir()
    assert max(r["step"] for r in read_metrics(str(workdir))) == stopped
    assert not (workdir / "final_metrics.json").exists()

    result = train(env, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resumed from step {stopped} " in result.stdout
    assert_same_params(reference, workdir)


def test_rerunning_a_finished_run_changes_nothing(env, reference):
    workdir = env.base / "finished"
    shutil.copytree(reference, workdir)
    before = (workdir / "final_metrics.json").read_text(encoding="utf-8")
    result = train(env, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from step 30 " in result.stdout
    assert f"nothing to do: {workdir} is already trained to train.num_steps=30" in result.stdout
    assert (workdir / "final_metrics.json").read_text(encoding="utf-8") == before
    assert without_speed(workdir) == without_speed(reference)


def _truncate_arrays(step_dir):
    files = glob.glob(str(step_dir / "state" / "**" / "d" / "*"), recursive=True)
    assert files, f"no array files under {step_dir}: has orbax's layout changed?"
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 3)


def test_a_save_killed_midway_leaves_the_previous_checkpoint_usable(env, reference, capsys):
    workdir = env.base / "damaged"
    shutil.copytree(reference, workdir)
    ckpts = workdir / "checkpoints"
    assert sorted(os.listdir(ckpts)) == ["10", "20", "30"]
    # The save of step 30 was killed before orbax renamed its temporary directory ...
    partial = ckpts / "30.orbax-checkpoint-tmp-1795336215"
    shutil.move(ckpts / "30", partial)
    for done in glob.glob(str(partial / "**" / "commit_success.txt"), recursive=True):
        os.remove(done)
    # ... and step 20 was finalised but its array files are cut short (a disk error).
    _truncate_arrays(ckpts / "20")

    # Decoding from 'latest' falls back to step 10, with a warning; the damaged step is an error.
    params, meta = ckpt_lib.load_params(str(workdir), "latest")
    assert meta["step"] == 10
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(params))
    err = capsys.readouterr().err
    assert "warning: checkpoint 20" in err and "unreadable" in err and "using step 10" in err
    with pytest.raises(ckpt_lib.CheckpointError, match="no readable checkpoint"):
        ckpt_lib.load_params(str(workdir), "20")
    with pytest.raises(ckpt_lib.CheckpointError, match=r"no checkpoint for step 30 .*available: 10, 20"):
        ckpt_lib.load_params(str(workdir), "30")
    text = env.base / "decode_in.txt"
    text.write_text("the red cat\n\na dog\n", encoding="utf-8")
    assert decode.run(decode_flags(workdir, checkpoint="latest", input=str(text))) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 3 and "warning: checkpoint 20" in err and "using step 10" in err

    result = train(env, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    clean_stderr(result.stderr)
    assert "Resumed from step 10 " in result.stdout
    assert re.search(r"warning: checkpoint 20 is unreadable .*moved it to .*unreadable_checkpoints", result.stderr)
    assert [os.path.basename(p) for p in glob.glob(str(workdir / "unreadable_checkpoints" / "*"))] != []
    assert sorted(os.listdir(ckpts)) == ["10", "20", "30"]  # the leftover temporary directory is gone
    assert_same_params(reference, workdir)
    assert without_speed(workdir) == without_speed(reference)


def test_a_damaged_best_checkpoint_falls_back_or_is_replaced(env, reference, capsys):
    workdir = env.base / "damaged_best"
    shutil.copytree(reference, workdir)
    (best,) = glob.glob(str(workdir / "best" / "*"))
    for path in glob.glob(os.path.join(best, "params", "**", "d", "*"), recursive=True):
        with open(path, "r+b") as f:
            f.truncate(3)
    _, meta = ckpt_lib.load_params(str(workdir), "best")  # decode.py's default
    assert meta["step"] == 30
    assert "unreadable" in capsys.readouterr().err
    with open(os.path.join(best, "meta", "metadata"), "w", encoding="utf-8") as f:
        f.write('{"valid_bl')
    checkpoints = ckpt_lib.Checkpoints(str(workdir), 3)
    assert checkpoints.best_meta() is None  # training then writes a new best at its next evaluation
    assert checkpoints.best.all_steps() == []
    checkpoints.close()
    err = capsys.readouterr().err
    assert re.search(r"warning: best checkpoint \d+ is unreadable .*moved it to .*unreadable_checkpoints", err)


def test_no_readable_checkpoint_is_a_clear_error_and_moves_nothing(env, reference):
    workdir = env.base / "all_damaged"
    shutil.copytree(reference, workdir)
    for step in ("10", "20", "30"):
        _truncate_arrays(workdir / "checkpoints" / step)
    with pytest.raises(ckpt_lib.CheckpointError, match=r"no readable checkpoint .*step 30: .*step 10: "):
        ckpt_lib.load_params(str(workdir), "latest")
    result = train(env, workdir)
    assert result.returncode == 1
    assert re.search(r"error: no readable checkpoint in .*checkpoints \(step 30: ", result.stderr)
    clean_stderr(result.stderr)
    assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "20", "30"]


def test_a_checkpoint_changed_on_disk_is_never_used_and_training_resumes_before_it(env, reference, capsys):
    workdir = env.base / "storage_lies"
    shutil.copytree(reference, workdir)
    flipped = flip_bytes(workdir / "checkpoints" / "30", "state")
    (best,) = glob.glob(str(workdir / "best" / "*"))
    flipped_best = flip_bytes(workdir / "best" / os.path.basename(best), "params")

    text = env.base / "lies_in.txt"
    text.write_text("the red cat\na dog\n", encoding="utf-8")
    assert decode.run(decode_flags(workdir, checkpoint="best", input=str(text))) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 2
    assert f"(ChecksumMismatch: {flipped_best} differs from what the save wrote" in err
    assert f"warning: checkpoint 30 in {workdir / 'checkpoints'} is unreadable (ChecksumMismatch: {flipped} " in err
    assert "using step 20" in err

    result = train(env, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    clean_stderr(result.stderr)
    assert "Resumed from step 20 " in result.stdout
    assert re.search(
        rf"warning: checkpoint 30 is unreadable \(ChecksumMismatch: {re.escape(flipped)} .*moved it to "
        r".*unreadable_checkpoints",
        result.stderr,
    ), result.stderr[-3000:]
    assert "warning: best checkpoint " in result.stderr  # moved aside too; step 30's evaluation wrote a new one
    assert_same_params(reference, workdir)
    assert without_speed(workdir) == without_speed(reference)


def _disk_full_error(stderr, directory):
    """The run's one `error:` line, which names `directory`; nothing else went wrong loudly."""
    clean_stderr(stderr)
    assert "ERROR" not in stderr and "warning:" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: "), stderr[-3000:]
    assert str(directory) in errors[0], errors[0]
    return errors[0]


def test_a_full_disk_stops_training_with_one_line_and_a_rerun_resumes_exactly(env, reference):
    with tmpfs(env.base / "small_disk", 32 << 20) as disk:
        workdir = os.path.join(disk, "run")
        leave = 16 << 10  # room for the log lines, not for a checkpoint
        needs = sum(
            os.path.getsize(p)
            for p in glob.glob(str(reference / "checkpoints" / "10" / "**"), recursive=True)
            if os.path.isfile(p)
        )
        assert needs > 4 * leave
        result = train(
            env,
            workdir,
            script=FULL_DISK_TRAIN,
            more_env={"FILL_AT_STEP": "20", "FILL_DIR": disk, "FILL_LEAVE": str(leave)},
        )
        assert result.returncode == 1, result.stderr[-3000:]
        line = _disk_full_error(result.stderr, os.path.join(workdir, "checkpoints"))
        assert "no space left on the device of" in line and "saving checkpoint 20 failed" in line
        assert "free space there, then run the same command" in line
        assert ckpt_lib.load_params(workdir, "latest")[1]["step"] == 10  # the previous checkpoint is intact

        os.remove(os.path.join(disk, "filler"))
        result = train(env, workdir)
        assert result.returncode == 0, result.stderr[-3000:]
        clean_stderr(result.stderr)
        assert "Resumed from step 10 " in result.stdout
        assert_same_params(reference, workdir)
        assert without_speed(workdir) == without_speed(reference)


def test_a_disk_full_before_training_starts_is_one_line_and_a_rerun_trains(env, reference):
    with tmpfs(env.base / "full_disk", 4 << 20) as disk:
        workdir = os.path.join(disk, "run")
        filler = fill_disk(disk)
        result = train(env, workdir)
        assert result.returncode == 1, result.stderr[-3000:]
        line = _disk_full_error(result.stderr, workdir)
        assert "No space left on device" in line and "free space there, then run the same command" in line

        os.remove(filler)
        result = train(env, workdir)
        assert result.returncode == 0, result.stderr[-3000:]
        clean_stderr(result.stderr)
        assert_same_params(reference, workdir)
        assert without_speed(workdir) == without_speed(reference)


def test_restored_arrays_are_uncommitted_like_a_fresh_runs(reference):
    """Committed arrays compile under other argument shardings: a resumed run would miss the
    persistent compilation cache and recompile every step function (~10 s here)."""
    from s2s_jax.training.optimizers import make_optimizer
    from s2s_jax.workdir import run_config

    params, _ = ckpt_lib.load_params(str(reference), "latest")
    assert not any(leaf.committed for leaf in jax.tree.leaves(params))
    config = run_config.load(str(reference))
    state = {
        "step": jax.numpy.zeros((), jax.numpy.int32),
        "params": params,
        "opt_state": make_optimizer(config.train).init(params),
    }
    checkpoints = ckpt_lib.Checkpoints(str(reference), 3)
    restored, meta = checkpoints.restore(state)
    checkpoints.close()
    assert meta["step"] == 30 and int(restored["step"]) == 30
    assert not any(leaf.committed for leaf in jax.tree.leaves(restored))


def _checkpoint_params(workdir):
    steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
    return {step: ckpt_lib.load_params(str(workdir), str(step))[0] for step in steps}


def test_nan_loss_stops_naming_the_steps_and_never_checkpoints_nan(env):
    workdir = env.base / "nan_stop"
    nan = [
        "--config.train.learning_rate=1e38",
        "--config.data.num_buckets=1",
        "--config.train.log_every=1",
        "--config.train.checkpoint_every=1",
        "--config.train.max_to_keep=100",
        "--config.train.num_steps=8",
    ]
    result = train(env, workdir, *nan)
    assert result.returncode == 1, result.stdout[-2000:]
    clean_stderr(result.stderr)
    match = re.search(r"error: NaN/Inf loss or gradient in (\d+) of the steps (\d+)\.\.(\d+);", result.stderr)
    assert match, result.stderr[-3000:]
    first_bad = int(match.group(2))
    assert "train.on_nonfinite=skip" in result.stderr
    saved = _checkpoint_params(workdir)
    assert saved and max(saved) < first_bad
    for step, params in saved.items():
        assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(params)), step

    skipped = env.base / "nan_skip"
    result = train(env, skipped, *nan, "--config.train.on_nonfinite=skip")
    assert result.returncode == 0, result.stderr[-3000:]
    clean_stderr(result.stderr)
    assert re.search(r"warning: \d+ training step\(s\) had a NaN/Inf loss or gradient and were skipped", result.stderr)
    assert "NaN or Inf found in input tensor" not in result.stderr  # tensorboardX's per-step spam
    saved = _checkpoint_params(skipped)
    assert max(saved) == 8
    for step, params in saved.items():
        assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(params)), step
    assert sum(r["skipped_steps"] for r in read_metrics(str(skipped))) > 0


# ---------------------------------------------------------------------------
# decode: hostile text never crashes it
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def translator(reference):
    from s2s_jax.decoding.translator import Translator

    return Translator(str(reference), "latest")


SPECIAL_LINES = [
    "",
    " ",
    "\t \t",
    "\r",
    "\u2028",
    "\u2029",
    "\x00",
    "\x00\x01\x7f",
    "\x1b[31mred\x1b[0m",
    "\ufeffthe cat",
    "\u200b\u200d\u200e\u200f",
    "the 🐈‍⬛ sees 👍🏽",
    "שלום עולם",
    "مرحبا بالعالم",
    "\u202eevil\u202c",
    "e\u0301\u0301\u0301",
    "ｔｈｅ　ｃａｔ",
    "\ud800 lone surrogate \udfff",
    "\U0010ffff\ufffe\uffff",
    "の" * 300,
    "the big cat " * 100,
]


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(
        st.one_of(st.sampled_from(SPECIAL_LINES), st.text(st.characters(blacklist_characters="\n"), max_size=80)),
        min_size=1,
        max_size=4,
    )
)
@example(lines=SPECIAL_LINES)
def test_translate_gives_one_line_per_input_for_any_text(translator, lines):
    warnings = []
    results = translator.translate(lines, batch_size=1, warn=warnings.append)
    assert len(results) == len(lines)
    for line, hyps in zip(lines, results):
        assert len(hyps) == 1
        assert isinstance(hyps[0].text, str) and "\n" not in hyps[0].text
        if not translator_normalize(translator, line):
            assert hyps[0].text == ""
    long = [
        i
        for i, ids in enumerate(
            translator.src_tokenizer.tokenize([translator_normalize(translator, line) for line in lines])
        )
        if len(ids) > translator.max_len
    ]
    assert len(warnings) == len(long)
    for i, message in zip(long, warnings):
        assert message.startswith(f"line {i + 1}: ") and f"truncated to data.max_len={translator.max_len}" in message


def translator_normalize(translator, line):
    from s2s_jax.data.text import normalize
    from s2s_jax.decoding.translator import _encodable

    return normalize(_encodable(line), translator.config.data.lowercase)


def test_an_overlong_line_is_cut_with_a_warning_and_still_translated(translator):
    warnings = []
    lines = ["the red cat", "the big dog sees " * 60, "a car"]
    results = translator.translate(lines, batch_size=4, warn=warnings.append)
    assert len(results) == 3
    assert len(warnings) == 1 and warnings[0].startswith("line 2: ")
    assert "truncated to data.max_len=16" in warnings[0]


def fake_stdin(raw: bytes):
    """Like sys.stdin under a POSIX locale: text mode with surrogateescape over a byte buffer."""
    return io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8", errors="surrogateescape", newline="\n")


def test_decode_cli_reads_stdin_as_bytes_split_on_newline_only(reference, monkeypatch, capsys):
    raw = "the cat\rsees\nthe\u2028dog\n\nemoji 🐈\n".encode("utf-8")
    monkeypatch.setattr(sys, "stdin", fake_stdin(raw))
    assert decode.run(decode_flags(reference, checkpoint="latest")) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 4  # '\r' and U+2028 do not start new lines
    assert out.split("\n")[2] == ""


def test_decode_cli_invalid_utf8_on_stdin_names_the_line(reference, monkeypatch, capsys):
    raw = b"the cat\nthe caf\xe9\n"
    monkeypatch.setattr(sys, "stdin", fake_stdin(raw))
    assert decode.run(decode_flags(reference, checkpoint="latest")) == 1
    err = capsys.readouterr().err
    assert "error: <stdin>:2: not valid UTF-8 (byte(s) e9)" in err


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(batch_size=0), "--batch_size must be at least 1, got 0"),
        (dict(batch_size=-2), "--batch_size must be at least 1, got -2"),
        (dict(beam_size=0), "--beam_size must be at least 1, got 0"),
        (dict(nbest=3), "nbest=3 needs beam_size >= nbest"),
        (dict(top_k=-1), "--top_k must be >= 0"),
        (dict(sample=True, temperature=0.0), "sampling needs temperature > 0"),
        (dict(checkpoint="foo"), "--checkpoint must be best, latest, a step number or avg:K (K >= 1), got 'foo'"),
        (dict(checkpoint="7"), "no checkpoint for step 7"),
        (dict(output="/nonexistent/dir/out.txt"), "directory /nonexistent/dir does not exist"),
        (dict(input="/nonexistent/in.txt"), "--input /nonexistent/in.txt: file not found"),
    ],
)
def test_decode_cli_flag_mistakes_are_one_line_errors(reference, capsys, overrides, message):
    assert decode.run(decode_flags(reference, **{"checkpoint": "latest", **overrides})) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err


# ---------------------------------------------------------------------------
# no unsafe deserialisation
# ---------------------------------------------------------------------------

_PICKLERS = r"(pickle|cPickle|_pickle|dill|cloudpickle|shelve|marshal|joblib)"
UNSAFE = [
    (rf"^\s*import\s+([\w.]+\s*(as\s+\w+\s*)?,\s*)*{_PICKLERS}\b", "a pickle-family import"),
    (rf"^\s*from\s+{_PICKLERS}\b", "a pickle-family import"),
    (rf"(__import__|import_module)\(\s*['\"]{_PICKLERS}['\"]", "a pickle-family import"),
    (r"\ballow_pickle\s*=\s*True", "np.load(allow_pickle=True)"),
    (r"\b(pickle|dill|marshal|joblib)\.loads?\(", "unpickling"),
    (r"\byaml\.load\(", "yaml.load (use safe_load)"),
    (r"\btorch\.load\(", "torch.load"),
]


def python_sources():
    files = glob.glob(os.path.join(ROOT, "s2s_jax", "**", "*.py"), recursive=True) + [
        os.path.join(ROOT, f) for f in ("train.py", "decode.py")
    ]
    files += glob.glob(os.path.join(ROOT, "configs", "*.py"))
    return sorted(files)


def test_nothing_unpickles_or_loads_untrusted_objects():
    assert len(python_sources()) > 10
    problems = []
    for path in python_sources():
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                for pattern, what in UNSAFE:
                    if re.search(pattern, line):
                        problems.append(f"{os.path.relpath(path, ROOT)}:{number}: {what}: {line.strip()}")
    assert not problems, "\n".join(problems)


def test_workdir_metadata_is_plain_json(reference):
    with open(reference / "config.json", encoding="utf-8") as f:
        assert json.load(f)["model"]["hidden_size"] == 24
    meta = reference / "checkpoints" / "30" / "meta" / "metadata"
    with open(meta, encoding="utf-8") as f:
        assert json.load(f)["step"] == 30


def test_early_stopping_stops_checkpoints_and_a_rerun_stays_stopped(env):
    workdir = env.base / "early_stop"
    # A learning rate of 1e-12 leaves the translations, hence validation BLEU, unchanged.
    flags = [
        "--config.train.learning_rate=1e-12",
        "--config.train.eval_every=5",
        "--config.train.early_stop_patience=2",
    ]
    result = train(env, workdir, *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    clean_stderr(result.stderr)
    assert "early stop at step 15: validation BLEU has not improved for 2 evaluations" in result.stdout
    assert "(best" in result.stdout and "at step 5)" in result.stdout
    assert ckpt_lib.load_params(str(workdir), "latest")[1]["step"] == 15
    assert [r["step"] for r in read_metrics(str(workdir)) if "valid_bleu" in r] == [5, 10, 15]
    again = train(env, workdir, *flags)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "early stop at step 15" in again.stdout and "Resumed from step 15" in again.stdout
    assert ckpt_lib.load_params(str(workdir), "latest")[1]["step"] == 15
