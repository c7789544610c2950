"""Test settings (CPU, float32 matmuls at full precision, a persistent compile cache) and
the one trained workdir that the end-to-end tests share."""

import atexit
import gc
import importlib.metadata
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the CLIs set it (s2s_jax/cli/runtime.py)
# The tests' shapes are tiny, so compiling is most of their time: LLVM at -O0 (the backend's
# optimisation passes were most of a compile; the full suite ~30% faster) and, where jaxlib still has
# them (0.10.2; 0.12's XLA:CPU aborts on the flag), the older elemental fusion emitters, which compile
# faster than the MLIR fusion emitters (the full suite 15.2 -> 10.6 min). The programs compute the
# same; every comparison in a test runs both sides under these flags, and benchmarks never do.
_XLA_TEST_FLAGS = "--xla_cpu_multi_thread_eigen=true --xla_backend_optimization_level=0"
if tuple(int(part) for part in importlib.metadata.version("jaxlib").split(".")[:2]) < (0, 11):
    _XLA_TEST_FLAGS += " --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("XLA_FLAGS", _XLA_TEST_FLAGS)
# Prepared corpora (s2s_jax/data/corpus_cache.py) of this test session, never the user's cache.
os.environ["S2S_JAX_CORPUS_CACHE"] = tempfile.mkdtemp(prefix="s2s-jax-corpora-")
atexit.register(shutil.rmtree, os.environ["S2S_JAX_CORPUS_CACHE"], ignore_errors=True)

import types  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

from tests.helpers import (  # noqa: E402
    TINY_TRAIN_FLAGS,
    cli_cache,
    run_cli,
    write_multilingual_corpus,
    write_tiny_corpus,
)

jax.config.update("jax_default_matmul_precision", "highest")
# In-process compilations are cached across test runs (the edit-test loop recompiles little);
# S2S_JAX_TEST_CACHE=off disables it.
_cache = os.environ.get("S2S_JAX_TEST_CACHE", os.path.expanduser("~/.cache/s2s_jax/xla-tests"))
if _cache != "off":
    jax.config.update("jax_compilation_cache_dir", _cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
# The commands that tests run (train.py, decode.py, serve.py) share one compile cache, new for
# each test run (tests kill commands, which may leave a cut-off entry): tests/helpers.cli_cache.
# The pytest-xdist controller makes it before it starts its workers, which inherit it, so a tiny
# model's programs compile once per run, not once per worker; whoever made it removes it.
if "S2S_JAX_TEST_CLI_CACHE" not in os.environ:
    os.environ["S2S_JAX_TEST_CLI_CACHE"] = tempfile.mkdtemp(prefix="s2s-jax-xla-")
    atexit.register(shutil.rmtree, os.environ["S2S_JAX_TEST_CLI_CACHE"], ignore_errors=True)
# Every program those commands compile goes into their cache, however quickly it compiled: most of a
# tiny model's compiles take under the commands' usual 0.5 s threshold (s2s_jax/cli/runtime.py), and
# the next command reads them back.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


# The fixtures that train a model with train.py: every test that needs one is end-to-end, in the slow tier.
TRAINING_FIXTURES = {"trained_workdir", "multilingual_workdir"}


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drops JAX's caches of traced and compiled programs after each test file.

    XLA:CPU loads each compiled program's code into memory mappings of its own (12 for a small
    scan), and a test worker that kept every program of its share of the suite alive reached 45,600
    of Linux's 65,530 mappings per process (vm.max_map_count) in a full run; at the limit XLA's JIT
    cannot allocate and the worker dies inside a compile. Test files share few programs, so
    clearing costs little.
    """
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
    """A tiny attention model trained by train.py (about 20 s), shared by every test that
    only reads a finished workdir: (workdir, corpus paths, compile cache)."""
    base = tmp_path_factory.mktemp("trained")
    paths = write_tiny_corpus(str(base))
    workdir, cache = str(base / "run"), cli_cache()
    args = ["train.py", "--config=configs/default.py", f"--workdir={workdir}", *TINY_TRAIN_FLAGS]
    args += [f"--config.data.{key}={path}" for key, path in paths.items()]
    result = run_cli(args, env_cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "valid BLEU" in result.stdout
    return types.SimpleNamespace(workdir=workdir, paths=paths, cache=cache, args=args)


# One model for three pairs (English into three toy languages, tagged), sampled at temperature 2.
MULTILINGUAL_PAIRS = "en-fr,en-de,en-cs"


@pytest.fixture(scope="session")
def multilingual_workdir(tmp_path_factory):
    """The tiny attention model trained by train.py on three language pairs (about 30 s), shared by
    the tests that read a finished multilingual workdir: (workdir, prefixes, compile cache, args)."""
    base = tmp_path_factory.mktemp("multilingual")
    prefixes = write_multilingual_corpus(str(base))
    workdir, cache = str(base / "run"), cli_cache()
    args = ["train.py", "--config=configs/default.py", f"--workdir={workdir}", *TINY_TRAIN_FLAGS]
    args += [f"--config.data.pairs={MULTILINGUAL_PAIRS}", "--config.data.pair_temperature=2.0"]
    args += ["--config.train.num_steps=120", "--config.train.eval_every=60", "--config.train.checkpoint_every=60"]
    args += [f"--config.data.{key}={path}" for key, path in prefixes.items()]
    result = run_cli(args, env_cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    return types.SimpleNamespace(workdir=workdir, prefixes=prefixes, cache=cache, args=args)
