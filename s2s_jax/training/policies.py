"""What a run does about a non-finite step and which validation score picks the best checkpoint:
the registries behind `train.on_nonfinite` and `train.early_stop_metric`, readable without
importing the training loop."""

from __future__ import annotations

import dataclasses

# What `train.on_nonfinite` may say about a step whose loss or gradient is NaN/Inf.
ON_NONFINITE = {
    "stop": "end the run (the update is not applied, no checkpoint is written from it)",
    "skip": "drop the update and carry on; metrics.jsonl counts skipped_steps",
}


@dataclasses.dataclass(frozen=True)
class Metric:
    """A validation score that picks the best checkpoint and drives early stopping."""

    key: str  # in evaluate()'s scores
    higher_is_better: bool
    label: str


EARLY_STOP_METRICS: dict[str, Metric] = {
    "bleu": Metric("valid_bleu", True, "validation BLEU"),
    "chrf": Metric("valid_chrf", True, "validation chrF"),
    "loss": Metric("valid_loss", False, "validation loss"),
}
