"""The `s2s-distill` command (also `python distill.py`): sequence-level knowledge distillation.

    python distill.py --teacher runs/m30k_tuned_s0 --teacher runs/m30k_tuned_s1 \\
        --config configs/multi30k_student.py --workdir runs/m30k_student

Translates the student config's training sources (data.train_src) with the teacher, or the
ensemble of the teachers, by beam search through the one inference path, resumably
(s2s_jax/decoding/distillation.py), writes the translations to WORKDIR/distill/<train_tgt's
name>, then trains the student on them in WORKDIR (validation and test keep the real
references). Running the same command again continues an interrupted distillation or
training where it stopped. `--distill_only` stops after writing the corpus; `--with_references`
trains on the references and the distilled targets together.
"""

from __future__ import annotations

from s2s_jax.cli import runtime  # first: OPENBLAS_NUM_THREADS must be set before numpy/jax load

runtime.limit_openblas_threads()

import os
import sys
import time

from s2s_jax.cli import model_flags
from s2s_jax.config import checks
from s2s_jax.config import flags as config_flags
from s2s_jax.errors import CheckpointError, ConfigError, DataError
from s2s_jax.files import write_atomic


def _sources_and_targets(config) -> list[tuple[str, str]]:
    """The student's training source files, each with its target file's name (the data config may
    list several, comma-separated; TSV, multi-pair and generated corpora have no source file)."""
    from s2s_jax.data import text as text_lib

    data = config.data
    if not data.train_src or not data.train_tgt or data.train_tsv:
        raise ConfigError(
            "distillation translates source files: the student config needs data.train_src and "
            "data.train_tgt (line-aligned files, not data.train_tsv, data.pairs or the quickstart corpus)"
        )
    _, paths = text_lib.split_files(data, "train")
    for source in paths[::2]:
        if not os.path.isfile(source):
            raise DataError(f"data.train_src {source}: no such file")
    return list(zip(paths[::2], paths[1::2]))


def _distilled_corpus(flags, config) -> list[str]:
    """Writes (or finds) WORKDIR/distill/<target name> for each training target file, the
    teachers' translations of its source file; their paths."""
    from tqdm import tqdm

    from s2s_jax.data.text import read_lines
    from s2s_jax.decoding import distillation
    from s2s_jax.decoding.translator import Translator
    from s2s_jax.workdir import run_config

    files = _sources_and_targets(config)
    sources = [source for source, _ in files]
    teacher_cfg = run_config.load(flags.teacher[0]).decode
    request = distillation.source_request(
        flags.teacher,
        flags.teacher_checkpoint,
        sources,
        flags.beam_size,
        teacher_cfg.alpha if flags.alpha is None else flags.alpha,
        flags.batch_size,
    )
    out_dir = distillation.directory(flags.workdir)
    corpora = distillation.corpus_paths(flags.workdir, [target for _, target in files])
    os.makedirs(out_dir, exist_ok=True)
    distillation.check_manifest(out_dir, request)  # before loading the teachers: a mismatch fails fast
    if all(os.path.exists(corpus) for corpus in corpora):
        print(f"distilled corpus: {', '.join(corpora)} (already written)")
        return corpora
    start = time.perf_counter()
    translator = Translator(list(flags.teacher), flags.teacher_checkpoint)
    per_file = [read_lines(source, allow_empty=True) for source in sources]
    show = sys.stderr.isatty()
    texts, translated = distillation.distill(
        translator,
        [line for lines in per_file for line in lines],  # one corpus: one plan of batches over all files
        out_dir,
        request,
        progress=(lambda shards: tqdm(shards, desc="distill", unit="shard")) if show else None,
        warn=lambda message: print(f"warning: {', '.join(sources)}: {message}", file=sys.stderr),
    )
    first = 0
    for corpus, lines in zip(corpora, per_file):
        write_atomic(corpus, "".join(text + "\n" for text in texts[first : first + len(lines)]))
        first += len(lines)
    print(
        f"distilled corpus: {', '.join(corpora)}: {len(texts):,} lines by {len(flags.teacher)} teacher(s), beam "
        f"{request.beam_size}, in {(time.perf_counter() - start) / 60:.1f} min ({translated} shard(s) translated now)"
    )
    return corpora


def student_files(data, corpora: list[str], with_references: bool) -> tuple[str, str]:
    """The student's data.train_src and data.train_tgt: each source file with its distilled corpus,
    after the source files with their references when `with_references` (every source twice)."""
    distilled = ",".join(os.path.abspath(corpus) for corpus in corpora)
    if not with_references:
        return data.train_src, distilled
    return f"{data.train_src},{data.train_src}", f"{data.train_tgt},{distilled}"


def run(flags) -> int:
    try:
        if flags.beam_size < 1 or flags.batch_size < 1:
            raise ValueError("--beam_size and --batch_size must be at least 1")
        config = flags.config
        config_flags.check_loaded(config)
        checks.validate(config)
        if os.path.exists(flags.workdir) and not os.path.isdir(flags.workdir):
            raise ConfigError(f"--workdir {flags.workdir} is a file, not a directory")
        corpora = _distilled_corpus(flags, config)
    except (DataError, CheckpointError, ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {err.strerror or err} ({err.filename or flags.workdir})", file=sys.stderr)
        return 1
    if flags.distill_only:
        return 0
    from s2s_jax.cli import train

    config.data.train_src, config.data.train_tgt = student_files(config.data, corpora, flags.with_references)
    return train.run(config, flags.workdir)


def _define_flags() -> None:
    from absl import flags

    config_flags.define_config_flag("config", lock_config=True)
    flags.DEFINE_multi_string("teacher", None, "A trained workdir; several: their ensemble teaches.")
    model_flags.define_checkpoint("teacher_checkpoint", "The teachers' checkpoint: ")
    flags.DEFINE_string("workdir", None, "The student's workdir (its distill/ holds the distilled corpus).")
    flags.DEFINE_integer("beam_size", 5, "The teachers' beam.")
    flags.DEFINE_float("alpha", None, "Length normalisation of the beam (default: the first teacher's decode.alpha).")
    flags.DEFINE_integer("batch_size", 64, "Sentences per teacher batch (the distilled corpus depends on it).")
    flags.DEFINE_bool("distill_only", False, "Write the distilled corpus and stop (no training).")
    flags.DEFINE_bool(
        "with_references", False, "Train the student on the references and the distilled targets (sources twice)."
    )
    flags.mark_flags_as_required(["config", "teacher", "workdir"])


def main(argv: list[str] | None = None) -> None:
    """Entry point of `s2s-distill` and `python distill.py`."""
    runtime.run_command("distill", _define_flags, run, argv, flags_parser=config_flags.parse_flags)
