"""train.py and decode.py as a user runs them (subprocesses on a tiny corpus)."""

import json
import os

import pytest

from s2s_jax import bleu
from tests.helpers import ROOT, TINY_TRAIN_FLAGS
from tests.helpers import run_cli as run

pytestmark = pytest.mark.slow


@pytest.fixture
def workdir(trained_workdir):
    return trained_workdir.workdir, trained_workdir.paths, trained_workdir.cache


def test_train_writes_everything_decoding_needs(workdir):
    wd, _, _ = workdir
    for name in ("config.json", "spm.model", "metrics.jsonl", "checkpoints", "best", "final_metrics.json"):
        assert os.path.exists(os.path.join(wd, name)), name


def test_rerunning_train_resumes_instead_of_restarting(workdir):
    wd, paths, cache = workdir
    args = ["train.py", "--config=configs/default.py", f"--workdir={wd}", *TINY_TRAIN_FLAGS]
    args += [f"--config.data.{key}={path}" for key, path in paths.items()]
    result = run(args, env_cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from step 40" in result.stdout


def test_decode_keeps_line_count_and_empty_lines_and_scores(workdir, tmp_path):
    wd, paths, cache = workdir
    with open(paths["valid_src"], encoding="utf-8") as f:
        lines = f.read().splitlines()[:6]
    lines.insert(2, "")
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ref = tmp_path / "ref.txt"
    out = tmp_path / "out.txt"
    scores = tmp_path / "scores.json"
    args = [
        "decode.py",
        f"--workdir={wd}",
        f"--input={src}",
        f"--output={out}",
        f"--reference={ref}",
        "--beam_size=2",
        f"--score_json={scores}",
    ]
    # Second reference: the first outputs upper-cased (lowercased BLEU differs from cased), then junk.
    ref.write_text("\n".join(["x"] * len(lines)) + "\n", encoding="utf-8")
    first = run(args, env_cache=cache)
    assert first.returncode == 0, first.stderr[-3000:]
    hyps = out.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(hyps) == len(lines)
    assert hyps[2] == ""
    ref.write_text("\n".join([h.upper() for h in hyps[:4]] + ["x"] * (len(lines) - 4)) + "\n", encoding="utf-8")
    result = run(args + ["--sentence_bleu=2"], env_cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "BLEU = " in result.stderr and "chrF = " in result.stderr and "version:" in result.stderr
    report = json.loads(scores.read_text(encoding="utf-8"))
    expected = bleu.score_report(hyps, ref.read_text(encoding="utf-8").split("\n")[:-1])
    for key in ("bleu", "bleu_lc", "chrf", "bleu_signature", "chrf_signature"):
        assert report[key] == expected[key], key
    assert report["beam_size"] == 2 and report["sentences"] == len(lines) and report["step"] > 0
    assert report["bleu_signature"].startswith("nrefs:1|case:mixed")
    assert f"BLEU = {report['bleu']:.2f}" in result.stderr
    # d2l's per-sentence lines, in input order, and the exact-match count.
    refs = ref.read_text(encoding="utf-8").split("\n")[:-1]
    for src, hyp, r in zip(lines, hyps, refs):
        assert f"{src} => {hyp}, bleu {bleu.sentence_bleu_d2l(hyp, r, k=2):.3f}" in result.stderr
    assert f"exact: {sum(h == r for h, r in zip(hyps, refs))} of {len(lines)}" in result.stderr


def test_decode_nbest_from_stdin(workdir):
    wd, _, cache = workdir
    result = run(
        ["decode.py", f"--workdir={wd}", "--beam_size=3", "--nbest=3"],
        stdin="the red cat\nsees a dog\n",
        env_cache=cache,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [(r[0], r[1]) for r in rows] == [("0", "0"), ("0", "1"), ("0", "2"), ("1", "0"), ("1", "1"), ("1", "2")]
    scores = [float(r[2]) for r in rows[:3]]
    assert scores == sorted(scores, reverse=True)


def test_rescore_reorders_an_nbest_list_by_the_models_score(workdir, tmp_path):
    from s2s_jax.decoding.search import length_penalty
    from s2s_jax.decoding.translator import Translator

    wd, _, cache = workdir
    sources = ["the red cat", "sees a dog", "a big house has the car"]
    src, nbest, out = tmp_path / "in.txt", tmp_path / "nbest.txt", tmp_path / "rescored.txt"
    src.write_text("\n".join(sources) + "\n", encoding="utf-8")
    made = run(
        [
            "decode.py",
            f"--workdir={wd}",
            f"--input={src}",
            f"--output={nbest}",
            "--beam_size=3",
            "--nbest=3",
            "--alpha=0.6",
            "--word_scores",  # a fifth field, the words' probabilities, which rescoring drops
        ],
        env_cache=cache,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    assert all(len(row.split("\t")) == 5 for row in nbest.read_text(encoding="utf-8").splitlines())
    # Shuffle the rows: rescoring must group by the line column, not rely on the order.
    rows = nbest.read_text(encoding="utf-8").splitlines()
    nbest.write_text("\n".join(rows[::-1]) + "\n", encoding="utf-8")
    result = run(
        ["decode.py", f"--workdir={wd}", f"--input={src}", f"--rescore={nbest}", f"--output={out}", "--alpha=0.6"],
        env_cache=cache,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rescored = [line.split("\t") for line in out.read_text(encoding="utf-8").splitlines()]
    assert all(len(r) == 4 for r in rescored)
    assert [(r[0], r[1]) for r in rescored] == [(str(i), str(k)) for i in range(3) for k in range(3)]
    assert sorted(r[3] for r in rescored) == sorted(r.split("\t")[3] for r in rows)
    translator = Translator(wd)
    for i in range(3):
        group = [r for r in rescored if r[0] == str(i)]
        scores = translator.score([sources[i]] * 3, [r[3] for r in group])
        expected = [round(s.total / float(length_penalty(s.length, 0.6)), 4) for s in scores]
        assert [float(r[2]) for r in group] == expected
        assert expected == sorted(expected, reverse=True)
    bad = tmp_path / "bad.txt"
    bad.write_text("0\t0\t-1.0\tok\n7\t0\t-1.0\tno such line\n", encoding="utf-8")
    error = run(["decode.py", f"--workdir={wd}", f"--input={src}", f"--rescore={bad}"], env_cache=cache)
    assert error.returncode == 1 and f"{bad}:2: input line 7 does not exist" in error.stderr


def test_unknown_config_key_is_an_error(tmp_path):
    result = run(["train.py", "--config=configs/default.py", f"--workdir={tmp_path}", "--config.train.nmu_steps=3"])
    assert result.returncode != 0
    assert "nmu_steps" in result.stderr


def test_missing_workdir_for_decode_is_a_clear_error(tmp_path):
    result = run(["decode.py", f"--workdir={tmp_path / 'nothing'}"], stdin="hello\n")
    assert result.returncode == 1
    assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_plot_attention_writes_one_png_per_nonempty_line(workdir, tmp_path):
    import matplotlib.image

    wd, _, cache = workdir
    plots = tmp_path / "plots"
    result = run(
        ["decode.py", f"--workdir={wd}", f"--plot_attention={plots}"],
        stdin="the red cat\n\nsees a big dog\n",
        env_cache=cache,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in plots.iterdir()) == ["00001.png", "00003.png"]
    image = matplotlib.image.imread(plots / "00003.png")
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.05  # a real picture, not a blank canvas


def test_score_writes_each_references_log_probability(workdir, tmp_path):
    from s2s_jax.decoding.translator import Translator

    wd, paths, cache = workdir
    with open(paths["valid_src"], encoding="utf-8") as f:
        sources = f.read().splitlines()[:5] + [""]
    with open(paths["valid_tgt"], encoding="utf-8") as f:
        refs = f.read().splitlines()[:5] + ["the"]
    src, ref, out = tmp_path / "in.txt", tmp_path / "ref.txt", tmp_path / "scores.txt"
    src.write_text("\n".join(sources) + "\n", encoding="utf-8")
    ref.write_text("\n".join(refs) + "\n", encoding="utf-8")
    result = run(
        ["decode.py", f"--workdir={wd}", f"--input={src}", f"--reference={ref}", f"--output={out}", "--score"],
        env_cache=cache,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "BLEU" not in result.stderr
    rows = [line.split("\t") for line in out.read_text(encoding="utf-8").splitlines()]
    expected = Translator(wd).score(sources, refs)
    assert [(float(t), float(p)) for t, p in rows] == [(round(s.total, 4), round(s.per_token, 4)) for s in expected]
    assert all(s.total < 0 and s.length >= 2 for s in expected)
    ref.write_text("one line\n", encoding="utf-8")
    mismatch = run(["decode.py", f"--workdir={wd}", f"--input={src}", f"--reference={ref}", "--score"], env_cache=cache)
    assert mismatch.returncode == 1 and "error: " in mismatch.stderr and "Traceback" not in mismatch.stderr


def test_print_alignment_appends_word_alignments(workdir, tmp_path):
    wd, _, cache = workdir
    sources = ["the red cat", "", "sees a big dog"]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(sources) + "\n", encoding="utf-8")
    lines = {}
    for mode in ("hard", "soft"):
        result = run(["decode.py", f"--workdir={wd}", f"--input={src}", f"--print_alignment={mode}"], env_cache=cache)
        assert result.returncode == 0, result.stderr[-3000:]
        lines[mode] = result.stdout.splitlines()
        assert len(lines[mode]) == 3 and all(" ||| " in line for line in lines[mode])
    for source, hard, soft in zip(sources, lines["hard"], lines["soft"]):
        text, pairs = hard.split(" ||| ")
        assert soft.split(" ||| ")[0] == text
        if not source:
            assert (text, pairs) == ("", "")
            continue
        rows = [[float(w) for w in row.split(",")] for row in soft.split(" ||| ")[1].split(" ")]
        assert len(rows) == len(text.split()) and all(len(r) == len(source.split()) for r in rows)
        assert all(0.0 <= sum(r) <= 1.0 + 1e-3 for r in rows)
        assert [p.split("-")[1] for p in pairs.split(" ")] == [str(j) for j in range(len(rows))]
        for pair, row in zip(pairs.split(" "), rows):  # hard = argmax of the soft row (where unique)
            if row.count(max(row)) == 1:
                assert int(pair.split("-")[0]) == row.index(max(row))
    nbest = run(
        ["decode.py", f"--workdir={wd}", f"--input={src}", "--print_alignment=hard", "--nbest=2", "--beam_size=2"],
        env_cache=cache,
    )
    assert nbest.returncode == 1 and "use it with --nbest 1" in nbest.stderr


def test_alignment_needs_an_attention_model(workdir):
    from s2s_jax.decoding.translator import Translator

    translator = Translator(workdir[0])
    translator.config.model.attention = "none"
    with pytest.raises(ValueError, match="no attention"):
        translator.align(["the cat"], [[5, 6]])


@pytest.mark.parametrize("flag", [{"print_alignment": "hard"}, {"plot_attention": "plots"}])
def test_decode_refuses_alignment_of_a_model_without_attention_before_translating(
    workdir, tmp_path, monkeypatch, capsys, flag
):
    from s2s_jax.cli import decode as decode_cli
    from s2s_jax.decoding.translator import Translator
    from tests.helpers import decode_flags

    load = Translator.__init__

    def load_without_attention(self, *args, **kwargs):
        load(self, *args, **kwargs)
        self.members[0].config.model.attention = "none"

    def never(*args, **kwargs):
        raise AssertionError("translated before refusing")

    monkeypatch.setattr(Translator, "__init__", load_without_attention)
    monkeypatch.setattr(Translator, "translate", never)
    source = tmp_path / "in.txt"
    source.write_text("the red cat\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert decode_cli.run(decode_flags(workdir[0], input=str(source), **flag)) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: this model has no attention (model.attention=none): nothing to {'align' if 'print_alignment' in flag else 'plot'}"
    ]


def test_plot_attention_into_a_file_is_refused_before_loading(workdir, tmp_path, capsys):
    from s2s_jax.cli import decode as decode_cli
    from tests.helpers import decode_flags

    taken = tmp_path / "taken"
    taken.write_text("", encoding="utf-8")
    assert decode_cli.run(decode_flags(str(tmp_path / "no-such-workdir"), plot_attention=str(taken))) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"error: --plot_attention {taken} is a file: it names the directory the plots go into"
    )


def test_prefix_forces_the_start_of_each_translation(workdir, tmp_path):
    wd, _, cache = workdir
    sources = ["the red cat", "sees a big dog", "a car"]
    prefixes = ["", "seeso", "ao gib"]  # the toy language: reversed words + "o"
    src, pre = tmp_path / "in.txt", tmp_path / "prefix.txt"
    src.write_text("\n".join(sources) + "\n", encoding="utf-8")
    pre.write_text("\n".join(prefixes) + "\n", encoding="utf-8")
    plain = run(["decode.py", f"--workdir={wd}", f"--input={src}", "--beam_size=2"], env_cache=cache)
    forced = run(
        ["decode.py", f"--workdir={wd}", f"--input={src}", f"--prefix={pre}", "--beam_size=2"], env_cache=cache
    )
    assert plain.returncode == 0 and forced.returncode == 0, forced.stderr[-3000:]
    plain_lines, forced_lines = plain.stdout.splitlines(), forced.stdout.splitlines()
    assert forced_lines[0] == plain_lines[0]
    for prefix, line in zip(prefixes[1:], forced_lines[1:]):
        assert line.split()[: len(prefix.split())] == prefix.split(), (prefix, line)
    pre.write_text("only one line\n", encoding="utf-8")
    error = run(["decode.py", f"--workdir={wd}", f"--input={src}", f"--prefix={pre}"], env_cache=cache)
    assert error.returncode == 1 and "has 1 lines, the input has 3" in error.stderr


def test_python_api_nbest_and_sample(workdir):
    from s2s_jax.decoding.translator import Translator

    translator = Translator(workdir[0])
    lines = ["the red cat", "sees a dog"]
    best = translator.nbest(lines, 3)
    assert [len(h) for h in best] == [3, 3]
    assert all([x.score for x in h] == sorted((x.score for x in h), reverse=True) for h in best)
    samples = translator.sample(lines, n=4, temperature=1.5, seed=7)
    assert samples == translator.sample(lines, n=4, temperature=1.5, seed=7)
    assert [len(h) for h in samples] == [4, 4] and all(x.score < 0 for h in samples for x in h)
    scored = translator.score([lines[0]] * 4, [x.text for x in samples[0]])
    for sample, score in zip(samples[0], scored):
        if translator.tgt_tokenizer.tokenize([sample.text])[0] == sample.tokens:  # text round-trips to its ids
            assert abs(score.total - sample.score) < 1e-4


def test_the_readme_python_example_runs(trained_workdir, capsys):
    """The README's Translator block, on the tiny trained workdir instead of runs/quickstart."""
    import re

    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    block = re.search(r"From Python, the same path.*?```python\n(.*?)```", readme, re.S).group(1)
    assert "Translator(" in block and "ensemble" in block
    exec(compile(block.replace("runs/quickstart", trained_workdir.workdir), "README.md", "exec"), {})  # noqa: S102
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 and printed[1].startswith("['") and "-" in printed[1]
