"""What `pip install .` ships: the s2s-train / s2s-decode commands, the configs by name, data.dir."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from absl import flags

from s2s_jax.config import flags as config_flags
from s2s_jax.configs import default
from s2s_jax.data import text as text_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "s2s_jax", "configs")


def parse_config(*args: str):
    """--config as train.py's flag parser sees it, on a private FlagValues."""
    argv = ["train.py", *args]
    values = flags.FlagValues()
    config_flags.define_config_flag("config", flag_values=values, sys_argv=argv)
    values(argv)
    return values.config


# --- built-in config names ---------------------------------------------------


def test_builtin_names_are_the_files_of_the_configs_package():
    files = sorted(n[:-3] for n in os.listdir(SHIPPED) if n.endswith(".py") and n != "__init__.py")
    assert config_flags.builtin_configs() == files
    assert {"quickstart", "default", "multi30k", "multi30k_attention", "fra_eng", "cmn_eng"} <= set(files)
    for name in files:  # every one loads through the package import its siblings use
        assert importlib.import_module(f"s2s_jax.configs.{name}").get_config().data.vocab_size > 0
    # The repository's configs/ is the same directory (a symlink), not a second copy.
    assert os.path.realpath(os.path.join(ROOT, "configs")) == os.path.realpath(SHIPPED)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ml_collections uses load_module
def test_a_builtin_name_loads_the_same_config_as_its_file_and_takes_overrides(monkeypatch, tmp_path):
    by_path = parse_config(f"--config={ROOT}/configs/quickstart.py", "--config.train.num_steps=7")
    monkeypatch.chdir(tmp_path)  # names work from any directory
    by_name = parse_config("--config", "quickstart", "--config.train.num_steps=7")
    assert by_name.to_dict() == by_path.to_dict()
    assert by_name.train.num_steps == 7 and by_name.data.quickstart_corpus
    assert parse_config("--config=multi30k_attention").model.attention == "luong_general"


def test_name_resolution_rules(tmp_path, monkeypatch):
    resolve = config_flags.resolve_config_arg
    assert resolve("quickstart") == os.path.join(config_flags.CONFIG_DIR, "quickstart.py")
    assert resolve("quickstart:small") == os.path.join(config_flags.CONFIG_DIR, "quickstart.py") + ":small"
    assert resolve("configs/quickstart.py") == "configs/quickstart.py"  # paths are left alone
    assert resolve("missing/nope.py") == "missing/nope.py"  # ... even missing ones: reported on first use
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").write_text("def get_config():\n    return {}\n")
    assert resolve("default") == "default"  # an existing file wins over a name


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_an_unknown_name_is_a_flag_error_listing_the_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(flags.IllegalFlagValueError) as caught:
        parse_config("--config=multi30", f"--workdir={tmp_path}")
    message = str(caught.value)
    assert "'multi30' is neither a config file nor a built-in config name" in message
    assert (
        "built-in names: cmn_eng, default, fra_eng, multi30k, multi30k_attention, multi30k_en2many, multi30k_many2en, "
        "multi30k_student, multi30k_tuned, quickstart" in message
    )


def test_train_py_reports_an_unknown_name_in_one_line(tmp_path):
    env = dict(os.environ, S2S_JAX_CACHE="off", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), "--config", "quikstart", f"--workdir={tmp_path}/w"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "FATAL Flags parsing error: flag --config=quikstart: 'quikstart' is neither" in result.stderr
    assert "multi30k_many2en, multi30k_student, multi30k_tuned, quickstart" in result.stderr
    assert not os.path.exists(tmp_path / "w")


