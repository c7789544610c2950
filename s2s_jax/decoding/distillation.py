"""Sequence-level knowledge distillation's corpus: a teacher's translations of a training source file,
written shard by shard so that an interrupted run continues where it stopped (Kim & Rush 2016).

The shards are cut from the very batches `Inference.run` makes of the whole file (sources sorted by
length, `batch_size` a batch), a few whole batches a shard, and each shard is translated as one call
of the one inference path. Translating the lines of consecutive whole batches re-forms exactly those
batches, so the corpus is identical however often the run was interrupted, and identical to one
`decode.py` call over the whole file with the same teacher, beam and batch size.

Layout under OUT (the student's workdir): distill/manifest.json (what was asked: teachers, search,
the source files' digests), distill/shards/NNNNN.txt (one translated line per shard index, in the
shard's index order), and at the end the assembled corpus distill/<name of the target file> (one per
target file when the config lists several: their sources are translated as one corpus).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Iterable, Sequence

from s2s_jax.decoding.translator import SearchOptions, Translator
from s2s_jax.errors import DataError
from s2s_jax.files import file_digest, write_atomic

SUBDIR = "distill"
MANIFEST = "manifest.json"
BATCHES_PER_SHARD = 8


@dataclasses.dataclass(frozen=True)
class Request:
    """What a distilled corpus is a function of: a different request never reuses another's shards."""

    teachers: tuple[str, ...]  # absolute workdir paths
    checkpoint: str
    source_sha256: str | list[str]  # the training source file's, or each file's when several (paths may move)
    beam_size: int
    alpha: float
    batch_size: int
    batches_per_shard: int = BATCHES_PER_SHARD

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


def directory(workdir: str) -> str:
    return os.path.join(workdir, SUBDIR)


def corpus_paths(workdir: str, target_names: Sequence[str]) -> list[str]:
    """Where the distilled target files are written: OUT/distill/<target file's name>, or
    OUT/distill/<i>.<name> when two of the files share a name."""
    names = [os.path.basename(name) for name in target_names]
    if len(set(names)) < len(names):
        names = [f"{i}.{name}" for i, name in enumerate(names)]
    return [os.path.join(directory(workdir), name) for name in names]


def shards(
    translator: Translator, lines: Sequence[str], batch_size: int, per_shard: int, warn: Callable[[str], None]
) -> list[list[int]]:
    """Line indices per shard, each index list sorted: `per_shard` consecutive batches of `Inference.run`'s
    plan for the whole file (empty lines are in none: their translation is empty). `warn` hears of
    lines cut to the teacher's data.max_len, by their line numbers in the file."""
    ids = translator.members[0].encode_lines(list(lines), warn)
    plan = translator.inference.batches(ids, batch_size)
    return [sorted(i for batch in plan[k : k + per_shard] for i in batch) for k in range(0, len(plan), per_shard)]


def check_manifest(out_dir: str, request: Request) -> None:
    """Writes the manifest of a new distillation, or refuses a directory that holds another one's shards."""
    path = os.path.join(out_dir, MANIFEST)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            held = json.load(f)
        wanted = json.loads(json.dumps(request.as_json()))  # tuples -> lists, as read back
        changed = sorted(key for key in set(held) | set(wanted) if held.get(key) != wanted.get(key))
        if changed:
            raise DataError(
                f"{out_dir} holds a distillation made with other settings ({', '.join(changed)} differ); "
                "use another --workdir or delete that directory"
            )
        return
    os.makedirs(os.path.join(out_dir, "shards"), exist_ok=True)
    write_atomic(path, json.dumps(request.as_json(), indent=2) + "\n")


def _shard_path(out_dir: str, number: int) -> str:
    return os.path.join(out_dir, "shards", f"{number:05d}.txt")


def _read_shard(path: str, size: int) -> list[str] | None:
    """A finished shard's lines, or None when it is missing (shards are written whole: write_atomic)."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")[:-1]
    if len(lines) != size:
        raise DataError(f"{path} has {len(lines)} lines, its shard {size}: delete it to translate it again")
    return lines


def distill(
    translator: Translator,
    lines: Sequence[str],
    out_dir: str,
    request: Request,
    progress: Callable[[Iterable], Iterable] | None = None,
    warn: Callable[[str], None] = lambda message: None,
) -> tuple[list[str], int]:
    """The teacher's best translation of every line, in order, and how many shards this call translated
    (the others were on disk). Each shard is saved as soon as it is translated."""
    check_manifest(out_dir, request)
    opts = SearchOptions(beam_size=request.beam_size, alpha=request.alpha)
    out = [""] * len(lines)
    plan = shards(translator, lines, request.batch_size, request.batches_per_shard, warn)
    translated = 0
    for number, indices in enumerate(progress(plan) if progress else plan):
        path = _shard_path(out_dir, number)
        done = _read_shard(path, len(indices))
        if done is None:
            hyps = translator.translate(
                [lines[i] for i in indices], opts, batch_size=request.batch_size, warn=lambda message: None
            )
            done = [h[0].text for h in hyps]
            write_atomic(path, "".join(text + "\n" for text in done))
            translated += 1
        for i, text in zip(indices, done):
            out[i] = text
    return out, translated


def source_request(
    teachers: Sequence[str],
    checkpoint: str,
    sources: str | Sequence[str],
    beam_size: int,
    alpha: float,
    batch_size: int,
) -> Request:
    """The Request for translating `sources` (one file, or several as one corpus) with these teachers
    and search settings."""
    digests = [file_digest(sources)] if isinstance(sources, str) else [file_digest(s) for s in sources]
    return Request(
        teachers=tuple(os.path.abspath(t) for t in teachers),
        checkpoint=checkpoint,
        source_sha256=digests[0] if len(digests) == 1 else digests,
        beam_size=beam_size,
        alpha=float(alpha),
        batch_size=batch_size,
    )
