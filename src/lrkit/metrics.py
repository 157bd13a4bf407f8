"""Validation metrics: `metric(pred, target) -> scalar tensor`, on the whole validation set.

The Learner concatenates every validation batch before calling a metric, so metrics that do
not average over batches (F-beta) are exact. Predictions are raw model outputs (logits).
Parametrise with `functools.partial(accuracy_multi, thresh=0.2)`; the column keeps the name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor | float]


def metric_name(metric: Metric) -> str:
    """The column name of a metric: its `name` attribute, or its function's name."""
    name = getattr(metric, "name", None)
    if isinstance(name, str):
        return name
    while isinstance(metric, functools.partial):
        metric = metric.func
    return getattr(metric, "__name__", type(metric).__name__)


def _labels(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Class indices from logits of shape (N, C), checked against targets of shape (N,)."""
    if pred.ndim != 2 or target.ndim != 1 or pred.shape[0] != target.shape[0]:
        raise ValueError(
            f"expected logits (N, C) and class indices (N,), got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}; for multi-label targets use accuracy_multi"
        )
    return pred.argmax(dim=-1)


def accuracy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of items whose highest-scoring class is the target."""
    return (_labels(pred, target) == target).float().mean()


def error_rate(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - accuracy."""
    return 1 - accuracy(pred, target)


def top_k_accuracy(pred: torch.Tensor, target: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Fraction of items whose target is among the `k` highest-scoring classes."""
    _labels(pred, target)
    k = min(k, pred.shape[-1])
    top = pred.topk(k, dim=-1).indices  # (N, k)
    return (top == target[:, None]).any(dim=-1).float().mean()


def _multi_hot(
    pred: torch.Tensor, target: torch.Tensor, thresh: float, sigmoid: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean predictions and targets for multi-label metrics, both (N, C)."""
    if pred.shape != target.shape:
        raise ValueError(
            f"multi-label metrics need predictions and targets of the same shape (N, C), "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    scores = pred.sigmoid() if sigmoid else pred
    return scores > thresh, target.bool()


def accuracy_multi(
    pred: torch.Tensor, target: torch.Tensor, thresh: float = 0.5, sigmoid: bool = True
) -> torch.Tensor:
    """Fraction of (item, label) decisions that are right, after a sigmoid and a threshold."""
    hits, truth = _multi_hot(pred, target, thresh, sigmoid)
    return (hits == truth).float().mean()


def fbeta_multi(
    pred: torch.Tensor,
    target: torch.Tensor,
    beta: float = 2.0,
    thresh: float = 0.5,
    sigmoid: bool = True,
    average: str = "samples",
) -> torch.Tensor:
    """Multi-label F-beta; `average` is "samples" (per item, fastai's default), "micro" or "macro".

    A precision or recall of 0/0 counts as 0, as scikit-learn does by default.
    """
    hits, truth = _multi_hot(pred, target, thresh, sigmoid)
    dims = {"samples": 1, "macro": 0, "micro": (0, 1)}
    if average not in dims:
        raise ValueError(f"average must be one of {sorted(dims)}, got {average!r}")
    dim = dims[average]
    true_pos = (hits & truth).float().sum(dim=dim)
    predicted = hits.float().sum(dim=dim)
    actual = truth.float().sum(dim=dim)
    b2 = beta**2
    # F_beta = (1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP) = (1 + b^2) TP / (b^2 actual + predicted)
    denom = b2 * actual + predicted
    score = torch.where(denom > 0, (1 + b2) * true_pos / denom.clamp(min=1e-12), 0.0)
    return score.mean()


def f1_multi(
    pred: torch.Tensor,
    target: torch.Tensor,
    thresh: float = 0.5,
    sigmoid: bool = True,
    average: str = "samples",
) -> torch.Tensor:
    """Multi-label F1 (F-beta with beta = 1)."""
    return fbeta_multi(pred, target, 1.0, thresh, sigmoid, average)
