"""Translate text with a trained workdir: load, bucket, search, restore the input order.

Inputs are sorted by length and cut into batches whose shapes come from a small
set (rows a power of two up to the batch size, source length a multiple of 8),
so a long file compiles only a few search functions and every batch is dense.
With several devices the rows are rounded up to a multiple of the device count and
split across them (s2s_jax/parallel.py); the parameters are replicated.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import sys
from typing import Callable, Iterable

import jax
import numpy as np

from s2s_jax import checkpoints as ckpt_lib
from s2s_jax import config_utils, corpus, decoding, parallel, training
from s2s_jax.data import normalize
from s2s_jax.model import Seq2Seq
from s2s_jax.tokenizer import BOS_ID, EOS_ID, PAD_ID


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """How to search; hashable so each distinct setting compiles once."""

    beam_size: int = 1
    alpha: float = 0.6
    nbest: int = 1
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    with_scores: bool = False  # greedy/sampling: rescore outputs by teacher forcing (an extra pass)

    def check(self) -> None:
        if self.beam_size < 1 or self.nbest < 1:
            raise ValueError("beam_size and nbest must be at least 1")
        if self.nbest > self.beam_size and not self.sample:
            raise ValueError(f"nbest={self.nbest} needs beam_size >= nbest (got {self.beam_size})")
        if self.sample and self.temperature <= 0:
            raise ValueError("sampling needs temperature > 0 (use greedy decoding for temperature 0)")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclasses.dataclass
class Hypothesis:
    text: str
    score: float
    tokens: list[int]


_SURROGATES = re.compile("[\ud800-\udfff]")


def _encodable(line: str) -> str:
    """Lone surrogates (from undecodable bytes read with errors='surrogateescape') become
    U+FFFD: sentencepiece only accepts valid Unicode."""
    return _SURROGATES.sub("\ufffd", line)


def _bucket(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def _rows(n: int, batch_size: int) -> int:
    rows = 1
    while rows < n:
        rows *= 2
    return min(rows, batch_size)


class Translator:
    """A trained model ready to translate; built from a workdir alone."""

    def __init__(self, workdir: str, checkpoint: str = "best"):
        self.config = config_utils.load(workdir)
        self.src_tokenizer, self.tgt_tokenizer = corpus.load_tokenizers(workdir)
        self.params, self.meta = ckpt_lib.load_params(workdir, checkpoint)
        self.mesh = parallel.make_mesh()  # rows of each batch split over every device
        self.params = parallel.replicate(self.params, self.mesh)
        self.model = training.make_model(self.config, self.src_tokenizer.vocab_size, self.tgt_tokenizer.vocab_size)
        self.max_len = self.config.data.max_len
        self.max_steps = training.static_max_steps(self.config)
        self._compiled: dict[SearchOptions, Callable] = {}

    def _search_fn(self, opts: SearchOptions) -> Callable:
        if opts not in self._compiled:
            self._compiled[opts] = jax.jit(functools.partial(_search, self.model, opts, self.max_steps))
        return self._compiled[opts]

    def encode_lines(self, lines: list[str], warn: Callable[[str], None]) -> list[list[int]]:
        data_cfg = self.config.data
        d2l = data_cfg.get("d2l_preprocess", False)  # absent in workdirs written before it existed
        texts = [normalize(_encodable(line), data_cfg.lowercase, d2l) for line in lines]
        ids = self.src_tokenizer.encode(texts)
        out = []
        for number, row in enumerate(ids, 1):
            if len(row) > self.max_len:
                warn(f"line {number}: {len(row)} tokens, truncated to data.max_len={self.max_len}")
                row = row[: self.max_len]
            out.append(row + [EOS_ID] if row else [])
        return out

    def translate(
        self,
        lines: list[str],
        opts: SearchOptions = SearchOptions(),
        batch_size: int = 64,
        seed: int = 0,
        progress: Callable[[Iterable], Iterable] | None = None,
        warn: Callable[[str], None] = lambda msg: print(f"warning: {msg}", file=sys.stderr),
    ) -> list[list[Hypothesis]]:
        """n-best hypotheses per input line, in input order; an empty line gives an empty hypothesis.

        A line longer than data.max_len subword tokens is cut to that length, with a warning.
        """
        opts.check()
        if isinstance(lines, str):
            raise TypeError("translate takes a list of lines, not one string")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        ids = self.encode_lines(lines, warn)
        results: list[list[Hypothesis]] = [[Hypothesis("", 0.0, [])] for _ in lines]
        order = sorted((i for i, row in enumerate(ids) if row), key=lambda i: len(ids[i]))
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        search = self._search_fn(opts)
        key = jax.random.key(seed)
        for number, chunk in enumerate(progress(chunks) if progress else chunks):
            rows = parallel.round_up_rows(_rows(len(chunk), batch_size), self.mesh)
            src = np.zeros((rows, _bucket(max(len(ids[i]) for i in chunk), 8)), np.int32)
            for row, i in enumerate(chunk):
                src[row, : len(ids[i])] = ids[i]
            caps = training.max_output_lengths(src, self.config.decode, self.max_steps)
            placed = parallel.shard_batch(self.mesh, {"src": src, "caps": caps})
            out = search(self.params, placed["src"], placed["caps"], jax.random.fold_in(key, number))
            tokens, scores = (parallel.to_host(x) for x in out)
            for row, i in enumerate(chunk):
                results[i] = [
                    Hypothesis(self.tgt_tokenizer.decode([tokens[row, k]])[0], float(scores[row, k]), _cut(tokens[row, k]))
                    for k in range(tokens.shape[1])
                ]
        return results


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
        src = np.array([ids], np.int32)
        tgt_in = np.array([[BOS_ID] + out], np.int32)
        weights = np.asarray(weights_fn(translator.params, src, tgt_in))[0]
        maps.append({
            "weights": weights,
            "src": translator.src_tokenizer.pieces(ids[:-1]) + ["</s>"],
            "tgt": translator.tgt_tokenizer.pieces(out) + ["</s>"],
        })
    return maps


def _cut(row: np.ndarray) -> list[int]:
    out = []
    for token in row.tolist():
        if token in (EOS_ID, PAD_ID):
            break
        out.append(token)
    return out


def _search(model: Seq2Seq, opts: SearchOptions, max_steps: int, params, src, caps, key):
    """(tokens [B, nbest, max_steps], scores [B, nbest]); scores are log-probabilities
    (length-normalised for beam search)."""
    memory, state = model.apply({"params": params}, src, method=Seq2Seq.encode)
    step_fn = functools.partial(model.apply, {"params": params}, method=Seq2Seq.decode_step)
    if opts.sample:
        samples = []
        for k in range(opts.nbest):
            tokens, lengths = decoding.sample(
                step_fn, memory, state, jax.random.fold_in(key, k), max_steps=max_steps,
                max_lengths=caps, temperature=opts.temperature, top_k=opts.top_k, top_p=opts.top_p,
            )
            score = _score(opts, step_fn, memory, state, tokens, lengths)
            samples.append((tokens, score))
        return (
            jax.numpy.stack([t for t, _ in samples], 1),
            jax.numpy.stack([s for _, s in samples], 1),
        )
    if opts.beam_size == 1:
        tokens, lengths = decoding.greedy_search(step_fn, memory, state, max_steps=max_steps, max_lengths=caps)
        score = _score(opts, step_fn, memory, state, tokens, lengths)
        return tokens[:, None], score[:, None]
    tokens, scores, _ = decoding.batch_beam_search(
        step_fn, memory, state, beam_size=opts.beam_size, max_steps=max_steps,
        max_length=caps, alpha=opts.alpha, nbest=opts.nbest,
    )
    return tokens, scores


def _score(opts: SearchOptions, step_fn, memory, state, tokens, lengths):
    if not opts.with_scores:
        return jax.numpy.zeros(tokens.shape[0])
    return decoding.sequence_log_prob(step_fn, memory, state, tokens, lengths)
