"""Shared test fixtures: a tiny parallel corpus and a tiny config, no ../shared needed."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import random
import shutil
import socket
import subprocess
import sys
import types
from typing import Iterator

from s2s_jax.configs import default

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny attention model (bidirectional encoder, input feeding): what the end-to-end tests train.
TINY_TRAIN_FLAGS = [
    "--config.data.vocab_size=60",
    "--config.data.max_len=16",
    "--config.data.num_buckets=2",
    "--config.model.emb_dim=16",
    "--config.model.hidden_size=24",
    "--config.model.num_layers=1",
    "--config.train.batch_size=16",
    "--config.train.num_steps=40",
    "--config.train.learning_rate=0.01",
    "--config.train.warmup_steps=5",
    "--config.train.log_every=10",
    "--config.train.eval_every=20",
    "--config.train.checkpoint_every=20",
    "--config.decode.max_len_b=4",
    "--config.decode.batch_size=16",
    "--config.model.attention=luong_general",
    "--config.model.bidirectional=True",
    "--config.model.input_feeding=True",
]


def free_port() -> int:
    """A loopback port nothing listens on (bound for a moment, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_cache(process: int | None = None) -> str:
    """The XLA compile cache ($S2S_JAX_CACHE) that the test run's commands share, so each
    tiny model compiles once per run, not once per command; set up by conftest.

    Separate from the pytest process's own cache, and shared by the test workers. jax writes
    entries without a lock; an entry read while another process writes it is skipped with a
    warning and compiled again, but the processes of one multi-process run compile the same
    functions at the same moment every time, so they get directories of their own (`process`:
    the process id within that run).
    """
    cache = os.environ.get("S2S_JAX_TEST_CLI_CACHE", "off")
    return cache if cache == "off" or process is None else os.path.join(cache, f"process{process}")


def run_cli(args, stdin=None, env_cache=None) -> subprocess.CompletedProcess:
    """`python ARGS` from the repository root, as a user runs train.py / decode.py."""
    env = dict(os.environ, S2S_JAX_CACHE=env_cache or cli_cache(), JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, input=stdin, capture_output=True, text=True, env=env, timeout=600
    )


WORDS_EN = "the a red blue small big cat dog house car sees likes has".split()
WORDS_XX = {w: w[::-1] + "o" for w in WORDS_EN}  # a toy 'language': reversed words


def write_tiny_corpus(directory: str, n_train: int = 200, n_valid: int = 20, seed: int = 0) -> dict:
    """Aligned files of short sentences and their word-by-word 'translations'."""
    rng = random.Random(seed)
    paths = {}
    for split, n in (("train", n_train), ("valid", n_valid)):
        src_lines, tgt_lines = [], []
        for _ in range(n):
            words = [rng.choice(WORDS_EN) for _ in range(rng.randint(2, 7))]
            src_lines.append(" ".join(words))
            tgt_lines.append(" ".join(WORDS_XX[w] for w in words))
        for side, lines in (("src", src_lines), ("tgt", tgt_lines)):
            path = os.path.join(directory, f"{split}.{side}")
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            paths[f"{split}_{side}"] = path
    return paths


# Toy languages for multilingual tests: each word of WORDS_EN spelled another way.
TOY_LANGUAGES = {
    "en": lambda w: w,
    "fr": lambda w: w[::-1] + "o",
    "de": lambda w: w + "en",
    "cs": lambda w: "z" + w,
}


def write_multilingual_corpus(
    directory: str, n_train: int = 200, n_valid: int = 20, seed: int = 0, test_languages=("en", "fr", "de")
) -> dict:
    """Four-way parallel files named by language, as Multi30k's: {train,valid}.{en,fr,de,cs} and
    test.LANG for `test_languages`; {'train_prefix', 'valid_prefix', 'test_prefix'} -> prefix."""
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_valid)):
        sentences = [[rng.choice(WORDS_EN) for _ in range(rng.randint(2, 7))] for _ in range(n)]
        for language, spell in TOY_LANGUAGES.items():
            if split == "test" and language not in test_languages:
                continue
            with open(os.path.join(directory, f"{split}.{language}"), "w", encoding="utf-8") as f:
                f.write("".join(" ".join(spell(w) for w in words) + "\n" for words in sentences))
    return {f"{split}_prefix": os.path.join(directory, split) for split in ("train", "valid", "test")}


