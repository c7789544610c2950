"""An English -> French corpus of spoken numbers and dates, generated offline.

Why: the README quickstart has to train a real translator in minutes on a CPU
without downloading or bundling a corpus. Text from `num2words` and babel's
CLDR date formats is real, well-kept output with genuine translation
phenomena -- reordering ("November 22, 2026" -> "22 novembre 2026") and
irregular morphology ("seventy-seven" -> "soixante-dix-sept",
"eighty cats" -> "quatre-vingts chats") -- yet short and regular enough for a
small LSTM to learn.

Sentence kinds (drawn with the weights in `KIND_WEIGHTS`):

* ``cardinal``:   "seventy-seven"               -> "soixante-dix-sept"   (0..9999)
* ``count_noun``: "twenty-one birds"            -> "vingt et un oiseaux"  (2..999, masculine nouns)
* ``date``:       "November 22, 2026"           -> "22 novembre 2026"     (babel 'long', 1900..2099)
* ``full_date``:  "Sunday, November 22, 2026"   -> "dimanche 22 novembre 2026" (babel 'full')
* ``on_date``:    "on November 22, 2026"        -> "le 22 novembre 2026"  (either date format)

Everything is deterministic in (n, seed) given the num2words/babel versions,
which the manifest records so that an upgrade regenerates the files.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import random
import unicodedata
from importlib import metadata
from typing import Callable

import babel
import babel.dates
from num2words import num2words

from s2s_jax.files import write_atomic

# Bump whenever the generated text could change (kinds, weights, ranges, normalisation).
GENERATOR_VERSION = 1

MAX_CARDINAL = 9999
COUNT_RANGE = (2, 999)  # always plural, so French agreement is just the noun's plural
YEAR_RANGE = (1900, 2099)

# Masculine nouns only: num2words' French "un" ("vingt et un") then agrees with the noun.
NOUNS: tuple[tuple[str, str], ...] = (
    ("cats", "chats"),
    ("dogs", "chiens"),
    ("books", "livres"),
    ("birds", "oiseaux"),
    ("trees", "arbres"),
    ("boats", "bateaux"),
    ("days", "jours"),
    ("years", "ans"),
)

KIND_WEIGHTS: dict[str, float] = {
    "cardinal": 0.30,
    "count_noun": 0.20,
    "date": 0.20,
    "full_date": 0.15,
    "on_date": 0.15,
}

_EN_LOCALE = babel.Locale.parse("en_US")
_FR_LOCALE = babel.Locale.parse("fr_FR")
_FIRST_DAY = datetime.date(YEAR_RANGE[0], 1, 1).toordinal()
_LAST_DAY = datetime.date(YEAR_RANGE[1], 12, 31).toordinal()


def normalize(text: str) -> str:
    """NFKC, no-break spaces to plain spaces, collapsed whitespace: one clean line per sentence.

    Why: babel/CLDR may emit U+202F/U+00A0, which would otherwise become rare
    extra symbols for the tokenizer and break whitespace-based length counts.
    """
    text = text.replace("\u202f", " ").replace("\u00a0", " ")
    text = unicodedata.normalize("NFKC", text)
    return " ".join(text.split())


def number_pair(n: int) -> tuple[str, str]:
    """The cardinal N spelled out in English and in French."""
    return normalize(num2words(n, lang="en")), normalize(num2words(n, lang="fr"))


def count_noun_pair(n: int, noun: tuple[str, str]) -> tuple[str, str]:
    """'N <noun>s' in both languages, e.g. (80, cats) -> ('eighty cats', 'quatre-vingts chats')."""
    en, fr = number_pair(n)
    return f"{en} {noun[0]}", f"{fr} {noun[1]}"


def date_pair(d: datetime.date, full: bool = False) -> tuple[str, str]:
    """The date in CLDR 'long' (or 'full', with the weekday) format for en_US and fr_FR."""
    fmt = "full" if full else "long"
    return (
        normalize(babel.dates.format_date(d, format=fmt, locale=_EN_LOCALE)),
        normalize(babel.dates.format_date(d, format=fmt, locale=_FR_LOCALE)),
    )


def on_date_pair(d: datetime.date, full: bool = False) -> tuple[str, str]:
    """'on <date>' -> 'le <date>': the preposition changes and French gains an article."""
    en, fr = date_pair(d, full)
    return f"on {en}", f"le {fr}"


# Magnitude buckets for standalone cardinals: uniform over 0..9999 would be 90% four-digit
# numbers and almost never show the irregular French 70..99 on their own.
_CARDINAL_BUCKETS = ((0, 99), (100, 999), (1000, MAX_CARDINAL))
_CARDINAL_BUCKET_WEIGHTS = (0.1, 0.3, 0.6)


def _random_cardinal(rng: random.Random) -> int:
    lo, hi = rng.choices(_CARDINAL_BUCKETS, weights=_CARDINAL_BUCKET_WEIGHTS)[0]
    return rng.randint(lo, hi)


def _random_date(rng: random.Random) -> datetime.date:
    return datetime.date.fromordinal(rng.randint(_FIRST_DAY, _LAST_DAY))


_SAMPLERS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "cardinal": lambda rng: number_pair(_random_cardinal(rng)),
    "count_noun": lambda rng: count_noun_pair(rng.randint(*COUNT_RANGE), rng.choice(NOUNS)),
    "date": lambda rng: date_pair(_random_date(rng)),
    "full_date": lambda rng: date_pair(_random_date(rng), full=True),
    "on_date": lambda rng: on_date_pair(_random_date(rng), full=rng.random() < 0.5),
}
_KINDS = tuple(KIND_WEIGHTS)
_CUM_WEIGHTS = tuple(itertools.accumulate(KIND_WEIGHTS[k] for k in _KINDS))


def generate_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """N (English, French) pairs with distinct source sentences, deterministic in (n, seed).

    Draws come from one `random.Random(seed)` stream and duplicates are
    rejected, so `generate_pairs(n, s)` is a prefix of `generate_pairs(m, s)`
    for m > n: asking for more data never reshuffles what came before.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    seen: set[str] = set()
    pairs: list[tuple[str, str]] = []
    max_draws = 20 * n + 1000  # the kinds hold ~170k distinct sources; this only guards huge n
    draws = 0
    while len(pairs) < n:
        if draws >= max_draws:
            raise ValueError(f"could not draw {n} distinct pairs (got {len(pairs)} in {draws} draws)")
        draws += 1
        kind = rng.choices(_KINDS, cum_weights=_CUM_WEIGHTS)[0]
        src, tgt = _SAMPLERS[kind](rng)
        if src in seen:
            continue
        seen.add(src)
        pairs.append((src, tgt))
    return pairs


