"""Every bad input a user can give train.py / decode.py is one clear error line.

Each test asserts a non-zero exit status, a message that names the problem (file,
line, key or setting), and no traceback. Most run the CLI code in-process
(`train_cli.run` / `decode_cli.run` are what train.py / decode.py call after
parsing flags), failing before anything is compiled; the flag-parsing ones run
train.py itself.
"""

import os
import subprocess
import sys

import pytest

from s2s_jax.cli import decode as decode_cli
from s2s_jax.cli import train as train_cli
from s2s_jax.data import training_data
from s2s_jax.data.tokenizer import train_tokenizer
from s2s_jax.workdir import run_config
from tests.helpers import decode_flags, tiny_config, write_tiny_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return write_tiny_corpus(str(tmp_path_factory.mktemp("bad_input")), n_train=60, n_valid=6)


def write(path, content):
    mode = "wb" if isinstance(content, bytes) else "w"
    with open(path, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as f:
        f.write(content)
    return str(path)


def train(config, workdir, capsys):
    """train.py after flag parsing: (exit status, stdout, stderr)."""
    status = train_cli.run(config, str(workdir))
    out, err = capsys.readouterr()
    return status, out, err


def assert_clean_error(status, err, *needles):
    assert status != 0
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# ---------------------------------------------------------------------------
# data files
# ---------------------------------------------------------------------------


def test_parallel_files_with_different_line_counts(paths, tmp_path, capsys):
    src = write(tmp_path / "a.src", "the cat\na dog\nthe car\n")
    tgt = write(tmp_path / "a.tgt", "taco eht\ngodo ao\n")
    config = tiny_config(dict(paths, train_src=src, train_tgt=tgt))
    status, _, err = train(config, tmp_path / "run", capsys)
    assert_clean_error(status, err, "line counts differ", f"{src} has 3 lines", f"{tgt} has 2")


def test_tsv_line_without_a_tab(paths, tmp_path, capsys):
    tsv = write(tmp_path / "pairs.tsv", "the cat\ttaco eht\na dog\tgodo ao\nno tab on this line\nthe car\traco eht\n")
    config = tiny_config(dict(paths, train_src="", train_tgt="", train_tsv=tsv))
    status, _, err = train(config, tmp_path / "run", capsys)
    assert_clean_error(status, err, f"{tsv}:3:", "tab-separated columns", "found 1")


def test_invalid_utf8_names_file_and_line(paths, tmp_path, capsys):
    src = write(tmp_path / "latin1.src", "the cat\na dog\ncaf\xe9 au lait\n".encode("latin-1"))
    tgt = write(tmp_path / "latin1.tgt", "taco eht\ngodo ao\netiaf\n")
    config = tiny_config(dict(paths, train_src=src, train_tgt=tgt))
    status, _, err = train(config, tmp_path / "run", capsys)
    assert_clean_error(status, err, f"{src}:3: not valid UTF-8", "e9", "iconv")


@pytest.mark.parametrize("content", ["", "\ufeff"], ids=["zero-bytes", "only-a-bom"])
def test_empty_file(paths, tmp_path, capsys, content):
    src = write(tmp_path / "empty.src", content)
    config = tiny_config(dict(paths, train_src=src))
    status, _, err = train(config, tmp_path / "run", capsys)
    assert_clean_error(status, err, f"{src}: file is empty")


def test_missing_file(paths, tmp_path, capsys):
    config = tiny_config(dict(paths, valid_tgt=str(tmp_path / "nope.tgt")))
    status, _, err = train(config, tmp_path / "run", capsys)
    assert_clean_error(status, err, f"{tmp_path / 'nope.tgt'}: file not found")


def test_pairs_with_an_empty_side_are_counted_and_reported(paths, tmp_path, capsys):
    with open(paths["train_src"], encoding="utf-8") as f:
        src = f.read().splitlines()
    with open(paths["train_tgt"], encoding="utf-8") as f:
        tgt = f.read().splitlines()
    src[3], tgt[7], src[9], tgt[9] = "", "   ", "\u200b", "\t"
    config = tiny_config(
        dict(
            paths,
            train_src=write(tmp_path / "e.src", "\n".join(src) + "\n"),
            train_tgt=write(tmp_path / "e.tgt", "\n".join(tgt) + "\n"),
        )
    )
    training_data.prepare(config, str(tmp_path))
    assert "train: kept 57 of 60 pairs (3 empty, 0 longer than 16 tokens)" in capsys.readouterr().out


def test_only_empty_pairs_is_an_error(paths, tmp_path, capsys):
    config = tiny_config(
        dict(
            paths,
            train_src=write(tmp_path / "e.src", "\n \n\t\n"),
            train_tgt=write(tmp_path / "e.tgt", "a\nb\nc\n"),
        )
    )
    status, _, err = train(config, tmp_path / "run", capsys)
    assert_clean_error(status, err, "no training pairs left", "kept 0 of 3 pairs (3 empty)", "e.src")


def test_pairs_longer_than_max_len_are_counted_and_reported(paths, tmp_path, capsys):
    config = tiny_config(paths)
    config.data.max_len = 5
    training_data.prepare(config, str(tmp_path))
    out = capsys.readouterr().out
    summary = [line for line in out.splitlines() if line.startswith("train: kept ")][0]
    dropped = int(summary.split(", ")[1].split(" longer")[0])
    assert dropped > 0 and f"{dropped} longer than 5 tokens" in summary
    assert summary.startswith(f"train: kept {60 - dropped} of 60 pairs (0 empty, ")


def test_every_pair_longer_than_max_len_is_an_error(paths, tmp_path, capsys):
    config = tiny_config(paths)
    config.data.max_len = 1
    status, _, err = train(config, tmp_path / "run", capsys)
    assert_clean_error(status, err, "no training pair is at most data.max_len=1 tokens long")


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------


def run_train_py(args, parse_flags=False):
    """train.py in a subprocess; with parse_flags=True as if it passed
    `flags_parser=config_flags.parse_flags` to app.run."""
    env = dict(os.environ, S2S_JAX_CACHE="off", JAX_PLATFORMS="cpu")
    if parse_flags:
        code = (
            "import sys\n"
            "source = open('train.py').read().replace('app.run(main)', "
            "'from s2s_jax.config import flags as config_flags; app.run(main, flags_parser=config_flags.parse_flags)')\n"
            "assert 'flags_parser' in source\n"
            "sys.argv = ['train.py', *sys.argv[1:]]\n"
            "exec(compile(source, 'train.py', 'exec'), {'__name__': '__main__'})\n"
        )
        command = [sys.executable, "-c", code, *args]
    else:
        command = [sys.executable, "train.py", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def assert_flag_error(result, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "FATAL Flags parsing error" in result.stderr, result.stderr[-3000:]
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr[-3000:])


def test_unknown_config_key_with_parse_flags(tmp_path):
    result = run_train_py(
        ["--config=configs/default.py", f"--workdir={tmp_path}", "--config.train.nmu_steps=3"], parse_flags=True
    )
    assert_flag_error(result, "--config.train.nmu_steps: the config has no key 'nmu_steps'", "did you mean 'num_steps'")


def test_unknown_config_key_in_train_py(tmp_path):
    result = run_train_py(["--config=configs/default.py", f"--workdir={tmp_path}", "--config.model.hiden_size=3"])
    assert_flag_error(result, "hiden_size")


def test_config_value_of_the_wrong_type(tmp_path):
    result = run_train_py(["--config=configs/default.py", f"--workdir={tmp_path}", "--config.train.batch_size=abc"])
    assert_flag_error(result, "--config.train.batch_size=abc", "invalid literal for int()")


def test_an_exception_inside_the_config_file_points_at_its_line(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(
        "from s2s_jax.configs import default\n\n\ndef get_config():\n"
        "    config = default.get_config()\n    config.model.hidden_size = 1 // 0\n    return config\n"
    )
    result = run_train_py([f"--config={path}", f"--workdir={tmp_path / 'run'}"])
    assert_flag_error(result, f"{path}:6: ZeroDivisionError")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ml_collections uses load_module
def test_config_file_that_does_not_exist(tmp_path, capsys):
    from ml_collections import config_flags

    # What train.py's FLAGS.config is for a missing file: ml_collections defers the error.
    config = config_flags.config_flags.ConfigFileFlagParser("config").parse(str(tmp_path / "nope.py"))
    status, _, err = train(config, tmp_path / "run", capsys)
    assert_clean_error(status, err, "cannot load the --config file", "nope.py")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("train.batch_size", -4, "train.batch_size must be positive, got -4"),
        ("model.hidden_size", 0, "model.hidden_size must be positive, got 0"),
        ("data.vocab_size", 5, "data.vocab_size=5 leaves no room beyond the 4 reserved ids"),
        ("train.learning_rate", float("nan"), "train.learning_rate must be a positive finite number, got nan"),
        ("train.learning_rate", -1e-3, "train.learning_rate must be a positive finite number"),
        ("model.dropout", 1.5, "model.dropout must be in [0, 1), got 1.5"),
        ("data.max_train_pairs", -5, "data.max_train_pairs must be a finite number >= 0, got -5"),
        ("seed", -1, "seed must be a finite number >= 0, got -1"),
        (
            "train.lr_schedule",
            "linear",
            "train.lr_schedule must be one of constant, cosine, rsqrt, plateau, got 'linear'",
        ),
        ("train.optimizer", "sgd", "train.optimizer must be one of adam, adamw, got 'sgd'"),
        ("train.dtype", "float16", "train.dtype must be one of float32, bfloat16, got 'float16'"),
        ("train.on_nonfinite", "ignore", "train.on_nonfinite must be one of stop, skip, got 'ignore'"),
        ("model.attention", "luong", "model.attention must be one of"),
    ],
)
def test_impossible_config_values(paths, tmp_path, capsys, key, value, message):
    config = tiny_config(paths)
    section, _, name = key.rpartition(".")
    setattr(config[section] if section else config, name, value)
    status, _, err = train(config, tmp_path / "run", capsys)
    assert_clean_error(status, err, message)
    assert not os.path.exists(tmp_path / "run" / "config.json")  # refused before touching the workdir


def test_workdir_that_is_a_file(paths, tmp_path, capsys):
    path = write(tmp_path / "file", "x")
    status, _, err = train(tiny_config(paths), path, capsys)
    assert_clean_error(status, err, f"--workdir {path} is a file")


# ---------------------------------------------------------------------------
# resuming and tokenizers
# ---------------------------------------------------------------------------


def test_resuming_with_a_different_model_names_the_setting(paths, tmp_path, capsys):
    workdir = tmp_path / "run"
    os.makedirs(workdir)
    run_config.check_and_save(tiny_config(paths), str(workdir))
    write(workdir / "spm.model", "")  # a previous run trained a tokenizer (contents not read here)
    changed = tiny_config(paths)
    changed.model.hidden_size = 32
    status, _, err = train(changed, workdir, capsys)
    assert_clean_error(status, err, "was trained with model.hidden_size=24, this run asks for 32", "new --workdir")


def test_resuming_with_clipping_switched_off_is_refused_and_a_new_threshold_is_not(paths, tmp_path, capsys):
    """clip_norm > 0 adds a step to the optimizer chain (its saved state's structure); its value may change."""
    workdir = tmp_path / "run"
    os.makedirs(workdir)
    run_config.check_and_save(tiny_config(paths), str(workdir))
    write(workdir / "spm.model", "")
    retuned = tiny_config(paths)
    retuned.train.clip_norm *= 2
    run_config.check_and_save(retuned, str(workdir))
    unclipped = tiny_config(paths)
    unclipped.train.clip_norm = 0.0
    status, _, err = train(unclipped, workdir, capsys)
    assert_clean_error(
        status, err, "this run asks for 0.0: that turns gradient clipping (clip_norm > 0) off", "new --workdir"
    )


def test_a_config_without_a_default_key_is_one_error_naming_it(paths, tmp_path, capsys):
    """A get_config() written from scratch (or for another version) that lacks keys the code reads."""
    config = tiny_config(paths)
    with config.unlocked():
        del config.data["prepare_workers"]
    status, _, err = train(config, tmp_path / "run", capsys)
    assert_clean_error(status, err, "the config has no data.prepare_workers", "s2s_jax.configs.default.get_config()")


def test_a_workdir_whose_first_run_failed_takes_a_new_config(paths, tmp_path):
    run_config.check_and_save(tiny_config(paths), str(tmp_path))  # then it failed on, say, a data error
    changed = tiny_config(paths)
    changed.model.hidden_size = 32
    run_config.check_and_save(changed, str(tmp_path))
    assert run_config.load(str(tmp_path)).model.hidden_size == 32


def test_a_damaged_config_json_is_named(paths, tmp_path, capsys):
    workdir = tmp_path / "run"
    os.makedirs(workdir)
    write(workdir / "config.json", '{"seed": 0, "data": {')
    write(workdir / "spm.model", "")
    status, _, err = train(tiny_config(paths), workdir, capsys)
    assert_clean_error(status, err, f"{workdir / 'config.json'} is not a readable config")


def test_vocab_size_too_large_for_the_corpus_shrinks_and_says_so(paths, tmp_path, capsys):
    config = tiny_config(paths)
    config.data.vocab_size = 5000
    result = training_data.prepare(config, str(tmp_path))
    out = capsys.readouterr().out
    size = result.src_tokenizer.vocab_size
    assert size < 5000
    assert f"vocab: data.vocab_size=5000 is more than this corpus supports; the tokenizer has {size} ids" in out


def test_vocab_size_too_small_for_the_characters_is_an_error(paths, tmp_path, capsys):
    config = tiny_config(paths)
    config.data.vocab_size = 10
    status, _, err = train(config, tmp_path / "run", capsys)
    assert_clean_error(
        status, err, "data.vocab_size=10 is too small for the tokenizer", "Set data.vocab_size to at least"
    )


# ---------------------------------------------------------------------------
# decode.py on a workdir that cannot translate
# ---------------------------------------------------------------------------


def decode(workdir, capsys, **overrides):
    status = decode_cli.run(decode_flags(workdir, **overrides))
    out, err = capsys.readouterr()
    return status, out, err


def test_decode_without_a_workdir(tmp_path, capsys):
    status, _, err = decode(tmp_path / "nothing", capsys)
    assert_clean_error(status, err, f"{tmp_path / 'nothing'} has no config.json")


def test_decode_without_a_tokenizer(paths, tmp_path, capsys):
    run_config.check_and_save(tiny_config(paths), str(tmp_path))  # a first run that failed early
    status, _, err = decode(tmp_path, capsys)
    assert_clean_error(status, err, f"{tmp_path} has no tokenizer", "train first")


def test_decode_without_a_checkpoint(paths, tmp_path, capsys):
    run_config.check_and_save(tiny_config(paths), str(tmp_path))
    with open(paths["train_src"], encoding="utf-8") as f:
        train_tokenizer(f.read().splitlines(), str(tmp_path / "spm"), 40)
    os.makedirs(tmp_path / "checkpoints")  # created by a run interrupted before its first save
    os.makedirs(tmp_path / "best")
    for which in ("best", "latest"):
        status, _, err = decode(tmp_path, capsys, checkpoint=which)
        assert_clean_error(status, err, f"no checkpoint in {tmp_path}", "train first")


# ---------------------------------------------------------------------------
# serve.py
# ---------------------------------------------------------------------------


def test_serve_without_the_serve_extra_is_one_error_line_naming_the_install(tmp_path):
    """`pip install -e .` (no [serve]) installs s2s-serve; without FastAPI it says how to get it."""
    code = (
        "import runpy, sys\n"
        "sys.modules['fastapi'] = None  # as if the serve extra were not installed\n"
        f"sys.argv = ['serve.py', '--workdir={tmp_path}']\n"
        "runpy.run_path('serve.py', run_name='__main__')\n"
    )
    env = dict(os.environ, S2S_JAX_CACHE="off", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the server needs FastAPI and uvicorn") and 'pip install -e ".[serve]"' in last, last
