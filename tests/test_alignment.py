"""Piece attention merged into word alignments, on hand-made weights."""

import numpy as np
import pytest

from s2s_jax.decoding.alignment import format_alignment, word_index, word_weights

SRC = ["\u2581the", "\u2581ca", "t", "\u2581sees", "."]  # "the cat sees."
OUT = ["\u2581le", "\u2581ch", "at", "\u2581voit"]  # "le chat voit"
# rows: output pieces (+ EOS), columns: source pieces (+ EOS)
WEIGHTS = np.array(
    [
        [0.7, 0.1, 0.1, 0.0, 0.0, 0.1],
        [0.1, 0.5, 0.3, 0.1, 0.0, 0.0],
        [0.0, 0.2, 0.6, 0.1, 0.1, 0.0],
        [0.0, 0.0, 0.1, 0.6, 0.3, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
    ]
)


def test_word_index_starts_a_word_at_each_marker():
    assert word_index(SRC) == [0, 1, 1, 2, 2]
    assert word_index(["x", "\u2581", "2", "0"]) == [0, 1, 1, 1]  # a word without a leading marker, split digits
    assert word_index([]) == []


def test_source_pieces_are_summed_and_output_pieces_averaged():
    words = word_weights(WEIGHTS, SRC, OUT)
    expected = np.array(
        [
            [0.7, 0.2, 0.0],
            [(0.1 + 0.0) / 2, (0.8 + 0.8) / 2, (0.1 + 0.2) / 2],
            [0.0, 0.1, 0.9],
        ]
    )
    np.testing.assert_allclose(words, expected)


def test_hard_is_pharaoh_source_target_pairs_and_soft_one_row_per_output_word():
    words = word_weights(WEIGHTS, SRC, OUT)
    assert format_alignment(words, "hard") == "0-0 1-1 2-2"
    assert format_alignment(words, "soft") == "0.700,0.200,0.000 0.050,0.800,0.150 0.000,0.100,0.900"
    with pytest.raises(ValueError, match="hard, soft"):
        format_alignment(words, "fuzzy")


def test_empty_output_or_source_gives_an_empty_alignment():
    for mode in ("hard", "soft"):
        assert format_alignment(word_weights(WEIGHTS, SRC, []), mode) == ""
        assert format_alignment(word_weights(WEIGHTS, [], OUT), mode) == ""


@pytest.mark.slow  # builds on the trained workdir (train.py, ~20 s)
def test_batched_attention_maps_equal_one_line_at_a_time(trained_workdir):
    """attention_maps pads lines into a few shapes; each line's weights are those of its own pass."""
    import jax

    from s2s_jax.data.tokenizer import BOS_ID, EOS_ID
    from s2s_jax.decoding.translator import Translator, attention_maps
    from s2s_jax.models.seq2seq import Seq2Seq

    translator = Translator(trained_workdir.workdir)
    with open(trained_workdir.paths["valid_src"], encoding="utf-8") as f:
        lines = f.read().splitlines()[:12] + ["", "the cat"]
    outputs = [h[0].tokens for h in translator.translate(lines)]
    maps = attention_maps(translator, lines, outputs, batch_size=8)
    member = translator.members[0]
    one = jax.jit(lambda p, s, t: member.model.apply({"params": p}, s, t, method=Seq2Seq.attention_weights))
    for ids, out, got in zip(member.encode_lines(lines, warn=print), outputs, maps):
        if not ids:
            assert got["src"] == [] and got["weights"].size == 0
            continue
        want = np.asarray(
            one(member.params, np.array([ids + [EOS_ID]], np.int32), np.array([[BOS_ID] + out], np.int32))
        )[0]
        assert got["weights"].shape == want.shape == (len(out) + 1, len(ids) + 1)
        np.testing.assert_allclose(got["weights"], want, atol=1e-5)