@pytest.mark.parametrize("module", ["s2s_jax.cli.train", "s2s_jax.cli.decode"])
def test_cli_modules_limit_openblas_threads_before_numpy_and_jax_load(module):
    code = (
        "import os, sys\n"
        "seen = {}\n"
        "class Finder:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name in ('numpy', 'jax'):\n"
        "            seen.setdefault(name, os.environ.get('OPENBLAS_NUM_THREADS'))\n"
        "sys.meta_path.insert(0, Finder())\n"
        f"import {module}\n"
        "import numpy, jax\n"  # whether the module loads them itself or later code does
        "print(sorted(seen.items()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[('jax', '1'), ('numpy', '1')]"


# --- data.dir ------------------------------------------------------------------


def data_config(**values):
    data = default.get_config().data
    for key, value in values.items():
        data[key] = value
    return data


def test_relative_data_paths_join_data_dir_and_absolute_ones_win(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.src").write_text("ein Hund\n")
    (tmp_path / "d" / "x.tgt").write_text("a dog\n")
    (tmp_path / "other.tsv").write_text("Go.\tVa !\n")
    cfg = data_config(dir=str(tmp_path / "d"), train_src="x.src", train_tgt="x.tgt")
    assert text_lib.load_corpus(cfg, "train") == [("ein Hund", "a dog")]
    cfg.train_tsv = str(tmp_path / "other.tsv")  # an absolute per-file path is used as is
    assert text_lib.load_corpus(cfg, "train") == [("Go.", "Va !")]
    assert text_lib.data_path(cfg, "") == ""
    assert text_lib.data_path(data_config(dir=""), "a/b.txt") == "a/b.txt"  # "" = the current directory


def test_a_missing_file_error_names_the_resolved_path(tmp_path):
    cfg = data_config(dir=str(tmp_path / "corpora"), valid_tsv="fra-eng/fra.txt")
    with pytest.raises(text_lib.DataError, match=f"{tmp_path}/corpora/fra-eng/fra.txt: file not found"):
        text_lib.load_corpus(cfg, "valid")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_data_dir_override_after_get_config_moves_a_corpus_config(tmp_path):
    (tmp_path / "multi30k").mkdir()
    for name in ("val.de", "val.en"):
        (tmp_path / "multi30k" / name).write_text(f"{name}\n")
    config = parse_config("--config=multi30k", f"--config.data.dir={tmp_path}")
    assert config.data.valid_src == "multi30k/val.de"  # the config keeps its relative paths
    assert text_lib.load_corpus(config.data, "valid") == [("val.de", "val.en")]


def test_quickstart_corpus_paths_are_absolute(tmp_path, monkeypatch):
    from s2s_jax.configs import quickstart
    from s2s_jax.data.training_data import use_quickstart_corpus

    monkeypatch.chdir(tmp_path)
    config = quickstart.get_config()
    config.data.dir = "elsewhere"  # must not move the generated corpus
    use_quickstart_corpus(config, "run")
    assert config.data.train_src == os.path.join(
        str(tmp_path), "run", "corpus", os.path.basename(config.data.train_src)
    )
    assert text_lib.load_corpus(config.data, "valid")


# --- the wheel -------------------------------------------------------------------


def _bdist_wheel_available() -> bool:
    import setuptools

    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    return importlib.util.find_spec("wheel") is not None or (major, minor) >= (70, 1)


@pytest.mark.slow
def test_the_built_package_ships_the_configs_and_commands_and_no_top_level_configs(tmp_path):
    """Builds from a copy of the sources (no build/ left in the checkout), offline.

    With bdist_wheel available (setuptools >= 70.1 or the `wheel` package) this is
    `pip wheel --no-deps --no-build-isolation`; otherwise setuptools' build_py +
    egg_info, which make the same file list and entry_points.txt a wheel would hold.
    """
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    shutil.copytree(os.path.join(ROOT, "s2s_jax"), src / "s2s_jax", ignore=shutil.ignore_patterns("__pycache__"))
    os.symlink("s2s_jax/configs", src / "configs")  # as in the repository
    env = dict(os.environ, PIP_NO_INDEX="1")
    if _bdist_wheel_available():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "-q",
                "-w",
                str(tmp_path / "out"),
                ".",
            ],
            cwd=src,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        [wheel] = os.listdir(tmp_path / "out")
        with zipfile.ZipFile(tmp_path / "out" / wheel) as archive:
            names = archive.namelist()
            [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
            entry_text = archive.read(entry_points).decode()
    else:
        (tmp_path / "meta").mkdir()
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from setuptools import setup; setup()",
                "-q",
                "build_py",
                "--build-lib",
                str(tmp_path / "lib"),
                "egg_info",
                "--egg-base",
                str(tmp_path / "meta"),
            ],
            cwd=src,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        names = [
            os.path.relpath(os.path.join(d, f), tmp_path / "lib").replace(os.sep, "/")
            for d, _, files in os.walk(tmp_path / "lib")
            for f in files
        ]
        [egg_info] = os.listdir(tmp_path / "meta")
        entry_text = (tmp_path / "meta" / egg_info / "entry_points.txt").read_text()
    assert "s2s_jax/configs/quickstart.py" in names and "s2s_jax/cli/train.py" in names
    assert {n.split("/")[0] for n in names if "/" in n and not n.split("/")[0].endswith((".dist-info", ".data"))} == {
        "s2s_jax"
    }
    assert not [n for n in names if n.startswith("configs/")]
    assert "s2s-train = s2s_jax.cli.train:main" in entry_text
    assert "s2s-decode = s2s_jax.cli.decode:main" in entry_text
    assert "s2s-prepare = s2s_jax.cli.prepare:main" in entry_text
    assert "s2s-shortlist = s2s_jax.cli.shortlist:main" in entry_text
    assert "s2s-distill = s2s_jax.cli.distill:main" in entry_text


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="no C++ compiler on the PATH")
def test_an_install_with_a_compiler_built_the_fused_recurrence():
    """setup.py builds s2s_jax.kernels optionally (a failed build only warns); where a compiler exists,
    a missing kernel means a broken build, which this turns into a failure."""
    from s2s_jax.kernels import recurrence

    assert recurrence.available(), recurrence.unavailable_reason()
    assert recurrence.isa() in ("avx512", "avx2", "generic")


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="no C++ compiler on the PATH")
def test_an_install_with_a_compiler_built_the_int8_matmul():
    """The int8 kernel is a second optional extension (setup.py): the same rule as the recurrence's."""
    from s2s_jax.kernels import int8

    assert int8.available(), int8.unavailable_reason()
    assert int8.isa() in ("avx512vnni", "avx2", "generic")


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="no C++ compiler on the PATH")
def test_an_install_with_a_compiler_built_the_top_log_probs_kernel():
    """Beam search's top_log_probs kernel is a third optional extension (setup.py): the same rule."""
    from s2s_jax.kernels import top_log_probs

    assert top_log_probs.available(), top_log_probs.unavailable_reason()
    assert top_log_probs.isa() in ("avx512", "avx2", "generic")
