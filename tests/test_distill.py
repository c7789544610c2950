"""Sequence-level distillation (distill.py, s2s_jax/decoding/distillation.py): the distilled corpus
is the teacher's decode.py output, an interrupted distillation resumes to the identical corpus, and
the student trains on it with the real references for validation."""

import json
import os

import pytest

from s2s_jax.cli import distill
from s2s_jax.configs import default
from s2s_jax.data import text as text_lib
from s2s_jax.decoding import distillation
from s2s_jax.decoding.translator import Translator
from tests.helpers import TINY_TRAIN_FLAGS, run_cli

# Teacher batches of 8 over the 200 training lines: 25 batches, 4 shards of 8 batches.
BATCH = 8


def _student_args(trained, workdir, *extra):
    args = ["distill.py", "--config=configs/default.py", f"--teacher={trained.workdir}", f"--workdir={workdir}"]
    args += [*TINY_TRAIN_FLAGS, f"--batch_size={BATCH}", *extra]
    return args + [f"--config.data.{key}={path}" for key, path in trained.paths.items()]


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


@pytest.fixture(scope="module")
def distilled(trained_workdir, tmp_path_factory):
    """distill.py --distill_only over the tiny corpus's training sources: (workdir, corpus path)."""
    workdir = str(tmp_path_factory.mktemp("student") / "run")
    result = run_cli(_student_args(trained_workdir, workdir, "--distill_only"), env_cache=trained_workdir.cache)
    assert result.returncode == 0, result.stderr[-3000:]
    corpus = os.path.join(workdir, "distill", "train.tgt")
    assert f"distilled corpus: {corpus}" in result.stdout
    return workdir, corpus


def test_the_distilled_corpus_is_the_teachers_decode_output(trained_workdir, distilled, tmp_path):
    _, corpus = distilled
    hyp = tmp_path / "decode.out"
    args = ["decode.py", f"--workdir={trained_workdir.workdir}", f"--input={trained_workdir.paths['train_src']}"]
    args += [f"--output={hyp}", "--beam_size=5", f"--batch_size={BATCH}"]
    result = run_cli(args, env_cache=trained_workdir.cache)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = _read(corpus)
    assert len(lines) == len(_read(trained_workdir.paths["train_src"])) == 200
    assert lines == _read(hyp)
    assert len(os.listdir(os.path.join(os.path.dirname(corpus), "shards"))) == 4


def test_an_interrupted_distillation_resumes_to_the_identical_corpus(trained_workdir, distilled, tmp_path):
    _, corpus = distilled
    source = trained_workdir.paths["train_src"]
    lines = _read(source)
    teacher = Translator(trained_workdir.workdir)
    alpha = teacher.config.decode.alpha  # distill.py's default: the teacher's
    request = distillation.source_request([trained_workdir.workdir], "best", source, 5, alpha, BATCH)
    out_dir = str(tmp_path / "distill")
    translate, calls = teacher.translate, []

    def failing_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return translate(*args, **kwargs)

    teacher.translate = failing_after_two
    with pytest.raises(KeyboardInterrupt):
        distillation.distill(teacher, lines, out_dir, request)
    assert sorted(os.listdir(os.path.join(out_dir, "shards"))) == ["00000.txt", "00001.txt"]
    teacher.translate = translate
    texts, translated = distillation.distill(teacher, lines, out_dir, request)
    assert translated == 2  # only the shards the interruption left
    assert texts == _read(corpus)


def test_several_training_files_are_distilled_as_one_corpus(trained_workdir, distilled, tmp_path):
    """data.train_src/train_tgt listing two files (of the same name, in two directories): one
    distilled file each, together the one-file corpus line for line."""
    _, corpus = distilled
    src, tgt = _read(trained_workdir.paths["train_src"]), _read(trained_workdir.paths["train_tgt"])
    files = {}
    for part, rows in (("a", slice(0, 120)), ("b", slice(120, None))):
        (tmp_path / part).mkdir()
        for side, lines in (("src", src), ("tgt", tgt)):
            path = tmp_path / part / f"train.{side}"
            path.write_text("".join(line + "\n" for line in lines[rows]), encoding="utf-8")
            files.setdefault(side, []).append(str(path))
    workdir = tmp_path / "run"
    args = _student_args(trained_workdir, workdir, "--distill_only")
    args += [f"--config.data.train_src={','.join(files['src'])}", f"--config.data.train_tgt={','.join(files['tgt'])}"]
    result = run_cli(args, env_cache=trained_workdir.cache)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = (workdir / "distill" / name for name in ("0.train.tgt", "1.train.tgt"))
    assert len(_read(first)) == 120 and len(_read(second)) == 80
    assert _read(first) + _read(second) == _read(corpus)
    with open(workdir / "distill" / "manifest.json", encoding="utf-8") as f:
        assert len(json.load(f)["source_sha256"]) == 2


def test_a_distillation_with_other_settings_is_refused(trained_workdir, distilled):
    workdir, _ = distilled
    result = run_cli(
        _student_args(trained_workdir, workdir, "--distill_only", "--beam_size=3"), env_cache=trained_workdir.cache
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "beam_size differ" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_student_config_without_source_files_is_refused(trained_workdir, tmp_path):
    args = ["distill.py", "--config=configs/quickstart.py", f"--teacher={trained_workdir.workdir}"]
    result = run_cli([*args, f"--workdir={tmp_path / 'run'}"], env_cache=trained_workdir.cache)
    assert result.returncode == 1
    assert "error: distillation translates source files" in result.stderr and "Traceback" not in result.stderr


def test_with_references_the_student_reads_the_references_then_the_distilled_targets(trained_workdir, distilled):
    """--with_references: the student's training pairs are the reference pairs followed by each source
    with its distilled target; without it, the distilled pairs alone."""
    _, corpus = distilled
    src, tgt, hyp = _read(trained_workdir.paths["train_src"]), _read(trained_workdir.paths["train_tgt"]), _read(corpus)
    assert hyp != tgt
    for with_references, expected in ((False, list(zip(src, hyp))), (True, list(zip(src + src, tgt + hyp)))):
        data = default.get_config().data
        data.train_src, data.train_tgt = trained_workdir.paths["train_src"], trained_workdir.paths["train_tgt"]
        data.train_src, data.train_tgt = distill.student_files(data, [corpus], with_references)
        assert [tuple(pair) for pair in text_lib.load_corpus(data, "train")] == expected


@pytest.mark.slow
def test_the_student_trains_on_the_distilled_targets(trained_workdir, distilled):
    workdir, corpus = distilled
    result = run_cli(_student_args(trained_workdir, workdir), env_cache=trained_workdir.cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(already written)" in result.stdout and "valid BLEU" in result.stdout
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        data = json.load(f)["data"]
    assert data["train_tgt"] == os.path.abspath(corpus)
    assert data["valid_tgt"] == trained_workdir.paths["valid_tgt"]  # validated against the references
    assert os.path.exists(os.path.join(workdir, "final_metrics.json"))
