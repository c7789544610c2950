"""Language pairs and target-language tags: the one place that knows them.

A multilingual run names its pairs (`data.pairs = "de-en,fr-en"`) and its files by language
(`data.train_prefix = "multi30k/train"` -> multi30k/train.de and multi30k/train.en for de-en).
A source is told which language to translate into by a tag, `<2fr>`, put before its text;
the run's one joint sentencepiece model keeps each tag as one piece (user_defined_symbols).
Whether a run tags (`data.lang_tags`), which target languages it has and which tag a text
gets are decided here, for training, validation, decode.py, the Python API and the server.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Iterator

from s2s_jax.data import sentences, text
from s2s_jax.errors import ConfigError, DataError

LANG_TAGS = ("auto", "always", "never")  # data.lang_tags
_CODE = re.compile(r"[a-z][a-z0-9_]{0,9}")
TAG = re.compile(r"<2([a-z][a-z0-9_]{0,9})>")


@dataclasses.dataclass(frozen=True)
class Pair:
    """One translation direction of a run."""

    src: str
    tgt: str

    @property
    def name(self) -> str:
        """'de-en': how logs, metrics and TensorBoard name the pair."""
        return f"{self.src}-{self.tgt}"


def parse_pairs(spec: str) -> list[Pair]:
    """'de-en,fr-en' -> [Pair('de', 'en'), Pair('fr', 'en')]; a ConfigError for anything else."""
    pairs = []
    for item in (part.strip() for part in spec.split(",")):
        codes = item.split("-")
        if len(codes) != 2 or not all(_CODE.fullmatch(code) for code in codes) or codes[0] == codes[1]:
            raise ConfigError(
                f"data.pairs={spec!r}: {item!r} is not a pair like 'de-en' (two different lowercase "
                "language codes joined by '-'); list pairs comma-separated"
            )
        pair = Pair(*codes)
        if pair in pairs:
            raise ConfigError(f"data.pairs={spec!r} lists {pair.name} twice")
        pairs.append(pair)
    return pairs


def tag(language: str) -> str:
    """The tag a source gets to be translated into `language`: '<2fr>'."""
    return f"<2{language}>"


def tagged(source: str, language: str | None) -> str:
    """A normalised source with its target-language tag in front ('<2fr> a man'); as is for None."""
    return source if language is None else f"{tag(language)} {source}"


@dataclasses.dataclass(frozen=True)
class RunLanguages:
    """What a run's config says about languages: its pairs ([] for a single-pair run), its target
    languages ([] when unknown) and whether its sources carry tags."""

    pairs: tuple[Pair, ...]
    targets: tuple[str, ...]
    tags: bool

    @property
    def symbols(self) -> list[str]:
        """The tags its sentencepiece model must keep as single pieces."""
        return [tag(t) for t in self.targets] if self.tags else []

    def symbol_ids(self, tokenizer) -> tuple[int, ...]:
        """The ids of `symbols` in a (target) tokenizer: inputs only, which no search outputs."""
        return tuple(i for i in map(tokenizer.piece_id, self.symbols) if i is not None)

    def source_tag_language(self, target_lang: str | None) -> str | None:
        """The language whose tag a source gets (None: untagged), `target_lang` checked first."""
        language = self.check_target(target_lang)
        return language if self.tags else None

    def check_target(self, target_lang: str | None) -> str | None:
        """`target_lang` checked against the run's target languages: required with several, optional
        (and then the only one) with one; ValueError naming the choices otherwise."""
        if not target_lang:
            if len(self.targets) > 1:
                raise ValueError(
                    f"this model translates into several languages: give the target language "
                    f"(--target_lang, target_lang), one of {', '.join(self.targets)}"
                )
            return self.targets[0] if self.targets else None
        if not self.targets:
            raise ValueError(
                f"target language {target_lang!r}: this model's target language is unknown (its training "
                "files do not end in a language code); leave the target language out"
            )
        if target_lang not in self.targets:
            raise ValueError(
                f"target language {target_lang!r}: this model translates into {', '.join(self.targets)} only"
            )
        return target_lang


def run_languages(cfg_data: Any) -> RunLanguages:
    """`RunLanguages` of a data config (a saved config.json from before data.pairs included)."""
    spec = cfg_data.get("pairs", "") or ""
    if not spec:
        code = sentences.language_code(cfg_data.get("train_tgt", "") or "")
        return RunLanguages((), (code,) if code else (), False)
    pairs = parse_pairs(spec)
    targets = tuple(dict.fromkeys(p.tgt for p in pairs))
    mode = cfg_data.get("lang_tags", "auto")
    tags = mode == "always" or (mode == "auto" and len(targets) > 1)
    return RunLanguages(tuple(pairs), targets, tags)


@dataclasses.dataclass(frozen=True)
class PairFiles:
    """One pair's aligned files of a split, and the language whose tag its sources get."""

    pair: Pair
    src: str
    tgt: str
    tag_language: str | None


