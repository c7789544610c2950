"""export.py: the artefact's translate.py runs without flax or s2s_jax and translates as decode.py does."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2s_jax.cli import export as export_cli
from s2s_jax.data import text
from s2s_jax.decoding import export
from s2s_jax.decoding.inference import SearchOptions
from tests.helpers import ROOT

BLOCKED = ("flax", "s2s_jax", "optax", "orbax", "ml_collections", "tensorboardX")


def interrupted(message):
    raise KeyboardInterrupt


@pytest.fixture(scope="module")
def exported(trained_workdir, tmp_path_factory):
    """The artefact every test here reads, exported where an export was first stopped half-way
    (Ctrl-C after its first function): test_an_interrupted_export_leaves_nothing_in_the_way."""
    parent = tmp_path_factory.mktemp("export")
    directory = str(parent / "artefact")
    with pytest.raises(KeyboardInterrupt):
        export.export_model(trained_workdir.workdir, directory, rows=[1, 4], beam_size=3, log=interrupted)
    left = os.listdir(parent)
    manifest = export.export_model(trained_workdir.workdir, directory, rows=[1, 4], beam_size=3, log=lambda m: None)
    manifest["interrupted_export_left"] = left  # not in the file: what the test below reads
    return directory, manifest


def blocking_path(tmp_path, blocked=BLOCKED) -> str:
    """A PYTHONPATH entry whose `blocked` packages (flax, s2s_jax, ...) fail to import."""
    root = tmp_path / "blocked"
    for name in blocked:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(f"raise ImportError('{name} is not available here')\n")
    return str(root)


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_the_exported_translate_py_needs_no_flax_and_equals_decode(trained_workdir, exported, tmp_path):
    from s2s_jax.decoding.translator import Translator

    directory, manifest = exported
    assert manifest["searches"] == {
        "default": {"beam_size": 3, "alpha": manifest["searches"]["default"]["alpha"]},
        "greedy": {"beam_size": 1, "alpha": 0.6},
    }
    with open(trained_workdir.paths["valid_src"], encoding="utf-8") as f:
        lines = f.read().splitlines()
    lines += ["", "The  RED\u00a0cat\tsees a dog", " ".join(["big"] * 40)]  # empty, normalised, cut to max_len
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=blocking_path(tmp_path), JAX_PLATFORMS="cpu")
    env.pop("S2S_JAX_CACHE", None)
    blocked = subprocess.run([sys.executable, "-c", "import flax"], env=env, cwd=tmp_path, capture_output=True)
    assert blocked.returncode != 0  # the blocker works
    translator = Translator(trained_workdir.workdir)
    alpha = manifest["searches"]["default"]["alpha"]
    for search, opts in (("default", SearchOptions(beam_size=3, alpha=alpha)), ("greedy", SearchOptions())):
        out = tmp_path / f"{search}.txt"
        result = subprocess.run(
            [
                sys.executable,
                os.path.join(directory, "translate.py"),
                "--input",
                str(source),
                "--output",
                str(out),
                "--search",
                search,
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert "truncated to data.max_len=16" in result.stderr
        want = [h[0].text for h in translator.translate(lines, opts, warn=lambda m: None)]
        assert out.read_text(encoding="utf-8").split("\n")[:-1] == want
    # stdin to stdout, and a bad input file is one error line
    piped = subprocess.run(
        [sys.executable, os.path.join(directory, "translate.py")],
        input=lines[0] + "\n",
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert piped.returncode == 0 and piped.stdout == want[0] + "\n"
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\xfe\n")
    bad = subprocess.run(
        [sys.executable, os.path.join(directory, "translate.py"), "--input", "bad.txt"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        bad.returncode == 1
        and bad.stderr.startswith("error: bad.txt:2: not valid UTF-8")
        and bad.stderr.count("\n") == 1
    )


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_the_artefact_pins_what_translate_py_imports(exported):
    from importlib import metadata

    directory, manifest = exported
    assert manifest["requirements"] == "requirements.txt"
    with open(os.path.join(directory, "requirements.txt"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("# ") and "pip install -r requirements.txt" in lines[0]
    pins = dict(line.split("==") for line in lines[1:])
    assert pins == {name: metadata.version(name) for name in ("jax", "jaxlib", "numpy", "sentencepiece", "flatbuffers")}


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
@pytest.mark.parametrize("package", ["flatbuffers", "sentencepiece"])
def test_a_missing_requirement_is_one_error_line_naming_it_and_the_requirements(exported, tmp_path, package):
    directory, _ = exported
    env = dict(os.environ, PYTHONPATH=blocking_path(tmp_path, (package,)), JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, os.path.join(directory, "translate.py")],
        input="Ein Hund rennt.\n",
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    requirements = os.path.join(directory, "requirements.txt")
    assert result.returncode != 0 and result.stdout == ""
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert re.fullmatch(
        rf"error: cannot import {package} \(.*\).*pip install -r {re.escape(requirements)}\n", result.stderr
    )


@pytest.mark.parametrize(
    "damaged,message",
    [
        ("params.npz", "params.npz: not readable parameters"),
        ("src_model", "not a readable sentencepiece model"),
        ("function", "not a function this jax"),
    ],
)
def test_a_damaged_artefact_is_one_error_line_naming_the_file(exported, tmp_path, capsys, damaged, message):
    directory, manifest = exported
    copy = str(tmp_path / "copy")
    shutil.copytree(directory, copy)
    name = {
        "params.npz": "params.npz",
        "src_model": manifest["src_model"],
        "function": manifest["functions"]["default"]["1x" + str(manifest["widths"][0])],
    }[damaged]
    with open(os.path.join(copy, name), "wb") as f:
        f.write(b"not what it should be")
    source = tmp_path / "in.txt"
    source.write_text("the red cat\n", encoding="utf-8")
    status = LOADER.main(["--model_dir", copy, "--input", str(source), "--output", str(tmp_path / "out.txt")])
    err = capsys.readouterr().err
    assert status == 1 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert os.path.join(copy, name) in err


def load_loader():
    spec = importlib.util.spec_from_file_location(
        "export_loader_copy", os.path.join(ROOT, "s2s_jax", "decoding", "export_loader.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOADER = load_loader()


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
    | st.text(alphabet=" \t\u00a0\u202f\u2019\u200b\ufeff.,!?'aZÉß\uff21\u0301\x07\x85", max_size=20),
    st.booleans(),
    st.booleans(),
)
def test_the_loader_normalises_text_as_the_package_does(value, lowercase, d2l):
    assert LOADER.normalize(value, lowercase, d2l) == text.normalize(value, lowercase, d2l)


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_an_interrupted_export_leaves_nothing_in_the_way(exported):
    """The artefact is written beside `--output` and moved into place when complete: an export stopped
    half-way leaves no directory (the `exported` fixture's first try), and the rerun succeeds."""
    directory, manifest = exported
    assert manifest["interrupted_export_left"] == []
    assert os.listdir(os.path.dirname(directory)) == ["artefact"]
    files = set(os.listdir(directory))
    assert {"manifest.json", "translate.py", "params.npz"} <= files
    assert set(manifest["functions"]["default"].values()) <= files


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_export_errors_are_one_line(trained_workdir, exported, tmp_path, capsys):
    import types

    def run(**overrides):
        flags = dict(
            workdir=trained_workdir.workdir,
            output=str(tmp_path / "x"),
            checkpoint="best",
            rows=None,
            widths=None,
            beam_size=None,
            alpha=None,
        )
        flags.update(overrides)
        status = export_cli.run(types.SimpleNamespace(**flags))
        return status, capsys.readouterr().err

    status, err = run(output=exported[0])
    assert status == 1 and err == f"error: --output {exported[0]} exists and is not an empty directory\n"
    status, err = run(widths=["16"])
    assert (
        status == 1
        and err.startswith("error: the widest source shape must hold data.max_len=16")
        and err.count("\n") == 1
    )
    status, err = run(rows=["four"])
    assert status == 1 and err == "error: --rows must be comma-separated integers, got four\n"
    status, err = run(workdir=str(tmp_path / "none"))
    assert status == 1 and err.startswith("error: ") and "none" in err


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_an_int8_export_carries_int8_weights_and_equals_decode_int8(trained_workdir, tmp_path):
    """The artefact multiplies by its int8 matrices in plain XLA (no custom call), which is bit for bit
    the kernel's arithmetic: its translations are the in-process int8 model's."""
    import numpy as np

    from s2s_jax.decoding.translator import Translator

    directory = str(tmp_path / "int8")
    manifest = export.export_model(trained_workdir.workdir, directory, rows=[4], beam_size=3, int8=True, log=print)
    assert manifest["int8"] is True
    with np.load(os.path.join(directory, "params.npz")) as params:
        assert any(name.endswith("kernel_int8") and params[name].dtype == np.int8 for name in params.files)
        assert not any(name.endswith("/kernel") for name in params.files)
    with open(os.path.join(directory, "default_4x16.jaxexport"), "rb") as f:
        assert b"s2s_int8_matmul" not in f.read()
    with open(trained_workdir.paths["valid_src"], encoding="utf-8") as f:
        lines = f.read().splitlines()
    out = tmp_path / "out.txt"
    env = dict(os.environ, PYTHONPATH=blocking_path(tmp_path), JAX_PLATFORMS="cpu")
    run = [sys.executable, os.path.join(directory, "translate.py"), "--output", str(out), "--search", "default"]
    result = subprocess.run(
        run, input="\n".join(lines) + "\n", env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    opts = SearchOptions(beam_size=3, alpha=manifest["searches"]["default"]["alpha"])
    want = [h[0].text for h in Translator(trained_workdir.workdir, int8=True).translate(lines, opts)]
    assert out.read_text(encoding="utf-8").split("\n")[:-1] == want
