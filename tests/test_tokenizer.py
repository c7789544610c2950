"""Sentencepiece training, round trips and special ids (s2s_jax.data.tokenizer)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from s2s_jax.data.text import normalize
from s2s_jax.data.tokenizer import BOS_ID, BYTE_FALLBACK_MIN_VOCAB, EOS_ID, PAD_ID, UNK_ID, Tokenizer, train_tokenizer
from s2s_jax.errors import DataError

WORDS = (
    "the cat dog sees a small red house près de la maison où le garçon élève déjà "
    "mangé œuvre naïve Ça va à l'école Noël forêt hôtel 2024 42 !"
).split()


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 10))) for _ in range(n)]
    return [normalize(t) for t in texts + ["Est-ce que ça va\u202f? Oui\u00a0!"]]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return corpus()


@pytest.fixture(scope="module")
def tok(texts, tmp_path_factory) -> Tokenizer:
    return train_tokenizer(texts, str(tmp_path_factory.mktemp("spm") / "spm"), vocab_size=120)


def test_special_ids(tok):
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert tok.pieces([PAD_ID, BOS_ID, EOS_ID, UNK_ID]) == ["<pad>", "<s>", "</s>", "<unk>"]
    ids = tok.tokenize(["le garçon"])[0]
    assert ids and all(i > UNK_ID for i in ids)  # no BOS/EOS added, nothing unknown


def test_round_trip_of_normalised_text(tok, texts):
    sentences = texts[:50] + ["Ça va ? Oui !", "l'école près de la forêt 2024", "naïve œuvre ! déjà mangé"]
    assert tok.detokenize(tok.tokenize(sentences)) == sentences


def test_detokenize_cuts_at_eos_and_drops_pad_and_bos(tok):
    ids = tok.tokenize(["le chat"])[0]
    row = np.array([BOS_ID, *ids, EOS_ID, *ids, PAD_ID], dtype=np.int32)
    padded = np.array([*ids, PAD_ID, PAD_ID], dtype=np.int32)
    assert tok.detokenize([row, padded, [EOS_ID, *ids]]) == ["le chat", "le chat", ""]


def test_pieces_label_subwords(tok):
    ids = tok.tokenize(["la maison"])[0]
    pieces = tok.pieces(ids)
    assert len(pieces) == len(ids) and "".join(pieces).replace("\u2581", " ").strip() == "la maison"


def test_digits_are_split(tok):
    pieces = tok.pieces(tok.tokenize(["2024"])[0])
    assert [p.lstrip("\u2581") for p in pieces if p != "\u2581"] == ["2", "0", "2", "4"]


def test_training_is_deterministic(texts, tmp_path):
    a = train_tokenizer(texts, str(tmp_path / "a"), vocab_size=120)
    b = train_tokenizer(list(texts), str(tmp_path / "b"), vocab_size=120)
    assert (tmp_path / "a.model").read_bytes() == (tmp_path / "b.model").read_bytes()
    assert a.tokenize(texts) == b.tokenize(texts)


def test_too_large_vocab_shrinks_instead_of_failing(texts, tmp_path):
    tok = train_tokenizer(texts, str(tmp_path / "big"), vocab_size=5000)
    assert 4 < tok.vocab_size < 5000
    assert tok.detokenize(tok.tokenize(texts[:20])) == texts[:20]


def test_byte_fallback_spells_unseen_characters(texts, tmp_path):
    tok = train_tokenizer(texts, str(tmp_path / "bytes"), vocab_size=2000)
    assert tok.vocab_size >= 256
    unseen = "Zürich 東京 😀 ﬁ Ａ"  # not NFKC: the tokenizer itself must not normalise
    ids = tok.tokenize([unseen])[0]
    assert UNK_ID not in ids and tok.detokenize([ids]) == [unseen]


def test_small_vocab_goes_without_byte_fallback(tok):
    assert 120 < BYTE_FALLBACK_MIN_VOCAB and tok.vocab_size <= 120
    assert UNK_ID in tok.tokenize(["東京"])[0]


def test_vocab_below_the_character_count_says_what_to_change(texts, tmp_path):
    with pytest.raises(ValueError, match=r"vocab_size=10 is too small.*at least \d+"):
        train_tokenizer(texts, str(tmp_path / "tiny"), vocab_size=10)
    with pytest.raises(ValueError, match="model type 'nonsense'"):
        train_tokenizer(texts, str(tmp_path / "bad"), vocab_size=100, model_type="nonsense")


def test_bpe_model_type(texts, tmp_path):
    tok = train_tokenizer(texts, str(tmp_path / "bpe"), vocab_size=100, model_type="bpe")
    assert tok.detokenize(tok.tokenize(texts[:20])) == texts[:20]


def test_missing_or_corrupt_model_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        Tokenizer(str(tmp_path / "missing.model"))
    corrupt = tmp_path / "corrupt.model"
    corrupt.write_bytes(b"not a model")
    with pytest.raises(DataError, match="corrupt"):
        Tokenizer(str(corrupt))
