"""Translate text with a trained workdir: text -> ids -> the inference path -> text.

`Translator` loads what a finished run left in its workdir (config, tokenizers,
parameters), turns lines into source ids and hands them to
`s2s_jax.inference.Inference`, the one path that batches, searches and restores
the input order.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from typing import Callable, Iterable

import jax
import numpy as np

from s2s_jax import checkpoints, config_utils, inference, parallel
from s2s_jax.alignment import MODES, format_alignment, word_weights
from s2s_jax.inference import SearchOptions
from s2s_jax.model import Seq2Seq, make_model
from s2s_jax.text import normalize
from s2s_jax.tokenizer import BOS_ID, EOS_ID, load_workdir_tokenizers

__all__ = ["Hypothesis", "Score", "SearchOptions", "Translator", "attention_maps"]


@dataclasses.dataclass
class Hypothesis:
    text: str
    score: float
    tokens: list[int]


@dataclasses.dataclass
class Score:
    """A given translation's log-probability: the sum over its tokens and EOS, and per token."""

    total: float
    length: int  # target tokens + EOS

    @property
    def per_token(self) -> float:
        return self.total / self.length


_SURROGATES = re.compile("[\ud800-\udfff]")


def _encodable(line: str) -> str:
    """Lone surrogates (from undecodable bytes read with errors='surrogateescape') become
    U+FFFD: sentencepiece only accepts valid Unicode."""
    return _SURROGATES.sub("\ufffd", line)


