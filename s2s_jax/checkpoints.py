"""Orbax checkpoints in the workdir: the latest few for resuming, the best for decoding.

WORKDIR/checkpoints/<step>/  state (params, optimizer state, step) + meta (JSON)
WORKDIR/best/<step>/         params + meta of the step with the best validation BLEU

`meta` holds the data iterator's position and the validation scores; the
PRNG needs no saving because every step's key is `fold_in(seed, step)`.
Orbax writes each checkpoint to a temporary directory and renames it when
complete, so an interrupted save never replaces a good checkpoint.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A workdir without a usable checkpoint, said in words a user can act on."""


def _manager(directory: str, max_to_keep: int, item_names: tuple[str, ...], create: bool = True):
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
    return ocp.CheckpointManager(
        os.path.abspath(directory), options=options, item_names=item_names
    )


class Checkpoints:
    """The two checkpoint managers of one training run."""

    def __init__(self, workdir: str, max_to_keep: int):
        self.latest = _manager(os.path.join(workdir, "checkpoints"), max_to_keep, ("state", "meta"))
        self.best = _manager(os.path.join(workdir, "best"), 1, ("params", "meta"))

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        self.latest.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )

    def save_best(self, step: int, params: Any, meta: dict) -> None:
        self.best.save(
            step,
            args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)),
            force=True,
        )

    def best_meta(self) -> dict | None:
        step = self.best.latest_step()
        if step is None:
            return None
        return self.best.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, abstract_state: Any) -> tuple[Any, dict]:
        """Restores the newest readable checkpoint, shaped and sharded like `abstract_state`.

        A damaged newest checkpoint (a disk error, files removed by hand) is
        skipped with a warning and the one before it is used.
        """
        for step in sorted(self.latest.all_steps(), reverse=True):
            try:
                restored = self.latest.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
                    ),
                )
                return restored["state"], restored["meta"]
            except Exception as err:  # orbax raises many types for unreadable files
                warnings.warn(f"checkpoint {step} is unreadable ({type(err).__name__}: {err}); trying an older one")
        raise CheckpointError(f"no readable checkpoint in {self.latest.directory}")

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def load_params(workdir: str, which: str = "best") -> tuple[Any, dict]:
    """Parameters for decoding: `which` is 'best', 'latest' or a step number."""
    if which == "best" and not os.path.isdir(os.path.join(workdir, "best")):
        which = "latest"  # a run without validation has no best checkpoint
    if which == "best":
        manager = _manager(os.path.join(workdir, "best"), 1, ("params", "meta"), create=False)
        step = manager.latest_step()
        item = "params"
    else:
        manager = _manager(os.path.join(workdir, "checkpoints"), 1, ("state", "meta"), create=False)
        step = manager.latest_step() if which == "latest" else int(which)
        item = "state"
    if step is None or step not in manager.all_steps():
        raise CheckpointError(
            f"no checkpoint '{which}' in {workdir}: train first with "
            f"`python train.py --config CONFIG --workdir {workdir}`"
        )
    restored = manager.restore(
        step, args=ocp.args.Composite(**{item: ocp.args.StandardRestore(), "meta": ocp.args.JsonRestore()})
    )
    tree = restored[item]
    params = tree["params"] if item == "state" else tree
    manager.close()
    return jax.tree.map(jax.numpy.asarray, params), dict(restored["meta"], step=step)