def tiny_config(paths: dict, **train_overrides):
    config = default.get_config()
    for key, value in paths.items():
        setattr(config.data, key, value)
    config.data.vocab_size = 60
    config.data.max_len = 16
    config.data.num_buckets = 2
    config.model.emb_dim = 16
    config.model.hidden_size = 24
    config.model.num_layers = 2
    config.model.dropout = 0.1
    config.train.batch_size = 16
    config.train.num_steps = 6
    config.train.warmup_steps = 2
    config.train.log_every = 2
    config.train.eval_every = 3
    config.train.checkpoint_every = 3
    config.train.num_samples = 1
    config.decode.batch_size = 16
    config.decode.max_len_b = 4
    for key, value in train_overrides.items():
        setattr(config.train, key, value)
    return config


@contextlib.contextmanager
def tmpfs(path, size: int) -> Iterator[str]:
    """A tmpfs of `size` bytes mounted at `path` (created) for the block: a small disk to fill.

    Skips the test, with mount's reason, where mounting is not permitted (no root, a
    container without CAP_SYS_ADMIN), and fails it instead under CI=true (CI runs every
    test); unmounts afterwards, lazily if something still holds a file open there.
    """
    path = str(path)
    os.makedirs(path, exist_ok=True)
    import pytest

    def cannot(message: str) -> None:
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": CI must run the full-disk tests (as root, or with CAP_SYS_ADMIN)")
        pytest.skip(message)

    if shutil.which("mount") is None or shutil.which("umount") is None:
        cannot("no mount/umount command to make a small tmpfs disk")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        cannot(f"mounting a tmpfs is not permitted here: {(mounted.stderr or mounted.stdout).strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)


def fill_disk(directory, leave: int = 0) -> str:
    """Writes `directory`/filler until the file system has about `leave` bytes free; its path.

    Deleting the filler frees the space again.
    """
    path = os.path.join(str(directory), "filler")
    stat = os.statvfs(str(directory))
    todo = max(stat.f_bavail * stat.f_frsize - leave, 0)
    chunk = b"\0" * (1 << 20)
    with open(path, "ab", buffering=0) as f:
        try:
            while todo > 0:
                todo -= f.write(chunk[:todo])
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
    return path


def free_bytes(directory) -> int:
    stat = os.statvfs(str(directory))
    return stat.f_bavail * stat.f_frsize


def largest_array_file(step_dir, item: str) -> str:
    files = glob.glob(str(step_dir / item / "**" / "d" / "*"), recursive=True)
    assert files, f"no array files under {step_dir / item}: has orbax's layout changed?"
    return max(files, key=os.path.getsize)


def flip_bytes(step_dir, item: str) -> str:
    """Inverts one byte at each of several offsets of the largest array file, keeping its size
    (a bad disk or cable); returns its path relative to `step_dir`."""
    path = largest_array_file(step_dir, item)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        for offset in (size // 4, size // 2, 3 * size // 4):
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ 0xFF]))
    return os.path.relpath(path, step_dir)


def decode_flags(workdirs, **overrides) -> types.SimpleNamespace:
    """decode.py's parsed flags (`s2s_jax.cli.decode.run` takes them) for `workdirs` (one or a list),
    its defaults but for `overrides`."""
    values = dict(
        workdir=[str(w) for w in workdirs] if isinstance(workdirs, (list, tuple)) else [str(workdirs)],
        checkpoint="best",
        input="-",
        output="-",
        beam_size=None,
        alpha=None,
        nbest=1,
        sample=False,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        seed=0,
        reference=None,
        plot_attention=None,
        batch_size=None,
        ensemble_weights=None,
    )
    values.update(overrides)
    return types.SimpleNamespace(**values)


# The decode settings and the tiny attention model the search-level tests share.
TINY_DECODE = types.SimpleNamespace(max_len_a=1.5, max_len_b=4, beam_size=1, alpha=0.6, batch_size=16)


def tiny_model(seed: int = 0, **overrides):
    """(Seq2Seq, params): a 1-layer Luong-attention model over a 12-token vocabulary, initialised
    with `seed`; `overrides` change its ModelConfig fields."""
    import jax
    import jax.numpy as jnp

    from s2s_jax.models.seq2seq import ModelConfig, Seq2Seq

    cfg = dict(src_vocab_size=12, tgt_vocab_size=12, emb_dim=8, hidden_size=16, num_layers=1, dropout=0.0)
    model = Seq2Seq(ModelConfig(**{**cfg, "attention": "luong_general", **overrides}))
    tokens = jnp.ones((1, 4), jnp.int32)
    return model, jax.jit(model.init)(jax.random.key(seed), tokens, tokens)["params"]


def cpu_flags() -> set[str]:
    """This CPU's feature flags (/proc/cpuinfo; empty where it cannot be read): which kernel ISAs can run."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()
