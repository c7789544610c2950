"""Sentencepiece subword tokenizer: train, load, tokenize, detokenize.

Ids are fixed across models (PAD=0, BOS=1, EOS=2, UNK=3) so the model and the
batching never need to ask a tokenizer what padding is. Text is
normalised by `text.normalize` before it gets here, so sentencepiece runs with
the identity rule and detokenize(tokenize(s)) == s for normalised s.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Sequence

import sentencepiece as spm

from s2s_jax.data import languages
from s2s_jax.errors import DataError
from s2s_jax.files import write_atomic

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

# The sentencepiece algorithms `data.spm_model_type` may name.
MODEL_TYPES = ("unigram", "bpe", "word", "char")
_SPECIAL_IDS = {"pad": PAD_ID, "bos": BOS_ID, "eos": EOS_ID, "unk": UNK_ID}

# Byte fallback spends 256 ids on raw bytes. Below this vocabulary size that is
# more than a quarter of the vocabulary, so small vocabularies go without it
# (unseen characters then become UNK).
BYTE_FALLBACK_MIN_VOCAB = 1024

# The unigram trainer's result depends on its thread count (it splits the
# E-step by thread), so it is pinned: the same text gives the same model on
# any machine. 16 is sentencepiece's own default.
_TRAIN_THREADS = 16


class Tokenizer:
    """A loaded sentencepiece model with the project's special ids."""

    def __init__(self, model_path: str):
        self.model_path = model_path
        if not os.path.isfile(model_path):
            raise DataError(f"{model_path}: sentencepiece model not found")
        try:
            self._sp = spm.SentencePieceProcessor(model_file=model_path)
        except (RuntimeError, OSError) as err:
            raise DataError(
                f"{model_path}: not a readable sentencepiece model (corrupt or truncated?): {err}"
            ) from None
        sp = self._sp
        ids = {"pad": sp.pad_id(), "bos": sp.bos_id(), "eos": sp.eos_id(), "unk": sp.unk_id()}
        if ids != _SPECIAL_IDS:
            raise DataError(
                f"{model_path}: special ids are {ids}, but s2s-jax needs {_SPECIAL_IDS}; "
                "train the model with s2s_jax.data.tokenizer.train_tokenizer"
            )

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included (may be below the requested size on a small corpus)."""
        return self._sp.get_piece_size()

    def tokenize(self, texts: Sequence[str], num_threads: int = -1) -> list[list[int]]:
        """Subword ids of each text, without BOS/EOS (batching and the inference path add those).

        A leading language tag ('<2fr> a man', s2s_jax/data/languages.py) is one piece: sentencepiece
        puts a lone '▁' piece before a user-defined symbol at the start, which is dropped.
        """
        if isinstance(texts, str):
            raise TypeError("tokenize takes a sequence of sentences, not one string")
        if not texts:
            return []
        texts = list(texts)
        return self._untagged_space(texts, self._sp.encode(texts, out_type=int, num_threads=num_threads))

    def _untagged_space(self, texts: list[str], rows: list[list[int]]) -> list[list[int]]:
        """`rows` without the lone '▁' piece that comes before a leading language tag."""
        space = self._sp.piece_to_id("\u2581")
        for text, row in zip(texts, rows):
            if len(row) > 1 and row[0] == space and languages.leading_tag(text):
                del row[0]
        return rows

    def piece_id(self, piece: str) -> int | None:
        """The id of `piece` when the model has it as one piece, else None."""
        i = self._sp.piece_to_id(piece)
        return None if i == UNK_ID and piece != self._sp.id_to_piece(UNK_ID) else i

    def sample(self, texts: Sequence[str], alpha: float, nbest: int, seed: int) -> list[list[int]]:
        """Sampled segmentations (subword regularisation: alpha smooths the distribution, nbest
        -1 samples from the whole lattice); the same seed gives the same ids on any machine
        (sentencepiece's generator reseeded, one thread)."""
        if not texts:
            return []
        spm.set_random_generator_seed(seed)
        texts = list(texts)
        rows = self._sp.encode(texts, out_type=int, enable_sampling=True, alpha=alpha, nbest_size=nbest, num_threads=1)
        return self._untagged_space(texts, rows)

    def detokenize(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Text of each id row, cut at its first EOS, with PAD and BOS dropped.

        Rows may be numpy arrays straight from the decoder.
        """
        return [self._sp.decode(_strip_specials(row)) for row in ids]

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """The subword strings of `ids` (specials included), e.g. to label attention plots."""
        return [self._sp.id_to_piece(int(i)) for i in ids]

    def vocab_listing(self) -> str:
        """'piece<TAB>score' lines, as sentencepiece's own .vocab file, for people to read."""
        sp = self._sp
        return "".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(self.vocab_size))

    def __repr__(self) -> str:
        return f"Tokenizer({self.model_path!r}, vocab_size={self.vocab_size})"


def workdir_model_paths(workdir: str, joint: bool) -> tuple[str, str]:
    """Where a run keeps its source and target sentencepiece models (the same file when joint)."""
    if joint:
        path = os.path.join(workdir, "spm.model")
        return path, path
    return os.path.join(workdir, "spm_src.model"), os.path.join(workdir, "spm_tgt.model")


def load_workdir_tokenizers(workdir: str) -> tuple[Tokenizer, Tokenizer]:
    """The (source, target) tokenizers a training run left in its workdir."""
    joint, _ = workdir_model_paths(workdir, joint=True)
    if os.path.exists(joint):
        tokenizer = Tokenizer(joint)
        return tokenizer, tokenizer
    src, tgt = workdir_model_paths(workdir, joint=False)
    if not (os.path.exists(src) or os.path.exists(tgt)):
        raise DataError(
            f"{workdir} has no tokenizer (spm.model, or spm_src.model and spm_tgt.model): "
            f"train first with `python train.py --config CONFIG --workdir {workdir}`"
        )
    return Tokenizer(src), Tokenizer(tgt)


def _strip_specials(row: Sequence[int]) -> list[int]:
    out = []
    for i in row:
        i = int(i)
        if i == EOS_ID:
            break
        if i != PAD_ID and i != BOS_ID:
            out.append(i)
    return out


def train_tokenizer(
    texts: Iterable[str],
    model_prefix: str,
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    byte_fallback: bool | None = None,
    user_defined_symbols: Sequence[str] = (),
) -> Tokenizer:
    """Trains a sentencepiece model on normalised `texts`, writes MODEL_PREFIX.model/.vocab.

    Deterministic: the same texts give a byte-identical .model file. A
    `vocab_size` too large for the corpus shrinks (see `Tokenizer.vocab_size`)
    instead of failing. `byte_fallback=None` turns byte fallback on when
    `vocab_size >= BYTE_FALLBACK_MIN_VOCAB`. `user_defined_symbols` (language tags) are kept as
    single pieces wherever they occur. The .model file is written
    atomically, so a crash never leaves a half-written model that a resumed
    run would load.
    """
    texts = [t for t in texts if t]
    if not texts:
        raise DataError("cannot train a tokenizer: no non-empty training sentences")
    if byte_fallback is None:
        byte_fallback = vocab_size >= BYTE_FALLBACK_MIN_VOCAB
    proto = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=proto,
            model_type=model_type,
            vocab_size=vocab_size,
            character_coverage=character_coverage,
            pad_id=PAD_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            unk_id=UNK_ID,
            hard_vocab_limit=False,
            normalization_rule_name="identity",
            byte_fallback=byte_fallback,
            split_digits=True,
            user_defined_symbols=list(user_defined_symbols),
            num_threads=_TRAIN_THREADS,
            minloglevel=2,
        )
    except (RuntimeError, ValueError) as err:
        raise DataError(_explain_training_error(str(err), vocab_size, model_type, byte_fallback)) from None
    directory = os.path.dirname(model_prefix)
    if directory:
        os.makedirs(directory, exist_ok=True)
    model_path = model_prefix + ".model"
    write_atomic(model_path, proto.getvalue())
    tokenizer = Tokenizer(model_path)
    write_atomic(model_prefix + ".vocab", tokenizer.vocab_listing().encode("utf-8"))
    return tokenizer


def _explain_training_error(message: str, vocab_size: int, model_type: str, byte_fallback: bool) -> str:
    """Says what to change, instead of sentencepiece's internal check that failed."""
    small = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
    if small:
        needed = int(small.group(2))
        parts = "4 special ids, 256 byte-fallback pieces and" if byte_fallback else "4 special ids and"
        return (
            f"data.vocab_size={vocab_size} is too small for the tokenizer: {parts} one id per "
            f"distinct character of the training text need {needed} ids. Set data.vocab_size to at "
            f"least {needed}."
        )
    if "model_type" in message.lower() or "kModelType" in message:
        return f"unknown sentencepiece model type {model_type!r}; use one of {', '.join(MODEL_TYPES)}"
    return f"sentencepiece training failed (vocab_size={vocab_size}, model_type={model_type!r}): {message}"
