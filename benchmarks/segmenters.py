#!/usr/bin/env python3
"""Sentence segmenters from PyPI on real paragraphs: boundary accuracy and speed, one JSON object.

    .venv/bin/python benchmarks/segmenters.py                       # ../shared/data, 150 paragraphs a set
    .venv/bin/python benchmarks/segmenters.py --data DIR --paragraphs 300 --only sentencex,pysbd

Why: `--split_sentences` (s2s_jax/data/sentences.py) needs one segmenter; this is how it was picked.

Paragraphs: runs of 2-6 consecutive lines (lengths drawn with a fixed seed) joined with one space,
from Multi30k test2016 + val captions and IWSLT16 TED dev2010 + tst2010-2013 talks, German and
English: four sets. The line joins are the gold sentence boundaries, so only lines that read as
exactly one sentence are used: starting with a capital, digit or quote, ending with . ! ? (or …),
optionally closed by quotes or a bracket, and without a sentence end followed by a capital inside
(IWSLT lines often hold two sentences, and some continue the previous line). That filter also
drops lines with an abbreviation before a capital ("Mr. Smith"), so the sets test abbreviations
and ordinals followed by lower case ("z. B. ist", "3. Mal") but not those: the figures favour
no segmenter in particular, and the README says so.

Candidates (each skipped with `"error"` when not installed): sentencex, pysbd, blingfire, syntok,
nupunkt (English Punkt model, used for German too), sentence-splitter (the Moses splitter's port).
Boundaries are compared as counts of non-space characters before each sentence start, so a
segmenter's handling of whitespace does not matter; one that changed the text itself is counted
in `altered` (s2s_jax/data/sentences.py could not map its sentences back onto the paragraph).

Keys: sets{name: {paragraphs, boundaries, chars}}; results{segmenter: {version, import_s,
  sets{name: {precision, recall, f1, exact}}, all{...}, chars_per_s{median, min, max, repeats},
  altered}}. precision/recall/f1 are over the sets' predicted/gold inner boundaries, exact the
  share of paragraphs split exactly into their lines. Speed: all paragraphs of all sets, after one
  warm-up pass, --repeats times; noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
# {set: (files, column of a tab-separated file or None, the sets' joiner)}; {lang} is the language.
SOURCES = {
    "multi30k": (["multi30k/test_2016_flickr.{lang}", "multi30k/val.{lang}"], None),
    "iwslt": (
        [
            f"iwslt16-de-en-devtest/IWSLT16.TED.{split}.de-en.{{lang}}"
            for split in ("dev2010", "tst2010", "tst2011", "tst2012", "tst2013")
        ],
        None,
    ),
    "tatoeba": (["{lang}-eng/{lang}.txt"], 1),
}
SETS = {"multi30k": ("de", "en"), "iwslt": ("de", "en"), "tatoeba": ("fr", "zh")}
FILE_LANG = {"zh": "cmn", "fr": "fra"}  # Tatoeba's file names
DE_EN = {"de", "en"}  # the pair the README compares on (the de/en aggregate and the speed)
_OPEN = "\"'„“‘»«(「『"
_CLOSE = "\"'”“’‘»«)」』"
_END = ".!?…。！？"
_INNER_END = re.compile(rf"[.!?…][{_CLOSE}]*\s+[{_OPEN}]?[^\W\d_a-zà-ÿ]|[。！？][{_CLOSE}]*.")


def one_sentence(line: str) -> bool:
    """Whether a line reads as exactly one sentence (the filter of the module docstring)."""
    body = line.lstrip(_OPEN)
    if not body or not (body[0].isupper() or body[0].isdigit() or "\u4e00" <= body[0] <= "\u9fff"):
        return False
    return line.rstrip(_CLOSE).endswith(tuple(_END)) and not _INNER_END.search(line)


def paragraphs(lines: list[str], count: int, rng: random.Random) -> list[list[str]]:
    """Up to `count` runs of 2-6 consecutive one-sentence lines from random places, not overlapping."""
    starts = list(range(len(lines)))
    rng.shuffle(starts)
    good = [one_sentence(line) for line in lines]
    used = [False] * len(lines)
    chosen = []
    for start in starts:
        end = start + rng.randint(2, 6)
        if end <= len(lines) and all(good[start:end]) and not any(used[start:end]):
            used[start:end] = [True] * (end - start)
            chosen.append((start, end))
            if len(chosen) == count:
                break
    return [lines[start:end] for start, end in sorted(chosen)]


def load_sets(data: Path, count: int) -> dict[str, list[list[str]]]:
    """{corpus-lang: paragraphs (each a list of its gold sentences)}."""
    sets = {}
    for corpus, languages in SETS.items():
        patterns, column = SOURCES[corpus]
        for lang in languages:
            lines = []
            for pattern in patterns:
                text = (data / pattern.format(lang=FILE_LANG.get(lang, lang))).read_text("utf-8")
                lines += [(row.split("\t")[column] if column is not None else row).strip() for row in text.splitlines()]
            sets[f"{corpus}-{lang}"] = paragraphs(lines, count, random.Random(f"{corpus}-{lang}"))
    return sets


def joiner(set_name: str) -> str:
    """How a set's sentences are joined into a paragraph: Chinese without a space."""
    return "" if set_name.endswith("-zh") else " "


