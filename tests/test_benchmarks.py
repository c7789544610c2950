"""The benchmark drivers' statistics (benchmarks/_rounds.py, versus_pytorch.py) and bench_decoder_step.py's two sides: no process run."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "benchmarks"))

import _rounds  # noqa: E402
import bench_decode  # noqa: E402
import latency  # noqa: E402
import versus_pytorch  # noqa: E402


def figures(train, greedy, beam):
    """A bench JSON's three figures in the `{median, ...}` shape both sides print."""
    fig = lambda x: {"median": x, "min": x, "max": x, "repeats": [x]}  # noqa: E731
    return {"train_tok_per_s": fig(train), "greedy_sent_per_s": fig(greedy), "beam_sent_per_s": fig(beam)}


def test_last_json_object_skips_noise_and_takes_the_last():
    out = 'warming up\n{"a": 1}\n{not json\n[1, 2]\n{"b": 2}\n\n'
    assert _rounds.last_json_object(out) == {"b": 2}
    assert _rounds.last_json_object("no json here\n") is None


def test_drop_option_removes_both_spellings():
    argv = ["--rounds", "3", "--batch-sizes", "32", "--rounds=2", "--roundsx", "1"]
    assert _rounds.drop_option(argv, "--rounds") == ["--batch-sizes", "32", "--roundsx", "1"]


def test_rotated_starts_each_round_elsewhere():
    items = ["p", "q", "r"]
    assert [_rounds.rotated(items, k) for k in range(4)] == [
        ["p", "q", "r"],
        ["q", "r", "p"],
        ["r", "p", "q"],
        ["p", "q", "r"],
    ]
    assert _rounds.rotated([], 3) == []


def test_median_of_reads_summaries_plain_numbers_and_absent_keys():
    assert _rounds.median_of({"x": {"median": 2.5}}, "x") == 2.5
    assert _rounds.median_of({"x": 7}, "x") == 7.0
    assert _rounds.median_of({}, "x") is None
    assert _rounds.median_of({"x": None}, "x") is None


def test_ratio_and_spread():
    assert _rounds.ratio(3.0, 2.0) == 1.5
    assert _rounds.ratio(None, 2.0) is None
    assert _rounds.ratio(3.0, 0.0) is None
    assert _rounds.spread([1.2, None, 0.8, 1.0]) == {"median": 1.0, "min": 0.8, "max": 1.2, "rounds": 3}
    assert _rounds.spread([None])["rounds"] == 0
    assert _rounds.format_spread(_rounds.spread([1.0, 1.1])) == "1.05× (1.00–1.10×, 2 rounds)"
    assert _rounds.format_spread(_rounds.spread([])) == "—"


def test_each_ratio_is_against_the_faster_reference_of_that_figure():
    refs = {"torch_packed": figures(1000, 200, 50), "torch_padded": figures(1200, 180, 55)}
    r = versus_pytorch.round_ratios(figures(1500, 250, 44), refs)
    assert r["faster_reference"] == {
        "train_tok_per_s": "torch_padded",
        "greedy_sent_per_s": "torch_packed",
        "beam_sent_per_s": "torch_padded",
    }
    assert r["ratio"] == {"train_tok_per_s": 1.25, "greedy_sent_per_s": 1.25, "beam_sent_per_s": 0.8}


def test_a_figure_missing_on_one_side():
    ours = figures(1500, 250, 44)
    del ours["beam_sent_per_s"]  # bench.py --beam 0
    refs = {"torch_packed": figures(1000, 200, 50), "torch_padded": {"train_tok_per_s": {"median": 1200}}}
    r = versus_pytorch.round_ratios(ours, refs)
    assert r["faster_reference"]["greedy_sent_per_s"] == "torch_packed"
    assert r["ratio"]["beam_sent_per_s"] is None


def test_summary_and_table_per_model():
    refs = {"torch_packed": figures(1000, 100, 10), "torch_padded": figures(900, 100, 10)}
    rounds = [
        {"round": k, "model": model, **versus_pytorch.round_ratios(figures(t, 100, 10), refs)}
        for k, (model, t) in enumerate([("plain", 900), ("plain", 1100), ("plain", 1000), ("attention", 1200)], 1)
    ]
    summary = versus_pytorch.summarize(rounds, ["plain", "attention"])
    assert summary["plain"]["train_tok_per_s"] == {"median": 1.0, "min": 0.9, "max": 1.1, "rounds": 3}
    assert summary["attention"]["train_tok_per_s"]["rounds"] == 1
    table = versus_pytorch.markdown_table(rounds, summary)
    assert "| 2 | plain | 1.10× (packed) | 1.00× (packed) | 1.00× (packed) |" in table
    assert "| plain | 1.00× (0.90–1.10×, 3 rounds) |" in table


