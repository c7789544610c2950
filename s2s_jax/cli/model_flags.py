"""The flags that name the trained model a command loads, defined once for decode.py, serve.py,
export.py and distill.py so that their names, defaults and help stay the same."""

from __future__ import annotations

CHECKPOINT = "best | latest | a step number | avg:K (the mean of the K newest training checkpoints)."


def define_workdirs(verb: str) -> None:
    """--workdir (repeatable: an ensemble) and --ensemble_weights; `verb`: what the ensemble does."""
    from absl import flags

    flags.DEFINE_multi_string(
        "workdir",
        None,
        f"A training workdir; repeat it to {verb} with an ensemble (the members' per-step log-probabilities "
        "averaged; they must share the target vocabulary).",
        required=True,
    )
    flags.DEFINE_list(
        "ensemble_weights",
        None,
        "Comma-separated weights of the ensemble members, one per --workdir in order (default: equal).",
    )


def define_checkpoint(name: str = "checkpoint", whose: str = "") -> None:
    """The checkpoint to load (`checkpoints.load_params` reads each of these forms)."""
    from absl import flags

    flags.DEFINE_string(name, "best", f"{whose}{CHECKPOINT}")


def define_shortlist(per: str) -> None:
    """--shortlist: restrict each `per`'s output to its vocabulary shortlist (shortlist.py builds it)."""
    from absl import flags

    flags.DEFINE_bool(
        "shortlist",
        False,
        f"Restrict each {per}'s output to its vocabulary shortlist (the first --workdir's, built by "
        "`python shortlist.py --workdir W`): a smaller output layer per step, for speed.",
    )
