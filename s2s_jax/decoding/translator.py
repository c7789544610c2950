"""Translate text with a trained workdir: text -> ids -> the inference path -> text.

`Translator` loads what finished runs left in their workdirs (config, tokenizers,
parameters; one model or an ensemble), turns lines into source ids and hands them to
`s2s_jax.decoding.inference.Inference`, the one path that batches, searches and restores
the input order.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from typing import Any, Callable, Iterable, Sequence

import jax
import numpy as np

from s2s_jax import parallel
from s2s_jax.data import languages, sentences
from s2s_jax.data.text import normalize
from s2s_jax.data.tokenizer import BOS_ID, UNK_ID, Tokenizer, load_workdir_tokenizers
from s2s_jax.decoding import inference, word_scores
from s2s_jax.decoding import shortlist as lexical
from s2s_jax.decoding.alignment import MODES, format_alignment, word_weights
from s2s_jax.decoding.inference import SearchOptions
from s2s_jax.decoding.mbr import MBROptions, ranking
from s2s_jax.decoding.word_scores import WordScore
from s2s_jax.models import int8_weights
from s2s_jax.models.seq2seq import Seq2Seq, make_model
from s2s_jax.workdir import checkpoints, run_config

__all__ = ["Hypothesis", "MBROptions", "Member", "Score", "SearchOptions", "Translator", "WordScore", "attention_maps"]


@dataclasses.dataclass
class Hypothesis:
    """One translation. With SearchOptions(token_scores=True) also each token's log-probability
    (the EOS's last, when the search ended with one) and the words of `text` with theirs
    (s2s_jax/decoding/word_scores.py)."""

    text: str
    score: float
    tokens: list[int]
    token_log_probs: list[float] | None = None
    words: list[WordScore] | None = None
    constraints_met: bool = True  # False: a constrained translation cut at its length cap without every phrase


@dataclasses.dataclass
class Score:
    """A given translation's log-probability: the sum over its tokens and EOS, and per token;
    with `word_scores` asked, each token's term (EOS last) and each word's."""

    total: float
    length: int  # target tokens + EOS
    token_log_probs: list[float] | None = None
    words: list[WordScore] | None = None

    @property
    def per_token(self) -> float:
        return self.total / self.length


_SURROGATES = re.compile("[\ud800-\udfff]")
_LINE_NUMBER = re.compile(r"line (\d+):(.*)", re.DOTALL)


def _encodable(line: str) -> str:
    """Lone surrogates (from undecodable bytes read with errors='surrogateescape') become
    U+FFFD: sentencepiece only accepts valid Unicode."""
    return _SURROGATES.sub("\ufffd", line)


@dataclasses.dataclass
class Member:
    """One trained model as a workdir left it: config, tokenizers, model and (placed) parameters."""

    workdir: str
    config: Any
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer
    model: Seq2Seq
    params: Any
    meta: dict
    attention_fn: Callable | None = dataclasses.field(default=None, repr=False)  # jitted once, on first use

    @classmethod
    def load(cls, workdir: str, checkpoint: str, mesh: jax.sharding.Mesh, int8: bool = False) -> Member:
        """`int8`: the model reads int8 copies of its weight matrices (s2s_jax/models/int8_weights.py)."""
        config = run_config.load(workdir)
        src_tokenizer, tgt_tokenizer = load_workdir_tokenizers(workdir)
        params, meta = checkpoints.load_params(workdir, checkpoint)
        tags = languages.run_languages(config.data).symbol_ids(tgt_tokenizer)
        model = make_model(config, src_tokenizer.vocab_size, tgt_tokenizer.vocab_size, tags, strict=False)
        if int8:
            model, params = int8_weights.quantized(model, params)
        return cls(workdir, config, src_tokenizer, tgt_tokenizer, model, parallel.replicate(params, mesh), meta)

    @property
    def languages(self) -> languages.RunLanguages:
        """The run's language pairs, target languages and whether its sources carry tags."""
        return languages.run_languages(self.config.data)

    def normalized(self, texts: list[str]) -> list[str]:
        """Text as this run's data config normalised its training pairs."""
        data_cfg = self.config.data
        return [normalize(_encodable(t), data_cfg.lowercase, data_cfg.d2l_preprocess) for t in texts]

    def encode_lines(
        self, lines: list[str], warn: Callable[[str], None], target_lang: str | None = None
    ) -> list[list[int]]:
        """Source ids of each line (normalised like the training data, with the tag of `target_lang`
        when the run tags its sources), at most data.max_len. ValueError for a target language the
        run does not have, or none where it has several."""
        max_len = self.config.data.max_len
        language = self.languages.source_tag_language(target_lang)
        texts = [languages.tagged(t, language) if t else t for t in self.normalized(lines)]
        out = []
        for number, row in enumerate(self.src_tokenizer.tokenize(texts), 1):
            if len(row) > max_len:
                warn(f"line {number}: {len(row)} tokens, truncated to data.max_len={max_len}")
                row = row[:max_len]
            out.append(row)
        return out


def _joined(document: sentences.Segmented, parts: list[list[Hypothesis]], mean: bool = False) -> list[Hypothesis]:
    """A paragraph's candidates from its sentences' n-best lists: candidate k joins each one's k-th,
    its score their sum (their mean with `mean`), its tokens, token scores and words theirs."""
    ranks = min((len(p) for p in parts), default=1)
    return [
        Hypothesis(
            document.join([p[k].text for p in parts]),
            float(sum(p[k].score for p in parts)) / (max(len(parts), 1) if mean else 1),
            [token for p in parts for token in p[k].tokens],
            _concatenated([p[k].token_log_probs for p in parts]),
            _concatenated([p[k].words for p in parts]),
        )
        for k in range(ranks)
    ]


def _concatenated(lists: list[list | None]) -> list | None:
    """The sentences' per-token or per-word lists in order; None unless every sentence has one."""
    if not lists or any(x is None for x in lists):
        return None
    return [item for x in lists for item in x]


def _check_target_vocabularies(members: list[Member]) -> None:
    """Ensemble members must give every target id the same piece: one error naming both workdirs."""
    first = members[0]
    pieces = first.tgt_tokenizer.pieces(range(first.tgt_tokenizer.vocab_size))
    for other in members[1:]:
        theirs = other.tgt_tokenizer.pieces(range(other.tgt_tokenizer.vocab_size))
        if theirs != pieces:
            differ = (
                f"{len(pieces)} vs {len(theirs)} pieces"
                if len(theirs) != len(pieces)
                else "id {0}: {1!r} vs {2!r}".format(
                    *next((i, a, b) for i, (a, b) in enumerate(zip(pieces, theirs)) if a != b)
                )
            )
            raise ValueError(
                f"ensemble members need the same target vocabulary: {first.workdir} and "
                f"{other.workdir} differ ({differ})"
            )


def no_attention(what: str) -> ValueError:
    """The error of an alignment or attention map asked of a model without attention."""
    return ValueError(f"this model has no attention (model.attention=none): nothing to {what}")


class Translator:
    """A trained model, or an ensemble of several, ready to translate; built from workdirs alone.

    An ensemble (several workdirs) searches with the members' weighted mean of per-step
    log-probabilities (s2s_jax/decoding/inference.py). Members may differ in architecture and in
    source tokenizer and normalisation (each reads the source its own way) but must share
    the target vocabulary. The first member's config supplies the decode defaults and the
    target-side normalisation, including `model.skip_padding` (each batch's source time-segment
    profile is compiled for, s2s_jax/models/time_segments.py; the server turns it off on its translator).

    `int8`: every member reads int8 copies of its weight matrices, made at load time (CPU serving
    latency: s2s_jax/models/int8_weights.py); outputs may differ slightly from the float32 model's.

    With `shortlist`, every search restricts each sentence's output to its vocabulary shortlist,
    the one the first workdir holds (`python shortlist.py --workdir W` builds it; read with the
    first member's source ids, applied to every member alike: s2s_jax/decoding/shortlist.py).

    `target_lang`: the language to translate into, for a model trained on several language pairs
    (`data.pairs`); required by each call (here or per call) when it has several target
    languages (`target_languages`), optional and checked when it has one. ValueError otherwise.
    """

    def __init__(
        self,
        workdir: str | Sequence[str],
        checkpoint: str = "best",
        weights: Sequence[float] | None = None,
        int8: bool = False,
        shortlist: bool = False,
        target_lang: str | None = None,
    ):
        workdirs = [workdir] if isinstance(workdir, str) else list(workdir)
        if not workdirs:
            raise ValueError("a Translator needs at least one workdir")
        # Before the checkpoints load: a missing shortlist is the quicker error.
        self.shortlist = lexical.load(workdirs[0]) if shortlist else None
        mesh = parallel.make_mesh()
        self.members = [Member.load(w, checkpoint, mesh, int8=int8) for w in workdirs]
        if self.shortlist is not None:
            first = self.members[0]
            self.shortlist.check(workdirs[0], first.src_tokenizer.vocab_size, first.tgt_tokenizer.vocab_size)
        _check_target_vocabularies(self.members)
        first = self.members[0]
        self.config, self.tgt_tokenizer, self.meta = first.config, first.tgt_tokenizer, first.meta
        if target_lang:
            first.languages.check_target(target_lang)
        self.target_lang = target_lang or None
        # The segmenter's rules for `split_sentences`: the source training file's extension, else English's.
        self.source_language = sentences.language_code(first.config.data.get("train_src", ""))
        self.inference = inference.Inference(
            [m.model for m in self.members],
            first.config.decode,
            max(m.config.data.max_len for m in self.members),
            mesh,
            weights=weights,
            skip_padding=first.config.model.get("skip_padding", True),  # workdirs from before it: on
        )

    # The single model's parts (the first member's in an ensemble).
    model = property(lambda self: self.members[0].model)
    params = property(lambda self: self.members[0].params)
    src_tokenizer = property(lambda self: self.members[0].src_tokenizer)
    max_len = property(lambda self: self.members[0].config.data.max_len)

    @property
    def target_languages(self) -> list[str]:
        """The languages this model translates into ([] when its training files do not say)."""
        return list(self.members[0].languages.targets)

    def check_target(self, target_lang: str | None = None) -> str | None:
        """The language a call with `target_lang` (else the Translator's) translates into; ValueError
        naming the choices when it is none of them, or missing where there are several."""
        return self.members[0].languages.check_target(target_lang or self.target_lang)

    def check_attention(self, what: str, first_member: bool = False) -> None:
        """ValueError unless a member (with `first_member`, the first: `attention_maps` reads only
        its) has attention, so a command can refuse `align`/`attention_maps` before it translates."""
        members = self.members[:1] if first_member else self.members
        if all(m.config.model.attention == "none" for m in members):
            raise no_attention(what)

    def _inputs(self, lines: list[str], warn: Callable[[str], None], target_lang: str | None = None) -> tuple[Any, Any]:
        """(params, sources) as Inference takes them: one model's, or a tuple per member; the sources
        tagged for `target_lang` (else the Translator's) where a member's run tags them."""
        seen: set[str] = set()

        def warn_once(message: str) -> None:
            if message not in seen:
                seen.add(message)
                warn(message)

        language = target_lang or self.target_lang
        sources = [m.encode_lines(lines, warn_once, language) for m in self.members]
        return self.search_params, sources[0] if len(self.members) == 1 else tuple(sources)

    @property
    def search_params(self) -> Any:
        """The parameters as Inference takes them: one model's, or a tuple with one per member."""
        if len(self.members) == 1:
            return self.members[0].params
        return tuple(m.params for m in self.members)

    def translate(
        self,
        lines: list[str],
        opts: SearchOptions | Sequence[SearchOptions] = SearchOptions(),
        batch_size: int = 64,
        seed: int = 0,
        progress: Callable[[Iterable], Iterable] | None = None,
        warn: Callable[[str], None] = lambda msg: print(f"warning: {msg}", file=sys.stderr),
        prefixes: list[str] | None = None,
        sample_keys: Sequence[tuple[int, int]] | None = None,
        split_sentences: bool = False,
        mbr: MBROptions | None = None,
        constraints: list[list[str]] | None = None,
        target_lang: str | None = None,
    ) -> list[list[Hypothesis]]:
        """n-best hypotheses per input line, in input order; an empty line gives an empty hypothesis.

        `target_lang` overrides the Translator's for this call (see the class docstring).

        A line longer than data.max_len subword tokens is cut to that length, with a warning.
        `prefixes` (one per line, "" = none) forces the start of each translation: the
        output is the prefix, normalised and tokenized like the targets, followed by the
        search's continuation (whose score it reports; its words count as probability 1).
        `opts` may be one setting per line and `sample_keys` a (seed, index) per line, as
        `Inference.run` takes them; lines whose setting has token_scores get `words`.

        `split_sentences`: each line is a paragraph (line breaks allowed), cut into sentences
        (s2s_jax/data/sentences.py); the sentences of all lines are translated in one call and each
        line's translations joined with its own whitespace. Candidate k joins every sentence's
        k-th hypothesis (score: their sum, with `mbr` their mean; tokens and words: theirs in
        order); `opts` and `sample_keys`, when given per line, apply to each of its sentences.

        With `mbr`, `opts` says how to draw each line's `mbr.size` candidates (samples or the
        beam's n-best, `MBROptions.search_options`), and the hypotheses are the distinct
        candidates best first by minimum Bayes risk, each scored by its expected utility
        (s2s_jax/decoding/mbr.py).

        `constraints` (one list of phrases per line, [] = none; beam search only, not with
        `split_sentences` or `mbr`): each translation contains its line's phrases, normalised and
        tokenized like the targets, searched by dynamic beam allocation
        (s2s_jax/decoding/constraints.py). A line whose phrases do not fit within its length cap
        gets the best partial translation (`constraints_met` False), with a warning.
        """
        if isinstance(lines, str):
            raise TypeError("translate takes a list of lines, not one string")
        if constraints is not None and (split_sentences or mbr is not None):
            raise ValueError("constraints belong to a whole line's single search: not with split_sentences or mbr")
        if split_sentences:
            if prefixes is not None:
                raise ValueError("prefixes force the start of a line's translation: not with split_sentences")
            return self._translate_paragraphs(
                lines, opts, sample_keys, batch_size, seed, progress, warn, mbr, target_lang
            )
        if mbr is not None:
            mbr.check()
            opts = (
                mbr.search_options(opts) if isinstance(opts, SearchOptions) else [mbr.search_options(o) for o in opts]
            )
        params, sources = self._inputs(lines, warn, target_lang)
        forced = None if prefixes is None else self._target_ids(prefixes)
        wanted = None if constraints is None else self.constraint_ids(constraints, warn)
        results = self.inference.run(
            params,
            sources,
            opts,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
            prefixes=forced,
            sample_keys=sample_keys,
            constraints=wanted,
            shortlist=self.shortlist,
        )
        for number, (candidates, phrases) in enumerate(zip(results, wanted or []), 1):
            if phrases and not candidates[0].constraints_met:
                warn(
                    f"line {number}: no translation with every constraint fits within the length cap; "
                    "the best partial one is returned"
                )
        settings = [opts] * len(lines) if isinstance(opts, SearchOptions) else list(opts)
        hyps = [
            [self._hypothesis(c, one.token_scores) for c in candidates] for candidates, one in zip(results, settings)
        ]
        return hyps if mbr is None else [self._mbr_ranked(h, mbr) for h in hyps]

    def _mbr_ranked(self, candidates: list[Hypothesis], mbr: MBROptions) -> list[Hypothesis]:
        """The distinct candidates best first by expected utility (their score); beam slots that no
        hypothesis filled (score -inf) are no candidates."""
        drawn = [h for h in candidates if math.isfinite(h.score)] or candidates[:1]
        tokenize = self.config.decode.get("bleu_tokenize") or None
        return [
            dataclasses.replace(drawn[i], score=utility)
            for i, utility in ranking([h.text for h in drawn], mbr.metric, tokenize)
        ]

    def _translate_paragraphs(
        self,
        lines: list[str],
        opts: SearchOptions | Sequence[SearchOptions],
        sample_keys: Sequence[tuple[int, int]] | None,
        batch_size: int,
        seed: int,
        progress: Callable[[Iterable], Iterable] | None,
        warn: Callable[[str], None],
        mbr: MBROptions | None,
        target_lang: str | None = None,
    ) -> list[list[Hypothesis]]:
        """`translate(split_sentences=True)`: one translate call over every line's sentences."""
        documents = [sentences.segment(line, self.source_language) for line in lines]
        owner = [i for i, document in enumerate(documents) for _ in document.sentences]
        within = [k for document in documents for k in range(len(document.sentences))]

        def warn_where(message: str) -> None:  # "line 7: ..." of the sentence list -> its line and sentence
            found = _LINE_NUMBER.match(message)
            if found and 0 < int(found[1]) <= len(owner):
                n = int(found[1]) - 1
                message = f"line {owner[n] + 1}, sentence {within[n] + 1}:{found[2]}"
            warn(message)

        per_line = not isinstance(opts, SearchOptions)
        results = self.translate(
            sentences.flatten(documents),
            [opts[i] for i in owner] if per_line else opts,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
            warn=warn_where,
            sample_keys=None if sample_keys is None else [sample_keys[i] for i in owner],
            mbr=mbr,
            target_lang=target_lang,
        )
        mean = mbr is not None  # expected utilities (0-100) average over the sentences; log-probabilities add
        return [_joined(d, parts, mean) for d, parts in zip(documents, sentences.regroup(documents, results))]

    def _hypothesis(self, candidate: inference.ScoredTokens, with_words: bool) -> Hypothesis:
        text = self.tgt_tokenizer.detokenize([candidate.tokens])[0]
        met = candidate.constraints_met
        if not with_words or candidate.token_scores is None:
            return Hypothesis(text, candidate.score, candidate.tokens, constraints_met=met)
        per_token = candidate.token_scores
        words = self._words(candidate.tokens, per_token)
        return Hypothesis(text, candidate.score, candidate.tokens, per_token, words, constraints_met=met)

    def constraint_ids(
        self, constraints: list[list[str]], warn: Callable[[str], None] = lambda msg: None
    ) -> list[list[list[int]]]:
        """Each line's phrases as target ids (normalised and tokenized like the targets); phrases
        that normalise to nothing are dropped. Warns about a phrase with characters the target
        vocabulary lacks: it comes out as the unknown piece."""
        if isinstance(constraints, str) or any(isinstance(row, str) for row in constraints):
            raise TypeError("constraints take one list of phrases per line")
        flat = [phrase for row in constraints for phrase in row]
        ids = iter(self._target_ids(flat) if flat else [])
        out = []
        for number, row in enumerate(constraints, 1):
            phrases = [next(ids) for _ in row]
            for text, tokens in zip(row, phrases):
                if UNK_ID in tokens:
                    warn(f"line {number}: the constraint {text!r} has characters the target vocabulary lacks")
            out.append([p for p in phrases if p])
        return out

    def nbest(
        self, lines: list[str], n: int, beam_size: int | None = None, alpha: float | None = None, **kwargs
    ) -> list[list[Hypothesis]]:
        """The n best beam-search translations of each line, best first (`--nbest N`)."""
        cfg = self.config.decode
        opts = SearchOptions(
            beam_size=beam_size or max(n, cfg.beam_size), alpha=cfg.alpha if alpha is None else alpha, nbest=n
        )
        return self.translate(lines, opts, **kwargs)

    def sample(
        self,
        lines: list[str],
        n: int = 1,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        **kwargs,
    ) -> list[list[Hypothesis]]:
        """n samples per line with their log-probabilities (`--sample`); the same seed gives the same samples."""
        opts = SearchOptions(sample=True, nbest=n, temperature=temperature, top_k=top_k, top_p=top_p, with_scores=True)
        return self.translate(lines, opts, seed=seed, **kwargs)

    def mbr(
        self,
        lines: list[str],
        n: int,
        metric: str = "chrf",
        candidates: str = "samples",
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        beam_size: int | None = None,
        alpha: float | None = None,
        **kwargs,
    ) -> list[list[Hypothesis]]:
        """Minimum Bayes risk decoding (`--mbr N`): each line's distinct candidates among `n` samples
        (or the beam's n-best), best first by expected `metric`; the same seed gives the same result."""
        cfg = self.config.decode
        opts = SearchOptions(
            beam_size=beam_size or cfg.beam_size,
            alpha=cfg.alpha if alpha is None else alpha,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
        )
        return self.translate(lines, opts, mbr=MBROptions(n, metric, candidates), **kwargs)

    def _target_ids(self, texts: list[str]) -> list[list[int]]:
        """Target-side ids of given text (references, prefixes), normalised like the training targets."""
        return self.tgt_tokenizer.tokenize(self.members[0].normalized(texts))

    def align(
        self, lines: list[str], outputs: list[list[int]], mode: str = "hard", target_lang: str | None = None
    ) -> list[str]:
        """Word alignment of each line with its output ids, from a teacher-forced pass's attention:
        `i-j` pairs (hard) or rows of weights (soft); s2s_jax/decoding/alignment.py says how pieces merge.

        An ensemble averages the word-level weights of its attention members (with their
        ensemble weights); members without attention are left out.
        """
        return self.align_with_attention(lines, outputs, mode, target_lang)[0]

    def align_with_attention(
        self, lines: list[str], outputs: list[list[int]], mode: str = "hard", target_lang: str | None = None
    ) -> tuple[list[str], list[dict]]:
        """`align`'s alignments and the piece-level attention maps (`attention_maps`) of the first
        member with attention, from the one teacher-forced pass per member that the alignment reads."""
        if mode not in MODES:
            raise ValueError(f"alignment mode must be one of {', '.join(MODES)}, got {mode!r}")
        attending = [(m, w) for m, w in zip(self.members, self.inference.weights) if m.config.model.attention != "none"]
        if not attending:
            raise no_attention("align")
        total = sum(w for _, w in attending)
        merged: list[np.ndarray] | None = None
        first_maps: list[dict] = []
        for member, weight in attending:
            maps = attention_maps(member, lines, outputs, target_lang=target_lang or self.target_lang)
            words = [word_weights(m["weights"], m["src"][:-1], m["tgt"][:-1]) for m in maps]
            if merged is None:
                merged, first_maps = [weight / total * w for w in words], maps
                continue
            for number, (acc, w) in enumerate(zip(merged, words), 1):
                if acc.shape != w.shape:
                    raise ValueError(
                        f"line {number}: ensemble members split the source into different words "
                        f"({acc.shape[1]} vs {w.shape[1]}): align with one model"
                    )
            merged = [acc + weight / total * w for acc, w in zip(merged, words)]
        return [format_alignment(w, mode) for w in merged], first_maps

    def score(
        self,
        lines: list[str],
        targets: list[str],
        batch_size: int = 64,
        warn: Callable[[str], None] = lambda msg: print(f"warning: {msg}", file=sys.stderr),
        word_scores: bool = False,
        target_lang: str | None = None,
    ) -> list[Score]:
        """The model's log-probability of each target line as the translation of its line.

        Targets are normalised and tokenized like the training targets; sources as in
        `translate` (cut to data.max_len with a warning). An ensemble scores with its
        averaged distribution. `word_scores`: also each token's and each word's term.
        """
        if isinstance(lines, str) or isinstance(targets, str):
            raise TypeError("score takes lists of lines, not strings")
        params, sources = self._inputs(lines, warn, target_lang)
        results = self.inference.score(params, sources, self._target_ids(targets), batch_size)
        if not word_scores:
            return [Score(c.score, len(c.tokens) + 1) for c in results]
        return [
            Score(c.score, len(c.tokens) + 1, c.token_scores, self._words(c.tokens, c.token_scores)) for c in results
        ]

    def _words(self, tokens: list[int], token_log_probs: list[float]) -> list[WordScore]:
        """The words of output `tokens` with their log-probabilities (word_scores.py)."""
        return word_scores.words(self.tgt_tokenizer, tokens, token_log_probs)


def attention_maps(
    member: Member | Translator,
    lines: list[str],
    outputs: list[list[int]],
    batch_size: int = 64,
    target_lang: str | None = None,
) -> list[dict]:
    """Teacher-forced attention weights of each (source line, output tokens) pair, with pieces.

    Returns, per line, {'weights': [T, S] array, 'src': source pieces, 'tgt': output pieces};
    the output includes the final </s>, the source its </s> (and its language tag, with `target_lang` on a
    run that tags). A Translator gives its first member's.
    Lines go through in length-sorted, padded batches (padding gets no attention and the decoder
    is causal, so each line's weights are its own), compiling for a few shapes only.
    """
    if isinstance(member, Translator):
        target_lang = target_lang or member.target_lang
        member = member.members[0]
    if member.config.model.attention == "none":
        raise no_attention("plot")
    if member.attention_fn is None:
        member.attention_fn = jax.jit(
            lambda params, src, tgt_in: member.model.apply(
                {"params": params}, src, tgt_in, method=Seq2Seq.attention_weights
            )
        )
    src_ids = member.encode_lines(lines, warn=lambda msg: None, target_lang=target_lang)
    tgt_in = [[BOS_ID] + list(out) for out in outputs]
    maps = [{"weights": np.zeros((0, 0)), "src": [], "tgt": []} for _ in lines]
    order = sorted((i for i, ids in enumerate(src_ids) if ids), key=lambda i: (len(src_ids[i]), len(tgt_in[i])))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        rows = inference.batch_rows(len(chunk), batch_size)
        src, _ = inference.pad_batch(src_ids, chunk, rows, eos=True)
        tgt, _ = inference.pad_batch(tgt_in, chunk, rows, eos=False)
        weights = np.asarray(member.attention_fn(member.params, src, tgt))
        for row, i in enumerate(chunk):
            maps[i] = {
                "weights": weights[row, : len(tgt_in[i]), : len(src_ids[i]) + 1],
                "src": member.src_tokenizer.pieces(src_ids[i]) + ["</s>"],
                "tgt": member.tgt_tokenizer.pieces(outputs[i]) + ["</s>"],
            }
    return maps