def test_commands_share_the_protocol_and_pass_our_extra_args_to_bench_only(tmp_path):
    exe = tmp_path / "python"
    exe.write_text("")
    args = versus_pytorch.parse_args(
        ["--python", str(exe), "--torch-python", str(exe), "--torch-ref", str(exe), "--bench-args=--unroll 2"]
    )
    cmds = versus_pytorch.commands(args, "attention")
    protocol = ["--steps", "3", "--repeats", "3", "--beam", "5", "--attention"]
    assert cmds["torch_packed"][2:] == protocol
    assert cmds["torch_padded"][2:] == [*protocol, "--padded-decoder"]
    assert cmds["s2s_jax"][1].endswith("bench.py") and cmds["s2s_jax"][2:] == [*protocol, "--unroll", "2"]


@pytest.mark.parametrize("argv", [["--models", "plain,big"], ["--rounds", "0"], ["--torch-python", "/no/such/python"]])
def test_bad_options_exit_with_a_usage_error(argv):
    with pytest.raises(SystemExit) as e:
        versus_pytorch.parse_args(argv)
    assert e.value.code == 2


def decode_results(*entries):
    """bench_decode.py's JSON: (mode, batch, sent/s, digest) per entry."""
    return {
        "results": [{"mode": m, "batch": b, "sent_per_s": {"median": v}, "outputs_sha256": d} for m, b, v, d in entries]
    }


def test_compaction_round_ratios_and_output_check():
    compact = decode_results(("greedy", 32, 300.0, "a"), ("beam5", 32, 120.0, "b"))
    plain = decode_results(("greedy", 32, 240.0, "a"), ("beam5", 32, 100.0, "c"))
    r = bench_decode.compaction_round(compact, plain)
    assert r["ratio"] == {"greedy@32": 1.25, "beam5@32": 1.2}
    assert r["outputs_equal"] == {"greedy@32": True, "beam5@32": False}
    assert r["sent_per_s"]["greedy@32"] == {"compact": 300.0, "plain": 240.0}
    rounds = [{"round": 1, **r}]
    summary = {k: _rounds.spread([r["ratio"][k]]) for k in ("greedy@32", "beam5@32")}
    table = bench_decode.compaction_table(rounds, summary)
    assert "| 1 | 1.25× | 1.20× |" in table and "| all | 1.25× (1.25–1.25×, 1 round) |" in table


def test_decode_rounds_refuses_no_compact():
    with pytest.raises(SystemExit) as e:
        bench_decode.parse_args(["--rounds", "2", "--no-compact"])
    assert e.value.code == 2


def test_run_json_returns_the_last_object_and_fails_in_one_line():
    result = _rounds.run_json([sys.executable, "-c", "print('x'); print('{\"a\": 1}')"], "ok")
    assert result["a"] == 1 and set(result) == {"a", "load_before"}
    with pytest.raises(_rounds.RunError, match="exited with 3: boom"):
        _rounds.run_json(
            [
                sys.executable,
                "-c",
                "import sys; print('boom', file=sys.stderr); sys.exit(3)",
            ],
            "bad",
        )
    with pytest.raises(_rounds.RunError, match="no JSON"):
        _rounds.run_json([sys.executable, "-c", "print('hello')"], "silent")


def test_latency_percentiles_and_protocol_lengths():
    """p50/p90 pick the nearest rank of the sorted per-sentence times; protocol sources are a line's words + EOS."""
    times = [0.001 * k for k in range(1, 11)]  # 1..10 ms, shuffled order must not matter
    assert latency.summary_ms(times[::-1]) == {"p50": 5.0, "p90": 9.0, "mean": 5.5}
    assert latency.protocol_lengths(["a b c", "x", " ".join(["w"] * 100)]) == [4, 2, 64]


def test_latency_rounds_run_every_contender(tmp_path):
    args = latency.parse_args(["--rounds", "1", "--workdir", str(tmp_path), "--input", __file__])
    names = list(latency.contenders(args))
    assert names[:4] == ["protocol ours", "protocol ours int8", "protocol torch", "protocol torch int8"]
    assert names[4:] == ["trained", "trained shortlist", "trained int8", "trained shortlist int8"]
    assert latency.contenders(args)["protocol torch int8"][-3:] == ["--protocol", "--torch", "--int8"]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_decoder_step_bench_times_two_equal_steps(cell):
    """bench_decoder_step.py's two sides compute the same step: the model's XLA step and the
    fused kernel over a length-1 sequence give the same new hidden state (rows 1 and 5)."""
    import numpy as np

    from s2s_jax.kernels import recurrence as kernel

    if not kernel.available():
        pytest.skip("the fused kernel is not built here")
    import bench_decoder_step

    for rows in (1, 5):
        xla, xla_args, fused, fused_args = bench_decoder_step.step_functions(cell, rows, 64)
        want, got = np.asarray(xla(*xla_args)), np.asarray(fused(*fused_args))
        assert want.shape == got.shape == (rows, 64)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert np.abs(want).max() > 0.05  # a real state, not zeros