def starts(sentences: list[str]) -> set[int]:
    """Inner boundaries: the non-space characters before each sentence but the first."""
    out, seen = set(), 0
    for sentence in sentences[:-1]:
        seen += len("".join(sentence.split()))
        out.add(seen)
    return out


def _sentencex(lang: str) -> Callable[[str], list[str]]:
    import sentencex

    return lambda text: list(sentencex.segment(lang, text))


def _pysbd(lang: str) -> Callable[[str], list[str]]:
    import pysbd

    segmenter = pysbd.Segmenter(language=lang, clean=False)
    return segmenter.segment


def _blingfire(lang: str) -> Callable[[str], list[str]]:
    import blingfire

    def split(text: str) -> list[str]:
        return [text[a:b] for a, b in blingfire.text_to_sentences_and_offsets(text)[1]]

    return split


def _syntok(lang: str) -> Callable[[str], list[str]]:
    import syntok.segmenter

    def split(text: str) -> list[str]:
        return ["".join(t.spacing + t.value for t in s) for p in syntok.segmenter.analyze(text) for s in p]

    return split


def _nupunkt(lang: str) -> Callable[[str], list[str]]:
    import nupunkt

    return nupunkt.sent_tokenize


def _moses(lang: str) -> Callable[[str], list[str]]:
    from sentence_splitter import SentenceSplitter

    return SentenceSplitter(language=lang).split


CANDIDATES = {
    "sentencex": ("sentencex", "sentencex", _sentencex),
    "pysbd": ("pysbd", "pysbd", _pysbd),
    "blingfire": ("blingfire", "blingfire", _blingfire),
    "syntok": ("syntok", "syntok.segmenter", _syntok),
    "nupunkt": ("nupunkt", "nupunkt", _nupunkt),
    "sentence-splitter": ("sentence-splitter", "sentence_splitter", _moses),
}


def count(split: Callable[[str], list[str]], paras: list[list[str]], join: str) -> dict[str, int]:
    """Inner boundaries found, predicted and gold; paragraphs split exactly; outputs that altered the text."""
    counts = dict.fromkeys(("hit", "predicted", "gold", "exact", "paragraphs", "altered"), 0)
    for sentences in paras:
        text = join.join(sentences)
        got = [s for s in split(text) if s.strip()]
        want, have = starts(sentences), starts(got)
        counts["hit"] += len(want & have)
        counts["predicted"] += len(have)
        counts["gold"] += len(want)
        counts["exact"] += want == have
        counts["paragraphs"] += 1
        counts["altered"] += "".join("".join(got).split()) != "".join(text.split())
    return counts


