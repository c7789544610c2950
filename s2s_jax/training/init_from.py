"""Starting a run from another run: `train.init_from=WORKDIR[:best|latest|STEP|avg:K]` (fine-tuning).

A new workdir (one without checkpoints) takes the source run's tokenizer(s) and the
parameters that run decodes with (`best` by default), then trains on its own data. By
default the optimizer state and the learning-rate schedule start afresh, like fairseq's
`--finetune-from-model`; `train.init_keep_optimizer=True` also takes the source's
optimizer state (Adam moments and the update count that drives the schedule) from its
training checkpoint of that step. The step counter of the new run starts at 0 either way:
`train.num_steps` counts this run's updates. Once the new run has a checkpoint, a rerun
resumes it and init_from no longer applies. WORKDIR/init_from.json records the source.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from s2s_jax.data.training_data import parse_init_from
from s2s_jax.errors import ConfigError
from s2s_jax.training.optimizers import ON_PLATEAU
from s2s_jax.workdir import checkpoints as ckpt_lib
from s2s_jax.workdir import run_config

RECORD = "init_from.json"


def check(spec: str) -> None:
    """The source must be a training workdir: a clear error before anything is written."""
    workdir, _ = parse_init_from(spec)
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise ConfigError(f"train.init_from={spec}: {workdir} is not a training workdir (no config.json)")


def _shape_differences(source: Any, target: Any) -> list[str]:
    flat_source = {jax.tree_util.keystr(p): np.shape(x) for p, x in jax.tree_util.tree_leaves_with_path(source)}
    flat_target = {jax.tree_util.keystr(p): np.shape(x) for p, x in jax.tree_util.tree_leaves_with_path(target)}
    differ = []
    for key in sorted(set(flat_source) | set(flat_target)):
        a, b = flat_source.get(key, "absent"), flat_target.get(key, "absent")
        if a != b:
            differ.append(f"{key} {a} in the source vs {b} here")
    return differ


def schedule_offset(workdir: str, train_cfg) -> int:
    """Where the learning-rate schedule stands at this run's step 0: the source's step when the run
    kept the source's optimizer state (whose step count goes on from there), else 0."""
    path = os.path.join(workdir, RECORD)
    if not (train_cfg.init_from and train_cfg.init_keep_optimizer) or not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        return int(json.load(f)["step"])


# What decides the structure of a training state beyond the model (train.* key, what it adds, that fact of a value).
_STATE_STRUCTURE = (
    ("optimizer", "the optimizer", lambda value: value),
    ("clip_norm", "gradient clipping", lambda value: value > 0),
    ("ema_decay", "an EMA of the parameters", lambda value: value > 0),
    ("lr_schedule", "a plateau schedule's rate factor", lambda value: value in ON_PLATEAU),
)


def check_optimizer_state(spec: str, source_train, train_cfg) -> None:
    """ConfigError unless the source's training state has this run's structure, which keeping its
    optimizer state needs (else orbax finds no matching checkpoint and calls them unreadable)."""
    for key, what, fact in _STATE_STRUCTURE:
        theirs, ours = fact(source_train[key]), fact(train_cfg[key])
        if theirs != ours:
            raise ConfigError(
                f"train.init_from={spec} with train.init_keep_optimizer: the source ran with train.{key}="
                f"{source_train[key]!r}, this run with {train_cfg[key]!r}, so {what} differs in the saved state; "
                f"set train.{key} as the source had it or leave train.init_keep_optimizer off"
            )


def initial_state(spec: str, state: dict, keep_optimizer: bool, workdir: str | None, train_cfg=None) -> dict:
    """`state` (a freshly initialised train state) with the source's parameters, and with
    `keep_optimizer` its optimizer state too; the step counter stays 0. Records the source
    in WORKDIR/init_from.json (`workdir` None: another process does)."""
    source, which = parse_init_from(spec)
    params, meta = ckpt_lib.load_params(source, which)
    differ = _shape_differences(params, state["params"])
    if differ:
        shown = "; ".join(differ[:4]) + (f"; and {len(differ) - 4} more" if len(differ) > 4 else "")
        raise ConfigError(f"train.init_from={spec}: the model shapes differ ({shown}); use the source's model config")
    state = dict(state, params=params)
    if "ema" in state:
        state["ema"] = params
    if keep_optimizer:
        if train_cfg is not None:
            check_optimizer_state(spec, run_config.load(source).train, train_cfg)
        restored, _ = ckpt_lib.load_train_state(source, meta["step"], state)
        state["opt_state"] = restored["opt_state"]
    if workdir is None:
        return state
    with open(os.path.join(workdir, RECORD), "w", encoding="utf-8") as f:
        json.dump(
            {
                "workdir": os.path.abspath(source),
                "checkpoint": which,
                "step": meta["step"],
                "keep_optimizer": keep_optimizer,
            },
            f,
            indent=2,
        )
        f.write("\n")
    print(
        f"Initialised from {source} ({which}: step {meta['step']}"
        f"{', with its optimizer state' if keep_optimizer else ''})",
        flush=True,
    )
    return state
