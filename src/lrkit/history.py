"""The record of several fits on one learner (fine_tune's frozen and unfrozen stages, say):
one `FitRecord` per fit, and where each batch and epoch lies on a common epoch axis.

Pure data and arithmetic; the Recorder (lrkit.callbacks) fills the stages, lrkit.plots draws
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class FitRecord:
    """What the Recorder saw during one fit: per batch the lr of every group, the momentum and
    the training loss; per epoch the log and the batch count. `frozen_idx` is the learner's
    first trainable group when the fit began (0: nothing frozen) of `n_groups`; `n_iter` the
    batches per epoch (None when the loader has no length)."""

    frozen_idx: int
    n_groups: int
    n_iter: int | None
    lrs: list[list[float]] = field(default_factory=list)  # [batch][group]
    moms: list[float | None] = field(default_factory=list)  # [batch], the last group's
    losses: list[float] = field(default_factory=list)  # [batch], training loss
    log: list[dict[str, Any]] = field(default_factory=list)  # [epoch]
    iters_per_epoch: list[int] = field(default_factory=list)  # [finished epoch]

    @property
    def frozen(self) -> bool:
        """Whether some layer groups were frozen during this fit."""
        return self.frozen_idx > 0


def fit_change(before: FitRecord, after: FitRecord) -> str:
    """Plain words for what changed between two fits: "unfreeze", "freeze", "freeze_to(2)",
    or "new fit" when the frozen groups stayed the same."""
    if before.frozen_idx == after.frozen_idx:
        return "new fit"
    if after.frozen_idx == 0:
        return "unfreeze"
    if after.frozen_idx == after.n_groups - 1:
        return "freeze"
    return f"freeze_to({after.frozen_idx})"


def batch_positions(stage: FitRecord, start: float = 0.0) -> np.ndarray:
    """Where each of the stage's batches ends on the epoch axis, from `start` (in epochs).

    Batch i of an epoch of n batches lies at epoch + (i + 1) / n, so the last batch of the
    first epoch lies at 1.0, where that epoch's validation loss is drawn. An unfinished last
    epoch (an early stop) is spread over the stage's `n_iter` batches, or over as many as the
    previous epoch had, when that is unknown. Returns shape (len(stage.losses),).
    """
    positions: list[np.ndarray] = []
    done = 0
    for epoch, n in enumerate(stage.iters_per_epoch):
        positions.append(start + epoch + np.arange(1, n + 1) / max(n, 1))
        done += n
    left = len(stage.losses) - done
    if left > 0:
        previous = stage.iters_per_epoch[-1] if stage.iters_per_epoch else left
        n = max(stage.n_iter or previous, left)
        epoch = len(stage.iters_per_epoch)
        positions.append(start + epoch + np.arange(1, left + 1) / n)
    return np.concatenate(positions) if positions else np.zeros(0)


def fit_starts(stages: Sequence[FitRecord]) -> list[float]:
    """The epoch at which each stage begins on the common axis: stages follow each other, a
    stage taking its finished epochs plus one for an unfinished one."""
    starts, at = [], 0.0
    for stage in stages:
        starts.append(at)
        unfinished = len(stage.losses) > sum(stage.iters_per_epoch)
        at += len(stage.iters_per_epoch) + (1 if unfinished else 0)
    return starts