def _library_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in ("num2words", "babel")}


_SPLIT_FILES = {
    "train_src": "train.en",
    "train_tgt": "train.fr",
    "valid_src": "valid.en",
    "valid_tgt": "valid.fr",
    "test_src": "test.en",
    "test_tgt": "test.fr",
}
MANIFEST_NAME = "manifest.json"


def write_corpus(
    out_dir: str | os.PathLike,
    seed: int = 0,
    n_train: int = 20000,
    n_valid: int = 500,
    n_test: int = 500,
) -> dict[str, str]:
    """Writes train/valid/test .en and .fr files (one sentence per line, UTF-8, '\\n') and returns
    {'train_src', 'train_tgt', 'valid_src', 'valid_tgt', 'test_src', 'test_tgt'} -> path.

    The three splits are disjoint by source sentence: one stream of distinct
    pairs is cut into valid, then test, then train (so n_train can change
    without touching the evaluation sets). A manifest JSON records seed,
    sizes, generator and library versions; if it matches and every file is
    there, nothing is regenerated, so a resumed run sees identical files.
    Files are written to temporaries and renamed, manifest last, so a crash
    never leaves a manifest describing half-written files.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = {key: os.path.join(out_dir, name) for key, name in _SPLIT_FILES.items()}
    manifest_path = os.path.join(out_dir, MANIFEST_NAME)
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n_train": n_train,
        "n_valid": n_valid,
        "n_test": n_test,
        "libraries": _library_versions(),
    }
    if all(os.path.exists(p) for p in paths.values()) and os.path.exists(manifest_path):
        try:
            with open(manifest_path, encoding="utf-8") as f:
                if json.load(f) == manifest:
                    return paths
        except (OSError, ValueError):
            pass  # unreadable manifest: regenerate

    pairs = generate_pairs(n_valid + n_test + n_train, seed)
    splits = {
        "valid": pairs[:n_valid],
        "test": pairs[n_valid : n_valid + n_test],
        "train": pairs[n_valid + n_test :],
    }
    if os.path.exists(manifest_path):
        os.remove(manifest_path)  # files are about to change; never leave a stale manifest
    for split, split_pairs in splits.items():
        for side, column in (("src", 0), ("tgt", 1)):
            path = paths[f"{split}_{side}"]
            write_atomic(path, "".join(pair[column] + "\n" for pair in split_pairs))
    write_atomic(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return paths
