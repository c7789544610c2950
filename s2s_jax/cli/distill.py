"""The `s2s-distill` command (also `python distill.py`): sequence-level knowledge distillation.

    python distill.py --teacher runs/m30k_tuned_s0 --teacher runs/m30k_tuned_s1 \\
        --config configs/multi30k_student.py --workdir runs/m30k_student

Translates the student config's training sources (data.train_src) with the teacher, or the
ensemble of the teachers, by beam search through the one inference path, resumably
(s2s_jax/decoding/distillation.py), writes the translations to WORKDIR/distill/<train_tgt's
name>, then trains the student on them in WORKDIR (validation and test keep the real
references). Running the same command again continues an interrupted distillation or
training where it stopped. `--distill_only` stops after writing the corpus.
"""

from __future__ import annotations

from s2s_jax.cli import runtime  # first: OPENBLAS_NUM_THREADS must be set before numpy/jax load

runtime.limit_openblas_threads()

import os
import sys
import time

from s2s_jax.config import checks
from s2s_jax.config import flags as config_flags
from s2s_jax.errors import CheckpointError, ConfigError, DataError
from s2s_jax.files import write_atomic


def _source_and_target(config) -> tuple[str, str]:
    """The student's training source file and its target file's name (TSV and generated corpora have neither)."""
    from s2s_jax.data import text as text_lib

    data = config.data
    if not data.train_src or not data.train_tgt or data.train_tsv:
        raise ConfigError(
            "distillation translates a source file: the student config needs data.train_src and "
            "data.train_tgt (line-aligned files, not data.train_tsv or the quickstart corpus)"
        )
    source = text_lib.data_path(data, data.train_src)
    if not os.path.isfile(source):
        raise DataError(f"data.train_src {source}: no such file")
    return source, data.train_tgt


def _distilled_corpus(flags, config) -> str:
    """Writes (or finds) WORKDIR/distill/<target name>, the teachers' translations; its path."""
    from tqdm import tqdm

    from s2s_jax.data.text import read_lines
    from s2s_jax.decoding import distillation
    from s2s_jax.decoding.translator import Translator
    from s2s_jax.workdir import run_config

    source, target_name = _source_and_target(config)
    teacher_cfg = run_config.load(flags.teacher[0]).decode
    request = distillation.source_request(
        flags.teacher,
        flags.teacher_checkpoint,
        source,
        flags.beam_size,
        teacher_cfg.alpha if flags.alpha is None else flags.alpha,
        flags.batch_size,
    )
    out_dir = distillation.directory(flags.workdir)
    corpus = distillation.corpus_path(flags.workdir, target_name)
    os.makedirs(out_dir, exist_ok=True)
    distillation.check_manifest(out_dir, request)
    if os.path.exists(corpus):
        print(f"distilled corpus: {corpus} (already written)")
        return corpus
    start = time.perf_counter()
    translator = Translator(list(flags.teacher), flags.teacher_checkpoint)
    lines = read_lines(source, allow_empty=True)
    show = sys.stderr.isatty()
    texts, translated = distillation.distill(
        translator,
        lines,
        out_dir,
        request,
        progress=(lambda shards: tqdm(shards, desc="distill", unit="shard")) if show else None,
        warn=lambda message: print(f"warning: {source}: {message}", file=sys.stderr),
    )
    write_atomic(corpus, "".join(text + "\n" for text in texts))
    print(
        f"distilled corpus: {corpus}: {len(texts):,} lines by {len(flags.teacher)} teacher(s), beam "
        f"{request.beam_size}, in {(time.perf_counter() - start) / 60:.1f} min ({translated} shard(s) translated now)"
    )
    return corpus


def run(flags) -> int:
    try:
        if flags.beam_size < 1 or flags.batch_size < 1:
            raise ValueError("--beam_size and --batch_size must be at least 1")
        config = flags.config
        config_flags.check_loaded(config)
        checks.validate(config)
        if os.path.exists(flags.workdir) and not os.path.isdir(flags.workdir):
            raise ConfigError(f"--workdir {flags.workdir} is a file, not a directory")
        corpus = _distilled_corpus(flags, config)
    except (DataError, CheckpointError, ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {err.strerror or err} ({err.filename or flags.workdir})", file=sys.stderr)
        return 1
    if flags.distill_only:
        return 0
    from s2s_jax.cli import train

    config.data.train_tgt = os.path.abspath(corpus)
    return train.run(config, flags.workdir)


def _define_flags() -> None:
    from absl import flags

    config_flags.define_config_flag("config", lock_config=True)
    flags.DEFINE_multi_string("teacher", None, "A trained workdir; several: their ensemble teaches.")
    flags.DEFINE_string("teacher_checkpoint", "best", "The teachers' checkpoint: best, latest or a step.")
    flags.DEFINE_string("workdir", None, "The student's workdir (its distill/ holds the distilled corpus).")
    flags.DEFINE_integer("beam_size", 5, "The teachers' beam.")
    flags.DEFINE_float("alpha", None, "Length normalisation of the beam (default: the first teacher's decode.alpha).")
    flags.DEFINE_integer("batch_size", 64, "Sentences per teacher batch (the distilled corpus depends on it).")
    flags.DEFINE_bool("distill_only", False, "Write the distilled corpus and stop (no training).")
    flags.mark_flags_as_required(["config", "teacher", "workdir"])


def main(argv: list[str] | None = None) -> None:
    """Entry point of `s2s-distill` and `python distill.py`."""
    from absl import app, flags

    def _main(args: list[str]) -> int:
        if len(args) > 1:
            raise app.UsageError(f"unexpected arguments: {args[1:]}")
        runtime.setup()
        return run(flags.FLAGS)

    runtime.define_command_flags("distill", _define_flags)
    app.run(_main, argv=argv, flags_parser=config_flags.parse_flags)
