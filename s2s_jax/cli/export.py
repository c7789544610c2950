"""The `s2s-export` command (also `python export.py`): a trained model as a self-contained artefact.

    python export.py --workdir runs/m30k_att --output exported/m30k_att
    python exported/m30k_att/translate.py --input test.de --output test.hyp

s2s_jax/decoding/export.py says what the artefact holds.
"""

from __future__ import annotations

from s2s_jax.cli import runtime  # first: OPENBLAS_NUM_THREADS must be set before numpy/jax load

runtime.limit_openblas_threads()

import os
import sys
import time

from s2s_jax.cli import model_flags
from s2s_jax.decoding.export import export_model
from s2s_jax.errors import CheckpointError, DataError


def _int_list(name: str, values: list[str] | None) -> list[int] | None:
    if not values:
        return None
    try:
        return [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--{name} must be comma-separated integers, got {','.join(values)}") from None


def run(flags) -> int:
    try:
        start = time.perf_counter()
        manifest = export_model(
            flags.workdir,
            flags.output,
            flags.checkpoint,
            _int_list("rows", flags.rows),
            _int_list("widths", flags.widths),
            flags.beam_size,
            flags.alpha,
            no_repeat_ngram=getattr(flags, "no_repeat_ngram", 0),
            int8=getattr(flags, "int8", False),
            shortlist=getattr(flags, "shortlist", False),
        )
    except (DataError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {err.filename}: {err.strerror}" if err.filename else f"error: {err}", file=sys.stderr)
        return 1
    count = len(manifest["searches"]) * len(manifest["rows"]) * len(manifest["widths"])
    print(
        f"wrote {flags.output}: {count} functions (step {manifest['step']}) in {time.perf_counter() - start:.0f} s; "
        f"translate with: python {os.path.join(flags.output, 'translate.py')} --input FILE --output FILE"
    )
    return 0


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("workdir", None, "A training workdir.", required=True)
    flags.DEFINE_string("output", None, "Directory to write (must be empty or absent).", required=True)
    model_flags.define_checkpoint()
    flags.DEFINE_list("rows", None, "Batch row counts to export (default: 1, 16, decode.batch_size).")
    flags.DEFINE_list("widths", None, "Source widths, EOS included (default: multiples of 16 up to data.max_len + 1).")
    flags.DEFINE_integer("beam_size", None, "The default search's beam size (1 = greedy); default: decode.beam_size.")
    flags.DEFINE_float("alpha", None, "The default search's length penalty; default: decode.alpha.")
    flags.DEFINE_bool("int8", False, "Export int8 weight matrices (as decode.py --int8 reads them); same outputs.")
    flags.DEFINE_integer(
        "no_repeat_ngram", 0, "Both searches never repeat an n-gram of this many tokens (as decode.py's; 0 = off)."
    )
    flags.DEFINE_bool(
        "shortlist",
        False,
        "Carry the workdir's vocabulary shortlist (built by `python shortlist.py --workdir W`) and apply it in "
        "every search, as decode.py --shortlist does.",
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of `s2s-export` and `python export.py`."""
    runtime.run_command("export", _define_flags, run, argv)