def figures(counts: dict[str, int]) -> dict[str, float]:
    """Boundary precision, recall and F1, and the share of paragraphs split exactly, from `count`'s counts."""
    precision = counts["hit"] / max(counts["predicted"], 1)
    recall = counts["hit"] / max(counts["gold"], 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    out = {"precision": precision, "recall": recall, "f1": f1, "exact": counts["exact"] / max(counts["paragraphs"], 1)}
    return {k: round(v, 4) for k, v in out.items()}


def speed(splitters: dict[str, Callable], sets: dict[str, list[list[str]]], repeats: int) -> list[float]:
    """Characters per second over the German and English paragraphs, one figure per repeat (after a warm-up)."""
    texts = [(lang, " ".join(p)) for name, paras in sets.items() for p in paras if (lang := language(name)) in DE_EN]
    chars = sum(len(t) for _, t in texts)
    for lang, text in texts[:20]:
        splitters[lang](text)
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        for lang, text in texts:
            splitters[lang](text)
        out.append(round(chars / (time.perf_counter() - started)))
    return out


def language(set_name: str) -> str:
    return set_name.rsplit("-", 1)[1]


def splitters_for(factory: Callable, languages: set[str]) -> tuple[dict[str, Callable], dict[str, str]]:
    """({lang: split}, {lang: why not}) for the languages a candidate takes."""
    splitters, unsupported = {}, {}
    for lang in sorted(languages):
        try:
            splitters[lang] = factory(lang)
        except Exception as err:  # each library refuses a language its own way
            unsupported[lang] = f"{type(err).__name__}: {err}"[:120]
    return splitters, unsupported


def measure(name: str, sets: dict[str, list[list[str]]], repeats: int) -> dict:
    """One candidate's figures (module docstring's keys), or {"error"} when it is not installed."""
    distribution, module, factory = CANDIDATES[name]
    try:
        version = importlib.metadata.version(distribution)
        started = time.perf_counter()
        importlib.import_module(module)
        import_s = round(time.perf_counter() - started, 3)
    except (ImportError, importlib.metadata.PackageNotFoundError) as err:
        return {"error": f"not installed: {err}"}
    splitters, unsupported = splitters_for(factory, {language(n) for n in sets})
    per_set = {
        set_name: count(splitters[language(set_name)], paras, joiner(set_name))
        for set_name, paras in sets.items()
        if language(set_name) in splitters
    }
    de_en = [c for set_name, c in per_set.items() if language(set_name) in DE_EN]
    total = {k: sum(c[k] for c in de_en) for k in de_en[0]} if de_en else None
    result: dict = {"version": version, "import_s": import_s, "unsupported": unsupported}
    result["sets"] = {set_name: figures(c) for set_name, c in per_set.items()}
    result["de_en"] = figures(total) if total else None
    result["altered"] = sum(c["altered"] for c in per_set.values())
    if DE_EN <= set(splitters):
        xs = speed(splitters, sets, repeats)
        result["chars_per_s"] = {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "repeats": xs}
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="the shared data folder")
    ap.add_argument("--paragraphs", type=int, default=250, help="paragraphs per set (6 sets)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes for the speed figure")
    ap.add_argument("--only", default=",".join(CANDIDATES), help="comma-separated segmenters")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        print(f"error: unknown segmenter {unknown[0]!r}; known: {', '.join(CANDIDATES)}", file=sys.stderr)
        return 1
    try:
        sets = load_sets(args.data, args.paragraphs)
    except OSError as err:
        print(f"error: --data {args.data}: {err.strerror}: {err.filename}", file=sys.stderr)
        return 1
    report = {
        "sets": {
            name: {
                "paragraphs": len(paras),
                "boundaries": sum(len(p) - 1 for p in paras),
                "chars": sum(len(joiner(name).join(p)) for p in paras),
            }
            for name, paras in sets.items()
        },
        "results": {name: measure(name, sets, args.repeats) for name in names},
        "python": sys.version.split()[0],
    }
    print(json.dumps(report, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
