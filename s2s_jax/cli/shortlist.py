"""The `s2s-shortlist` command (also `python shortlist.py`): builds a run's vocabulary shortlist.

    python shortlist.py --workdir runs/m30k_tuned
    python decode.py --workdir runs/m30k_tuned --shortlist --input test.de

Reads the run's training pairs (its config's data files, normalised and tokenized with the
workdir's tokenizers), builds the lexical table (s2s_jax/decoding/shortlist.py) and writes
shortlist.npz and shortlist.json into the workdir, with its coverage of the validation pairs.
"""

from __future__ import annotations

from s2s_jax.cli import runtime  # first: OPENBLAS_NUM_THREADS must be set before numpy loads

runtime.limit_openblas_threads()

import sys
import time

from s2s_jax.data import languages
from s2s_jax.data.tokenizer import Tokenizer, load_workdir_tokenizers
from s2s_jax.decoding import shortlist as lexical
from s2s_jax.errors import ConfigError, DataError
from s2s_jax.workdir import run_config

# Measured on multi30k_tuned (README, "Vocabulary shortlists"): test2016 greedy BLEU within 0.03 of
# the whole vocabulary, beam 5 +0.1 to +0.2 (the softmax over the list, not its size: k=40 gives the same).
DEFAULT_K = 20
DEFAULT_FREQUENT = 100


def tokenized_pairs(
    cfg_data, split: str, src_tok: Tokenizer, tgt_tok: Tokenizer, max_pairs: int = 0
) -> tuple[list[list[int]], list[list[int]]]:
    """A split's pairs as the run saw them: normalised like its data config (each language pair's
    sources tagged in a multilingual run), tokenized, the first `max_pairs` (0: all)."""
    pairs = languages.cleaned_split(cfg_data, split, log=lambda message: None)
    if max_pairs:
        pairs = pairs[:max_pairs]
    return src_tok.tokenize([s for s, _ in pairs]), tgt_tok.tokenize([t for _, t in pairs])


def run(flags) -> int:
    try:
        if flags.k < 0 or flags.frequent < 0 or flags.max_pairs < 0 or flags.iterations < 1:
            raise ValueError("--k, --frequent and --max_pairs must be >= 0 and --iterations >= 1")
        start = time.perf_counter()
        config = run_config.load(flags.workdir)
        src_tok, tgt_tok = load_workdir_tokenizers(flags.workdir)
        src, tgt = tokenized_pairs(config.data, "train", src_tok, tgt_tok, flags.max_pairs)
        if not src:
            raise DataError("the run's training data has no pairs to build a shortlist from")
        built = lexical.build(
            src, tgt, src_tok.vocab_size, tgt_tok.vocab_size, flags.k, flags.frequent, flags.method, flags.iterations
        )
        if languages.has_split(config.data, "valid"):
            built.settings["valid"] = lexical.coverage(built, *tokenized_pairs(config.data, "valid", src_tok, tgt_tok))
        lexical.save(built, flags.workdir)
    except (DataError, ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {err.strerror or err} ({err.filename})", file=sys.stderr)
        return 1
    valid = built.settings.get("valid")
    report = (
        f"; validation: {valid['coverage']:.1%} of reference pieces inside, {valid['mean_size']:.0f} ids per sentence"
        if valid
        else ""
    )
    print(
        f"wrote {flags.workdir}/{lexical.TABLE_FILE}: {flags.method}, k={flags.k}, frequent={flags.frequent}, "
        f"{len(src):,} pairs in {time.perf_counter() - start:.1f} s{report}"
    )
    return 0


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string(
        "workdir", None, "A training workdir: its config's training data and tokenizers.", required=True
    )
    flags.DEFINE_integer("k", DEFAULT_K, "Target pieces kept per source piece (beyond the frequent ones).")
    flags.DEFINE_integer("frequent", DEFAULT_FREQUENT, "The most frequent target pieces, in every sentence's list.")
    flags.DEFINE_enum(
        "method",
        "ibm1",
        list(lexical.METHODS),
        "p(t|s): ibm1 (IBM model 1, a few EM iterations) or cooc (co-occurrence).",
    )
    flags.DEFINE_integer("iterations", 5, "IBM model 1's EM iterations.")
    flags.DEFINE_integer("max_pairs", 200_000, "Build from the first N training pairs (0: all; memory grows with N).")


def main(argv: list[str] | None = None) -> None:
    """Entry point of `s2s-shortlist` and `python shortlist.py`."""
    runtime.run_command("shortlist", _define_flags, run, argv)
