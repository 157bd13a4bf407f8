"""Choosing a multi-label decision threshold: score every candidate on the validation set.

A sigmoid output above the threshold means "this label applies". 0.5 is rarely the best
choice once classes are imbalanced, so the sweep scores a grid of thresholds with a metric
(accuracy_multi by default) on predictions made once, and picks the best one; ties go to the
middle of the tied thresholds, which is the least sensitive choice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lrkit.metrics import accuracy_multi, metric_name
from lrkit.plots import threshold_figure

DEFAULT_THRESHS = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))


@dataclass(frozen=True)
class ThresholdSweep:
    """Scores of a metric over candidate thresholds, and the chosen one."""

    threshs: np.ndarray  # candidate thresholds on the sigmoid, ascending
    scores: np.ndarray  # metric value at each threshold
    best: float  # the chosen threshold
    best_score: float
    metric: str  # the metric's name

    def plot(self, path: str | Path | None = None, ax: Axes | None = None) -> Figure:
        """The metric against the threshold, the chosen one marked; PNG when `path` is given."""
        return threshold_figure(self.threshs, self.scores, self.best, self.metric, path, ax)


def sweep_thresholds(
    preds: torch.Tensor,
    targets: torch.Tensor,
    threshs: Sequence[float] | None = None,
    metric: Callable[..., torch.Tensor] = accuracy_multi,
    sigmoid: bool = True,
) -> ThresholdSweep:
    """Score `metric(preds, targets, thresh=t, sigmoid=...)` for each t; pick the best t.

    `preds` are logits (or probabilities with sigmoid=False) and `targets` multi-hot, both
    (N, C); `metric` takes `thresh` and `sigmoid` keywords, as accuracy_multi and f1_multi do.
    """
    if preds.shape != targets.shape or preds.ndim != 2:
        raise ValueError(
            "sweep_thresholds needs predictions and multi-hot targets of the same shape (N, C), "
            f"got {tuple(preds.shape)} and {tuple(targets.shape)}"
        )
    grid = np.asarray(DEFAULT_THRESHS if threshs is None else threshs, dtype=float)
    if grid.ndim != 1 or len(grid) == 0 or not np.all((grid > 0) & (grid < 1)):
        raise ValueError(f"thresholds must be a non-empty list of values in (0, 1), got {threshs}")
    grid = np.sort(grid)
    scores = np.array(
        [float(metric(preds, targets, thresh=float(t), sigmoid=sigmoid)) for t in grid]
    )
    tied = np.flatnonzero(scores == scores.max())
    pick = int(tied[(len(tied) - 1) // 2])
    return ThresholdSweep(grid, scores, float(grid[pick]), float(scores[pick]), metric_name(metric))
