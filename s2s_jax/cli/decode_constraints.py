"""decode.py's `--constraints FILE` and `--terminology DICT.tsv`: each input line's phrases, checked
against the static cap of constraint tokens per sentence (s2s_jax/decoding/constraints.py)."""

from __future__ import annotations

from collections.abc import Callable

from s2s_jax.data.constraint_files import TermMatcher, read_constraints, read_terminology
from s2s_jax.decoding import constraints as dba
from s2s_jax.decoding.inference import SearchOptions
from s2s_jax.decoding.translator import Translator
from s2s_jax.errors import DataError


def constrained_search(flags, opts: SearchOptions) -> bool:
    """Whether --constraints or --terminology is given; ValueError when the search cannot place them
    (sampling, greedy search) or another flag would undo them (--mbr, --split_sentences)."""
    constrained = bool(getattr(flags, "constraints", None) or getattr(flags, "terminology", None))
    for name, why in (("mbr", "ranks candidates drawn without them"), ("split_sentences", "cuts a line apart")):
        if constrained and getattr(flags, name, None):
            raise ValueError(f"--constraints and --terminology hold for a whole line: not with --{name} ({why})")
    if constrained and (opts.sample or opts.beam_size == 1):
        how = "not --sample" if opts.sample else "pass --beam_size 2 or more"
        raise ValueError(
            f"--constraints and --terminology need beam search: {how} (greedy search and sampling cannot look "
            "ahead to place them)"
        )
    return constrained


def line_constraints(
    flags, translator: Translator, lines: list[str], warn: Callable[[str], None]
) -> list[list[str]] | None:
    """The phrases each input line's translation must contain: the --constraints file's line, then
    the target terms of the --terminology terms found in the line (as long as they fit the cap;
    a term that does not is left out with a warning); None without either flag.

    A --constraints line over the cap of target tokens, or a dictionary entry whose target term
    alone is, is a DataError naming FILE:LINE."""
    path, terminology = getattr(flags, "constraints", None), getattr(flags, "terminology", None)
    if not path and not terminology:
        return None
    rows = read_constraints(path, len(lines)) if path else [[] for _ in lines]
    ids = translator.constraint_ids(rows)
    for number, row in enumerate(ids, 1):
        if (count := dba.token_count(row)) > dba.MAX_TOKENS:
            raise DataError(f"{path}:{number}: the phrases have {count} target tokens, at most {dba.MAX_TOKENS}")
    if terminology:
        terms = read_terminology(terminology)
        target_ids = {}
        for term, phrases in zip(terms, translator.constraint_ids([[t.target] for t in terms])):
            if (count := dba.token_count(phrases)) > dba.MAX_TOKENS:
                raise DataError(
                    f"{terminology}:{term.line}: the target term has {count} tokens, at most {dba.MAX_TOKENS}"
                )
            target_ids[term.line] = phrases
        for number, (row, row_ids, found) in enumerate(
            zip(rows, ids, TermMatcher(terms, translator.members[0].normalized)(lines)), 1
        ):
            for term in found:
                if dba.token_count(row_ids + target_ids[term.line]) > dba.MAX_TOKENS:
                    warn(
                        f"line {number}: the term on {terminology}:{term.line} is left out: the line's constraints "
                        f"would pass {dba.MAX_TOKENS} target tokens"
                    )
                    continue
                row.append(term.target)
                row_ids.extend(target_ids[term.line])
    return rows