class Translator:
    """A trained model ready to translate; built from a workdir alone."""

    def __init__(self, workdir: str, checkpoint: str = "best"):
        self.config = config_utils.load(workdir)
        self.src_tokenizer, self.tgt_tokenizer = load_workdir_tokenizers(workdir)
        params, self.meta = checkpoints.load_params(workdir, checkpoint)
        self.model = make_model(self.config, self.src_tokenizer.vocab_size, self.tgt_tokenizer.vocab_size)
        self.max_len = self.config.data.max_len
        self.inference = inference.Inference(self.model, self.config.decode, self.max_len)
        self.params = parallel.replicate(params, self.inference.mesh)

    def encode_lines(self, lines: list[str], warn: Callable[[str], None]) -> list[list[int]]:
        """Source ids of each line (normalised like the training data), at most data.max_len."""
        out = []
        for number, row in enumerate(self.src_tokenizer.tokenize(self._normalized(lines)), 1):
            if len(row) > self.max_len:
                warn(f"line {number}: {len(row)} tokens, truncated to data.max_len={self.max_len}")
                row = row[: self.max_len]
            out.append(row)
        return out

    def translate(
        self,
        lines: list[str],
        opts: SearchOptions = SearchOptions(),
        batch_size: int = 64,
        seed: int = 0,
        progress: Callable[[Iterable], Iterable] | None = None,
        warn: Callable[[str], None] = lambda msg: print(f"warning: {msg}", file=sys.stderr),
        prefixes: list[str] | None = None,
    ) -> list[list[Hypothesis]]:
        """n-best hypotheses per input line, in input order; an empty line gives an empty hypothesis.

        A line longer than data.max_len subword tokens is cut to that length, with a warning.
        `prefixes` (one per line, "" = none) forces the start of each translation: the
        output is the prefix, normalised and tokenized like the targets, followed by the
        search's continuation (whose score it reports).
        """
        if isinstance(lines, str):
            raise TypeError("translate takes a list of lines, not one string")
        opts.check()
        ids = self.encode_lines(lines, warn)
        forced = None if prefixes is None else self._target_ids(prefixes)
        results = self.inference.run(
            self.params, ids, opts, batch_size=batch_size, seed=seed, progress=progress, prefixes=forced
        )
        return [
            [Hypothesis(self.tgt_tokenizer.detokenize([c.tokens])[0], c.score, c.tokens) for c in candidates]
            for candidates in results
        ]

    def nbest(self, lines: list[str], n: int, beam_size: int | None = None, alpha: float | None = None,
              **kwargs) -> list[list[Hypothesis]]:
        """The n best beam-search translations of each line, best first (`--nbest N`)."""
        cfg = self.config.decode
        opts = SearchOptions(beam_size=beam_size or max(n, cfg.beam_size), alpha=cfg.alpha if alpha is None else alpha,
                             nbest=n)
        return self.translate(lines, opts, **kwargs)

    def sample(self, lines: list[str], n: int = 1, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
               seed: int = 0, **kwargs) -> list[list[Hypothesis]]:
        """n samples per line with their log-probabilities (`--sample`); the same seed gives the same samples."""
        opts = SearchOptions(sample=True, nbest=n, temperature=temperature, top_k=top_k, top_p=top_p,
                             with_scores=True)
        return self.translate(lines, opts, seed=seed, **kwargs)

    def _normalized(self, texts: list[str]) -> list[str]:
        """Text as the run's data config normalised its training pairs."""
        data_cfg = self.config.data
        return [normalize(_encodable(t), data_cfg.lowercase, data_cfg.d2l_preprocess) for t in texts]

    def _target_ids(self, texts: list[str]) -> list[list[int]]:
        """Target-side ids of given text (references, prefixes), normalised like the training targets."""
        return self.tgt_tokenizer.tokenize(self._normalized(texts))

    def align(self, lines: list[str], outputs: list[list[int]], mode: str = "hard") -> list[str]:
        """Word alignment of each line with its output ids, from a teacher-forced pass's attention:
        `i-j` pairs (hard) or rows of weights (soft); s2s_jax/alignment.py says how pieces merge."""
        if mode not in MODES:
            raise ValueError(f"alignment mode must be one of {', '.join(MODES)}, got {mode!r}")
        maps = attention_maps(self, lines, outputs)
        return [format_alignment(word_weights(m["weights"], m["src"][:-1], m["tgt"][:-1]), mode) for m in maps]

    def score(
        self,
        lines: list[str],
        targets: list[str],
        batch_size: int = 64,
        warn: Callable[[str], None] = lambda msg: print(f"warning: {msg}", file=sys.stderr),
    ) -> list[Score]:
        """The model's log-probability of each target line as the translation of its line.

        Targets are normalised and tokenized like the training targets; sources as in
        `translate` (cut to data.max_len with a warning).
        """
        if isinstance(lines, str) or isinstance(targets, str):
            raise TypeError("score takes lists of lines, not strings")
        results = self.inference.score(self.params, self.encode_lines(lines, warn), self._target_ids(targets), batch_size)
        return [Score(c.score, len(c.tokens) + 1) for c in results]


def attention_maps(translator: "Translator", lines: list[str], outputs: list[list[int]]) -> list[dict]:
    """Teacher-forced attention weights of each (source line, output tokens) pair, with pieces.

    Returns, per line, {'weights': [T, S] array, 'src': source pieces, 'tgt': output pieces};
    the output includes the final </s>, the source its </s>.
    """
    if translator.config.model.attention == "none":
        raise ValueError("this model has no attention (model.attention=none): nothing to plot")
    weights_fn = jax.jit(lambda params, src, tgt_in: translator.model.apply(
        {"params": params}, src, tgt_in, method=Seq2Seq.attention_weights))
    src_ids = translator.encode_lines(lines, warn=lambda msg: None)
    maps = []
    for ids, out in zip(src_ids, outputs):
        if not ids:
            maps.append({"weights": np.zeros((0, 0)), "src": [], "tgt": []})
            continue
        src = np.array([ids + [EOS_ID]], np.int32)
        tgt_in = np.array([[BOS_ID] + out], np.int32)
        weights = np.asarray(weights_fn(translator.params, src, tgt_in))[0]
        maps.append({
            "weights": weights,
            "src": translator.src_tokenizer.pieces(ids) + ["</s>"],
            "tgt": translator.tgt_tokenizer.pieces(out) + ["</s>"],
        })
    return maps