def pair_files(cfg_data: Any, split: str, log=print) -> list[PairFiles]:
    """Each pair's files of `split` ('train', 'valid', 'test'), named by `data.{split}_prefix` plus
    the language code and resolved against data.dir. A missing training or validation file is a
    DataError; a pair missing a test file is left out with a note."""
    languages = run_languages(cfg_data)
    prefix = cfg_data.get(f"{split}_prefix", "")
    if not prefix:
        raise ConfigError(f"data.pairs is set but data.{split}_prefix is not: name the {split} files by prefix")
    out = []
    for pair in languages.pairs:
        src, tgt = (text.data_path(cfg_data, f"{prefix}.{code}") for code in (pair.src, pair.tgt))
        missing = [path for path in (src, tgt) if not os.path.isfile(path)]
        if missing and split == "test":
            log(f"test: {pair.name} has no {' or '.join(missing)}; left out")
            continue
        if missing:
            raise DataError(f"data.{split}_prefix={prefix}: pair {pair.name} needs {' and '.join(missing)}")
        out.append(PairFiles(pair, src, tgt, pair.tgt if languages.tags else None))
    return out


def leading_tag(line: str) -> bool:
    """Whether a text starts with a language tag (the tokenizer keeps it one piece)."""
    return line.startswith("<2") and TAG.match(line) is not None


def has_split(cfg_data: Any, split: str) -> bool:
    """Whether the data config names files for `split`: by prefix in a multi-pair run, else as
    text.has_split."""
    if cfg_data.get("pairs", ""):
        return bool(cfg_data.get(f"{split}_prefix", ""))
    return text.has_split(cfg_data, split)


def cleaned_pair_files(
    cfg_data: Any, split: str, log=print
) -> Iterator[tuple[PairFiles, list[text.Pair], text.FilterStats]]:
    """Each pair's files of `split` with their pairs normalised and without empty sides
    (text.clean_pairs), untagged, and the counts."""
    for files in pair_files(cfg_data, split, log):
        raw = list(text.stream_parallel(files.src, files.tgt))
        yield (files, *text.clean_pairs(raw, cfg_data.lowercase, cfg_data.d2l_preprocess))


def cleaned_split(cfg_data: Any, split: str, log=print) -> list[text.Pair]:
    """A split's pairs as the run reads them, normalised and without empty sides (text.clean_pairs):
    in a multi-pair run each pair's files in turn, sources tagged when the run has tags."""
    if not cfg_data.get("pairs", ""):
        return text.clean_pairs(text.load_corpus(cfg_data, split), cfg_data.lowercase, cfg_data.d2l_preprocess)[0]
    return [
        (tagged(s, files.tag_language), t)
        for files, cleaned, _ in cleaned_pair_files(cfg_data, split, log)
        for s, t in cleaned
    ]
