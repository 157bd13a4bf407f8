"""Matplotlib figures: the lr_find curve, training losses and schedules, batches of images.

Figures are built with `matplotlib.figure.Figure` directly (no pyplot), so nothing here
touches global state or needs a display; every function returns the Figure and, given a
path, also writes it as PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def save_figure(fig: Figure, path: str | Path | None) -> Figure:
    """Write `fig` to `path` (creating parent folders) when a path is given; return it."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def lr_find_figure(
    lrs: np.ndarray,
    losses: np.ndarray,
    raw_losses: np.ndarray,
    suggestions: dict[str, float],
    path: str | Path | None = None,
    ax: Axes | None = None,
) -> Figure:
    """The range test's loss curve on a log lr axis, each rule's suggestion marked on it."""
    if ax is None:
        fig = Figure(figsize=(7, 4.2))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.plot(lrs, raw_losses, color="0.75", linewidth=0.8, label="raw loss")
    ax.plot(lrs, losses, color="C0", linewidth=1.8, label="smoothed loss")
    log_lrs = np.log(lrs)
    markers = "ovs^DP*X"
    for index, (name, lr) in enumerate(suggestions.items()):
        if not np.isfinite(lr):
            continue
        loss_there = np.interp(np.log(lr), log_lrs, losses)
        ax.plot(
            [lr],
            [loss_there],
            linestyle="none",
            marker=markers[index % len(markers)],
            markersize=8,
            color=f"C{index + 1}",
            label=f"{name}: {lr:.2e}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss")
    # Keep the blow-up from squashing the useful part: cap the y range a little above the start.
    finite = losses[np.isfinite(losses)]
    if len(finite):
        start = max(finite[: max(len(finite) // 10, 1)].max(), finite.min())
        top = start + 0.3 * abs(start)
        bottom = finite.min() - 0.1 * abs(top - finite.min())
        ax.set_ylim(bottom, max(top, finite.min() + 1e-6))
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("learning-rate range test")
    return save_figure(fig, path)


def show_batch_figure(
    images: np.ndarray,
    labels: list[str] | tuple[str, ...],
    ncols: int | None = None,
    path: str | Path | None = None,
) -> Figure:
    """A grid of uint8 images (N, H, W, C) titled with their labels; grey when C is 1."""
    import math

    n = len(images)
    if n == 0:
        raise ValueError("show_batch_figure needs at least one image")
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(2.2 * ncols, 2.4 * nrows))
    for i in range(nrows * ncols):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.axis("off")
        if i < n:
            image = images[i]
            grey = image.ndim == 2 or image.shape[-1] == 1
            shown = image.reshape(image.shape[:2]) if grey else image
            ax.imshow(shown, cmap="gray" if grey else None, vmin=0, vmax=255)
            ax.set_title(str(labels[i]), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_losses(recorder, path: str | Path | None = None) -> Figure:
    """Training loss per batch and validation loss at the end of each epoch (a Recorder's)."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    ax.plot(
        np.arange(len(recorder.losses)),
        recorder.losses,
        color="C0",
        linewidth=1.0,
        label="train (per batch)",
    )
    ends = np.cumsum(recorder.iters_per_epoch) - 1
    valid = [row.get("valid_loss") for row in recorder.log]
    points = [(x, y) for x, y in zip(ends, valid, strict=True) if y is not None]
    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, color="C1", marker="o", linewidth=1.5, label="valid (per epoch)")
    ax.set_xlabel("batch")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("training losses")
    return save_figure(fig, path)


def plot_schedule(recorder, path: str | Path | None = None) -> Figure:
    """Learning rate of every layer group (log scale) and the momentum, per batch."""
    fig = Figure(figsize=(9, 3.6))
    ax_lr, ax_mom = fig.subplots(1, 2)
    lrs = np.asarray(recorder.lrs, dtype=float).reshape(len(recorder.lrs), -1)  # (batch, group)
    for group in range(lrs.shape[1]):
        ax_lr.plot(lrs[:, group], linewidth=1.5, label=f"group {group}")
    if len(lrs) and (lrs > 0).all():
        ax_lr.set_yscale("log")
    ax_lr.set_xlabel("batch")
    ax_lr.set_ylabel("learning rate")
    ax_lr.grid(True, which="both", alpha=0.25)
    ax_lr.legend(fontsize=8, loc="best")
    moms = [np.nan if m is None else m for m in recorder.moms]
    ax_mom.plot(moms, color="C3", linewidth=1.5)
    ax_mom.set_xlabel("batch")
    ax_mom.set_ylabel("momentum (beta1)")
    ax_mom.grid(True, alpha=0.25)
    fig.suptitle("schedule")
    return save_figure(fig, path)


def lr_find_repeats_figure(
    curves: list[tuple[np.ndarray, np.ndarray]],
    ranges: dict[str, tuple[float, float, float]],
    path: str | Path | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Several range-test curves over each other; per rule (lowest, median, highest)
    suggestion drawn as a bar with the median marked."""
    if ax is None:
        fig = Figure(figsize=(7, 4.2))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    for index, (lrs, losses) in enumerate(curves):
        ax.plot(lrs, losses, color="C0", alpha=0.45, linewidth=1.2, label=None if index else "runs")
    all_losses = np.concatenate([losses for _, losses in curves])
    low, high = np.nanmin(all_losses), np.nanpercentile(all_losses, 90)
    for index, (name, (lowest, median, highest)) in enumerate(ranges.items()):
        if not np.isfinite(median):
            continue
        level = low - (index + 1) * 0.06 * (high - low)  # one row per rule below the curves
        color = f"C{index + 1}"
        ax.plot([lowest, highest], [level, level], color=color, linewidth=3)
        ax.plot([median], [level], marker="o", color=color, label=f"{name}: {median:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("smoothed loss")
    ax.set_ylim(low - (len(ranges) + 1) * 0.06 * (high - low), high * 1.1)
    ax.grid(True, which="major", alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"range test, {len(curves)} runs: suggestion ranges per rule")
    return save_figure(fig, path)


def valid_loss_per_rule_figure(
    curves: dict[str, list[float | None]],
    diverged: set[str],
    path: str | Path | None = None,
) -> Figure:
    """Validation loss per epoch, one line per suggestion rule; diverged runs dashed."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    for index, (rule, losses) in enumerate(curves.items()):
        epochs = [e + 1 for e, v in enumerate(losses) if v is not None and np.isfinite(v)]
        values = [v for v in losses if v is not None and np.isfinite(v)]
        style = "--" if rule in diverged else "-"
        label = f"{rule} (diverged)" if rule in diverged else rule
        ax.plot(epochs, values, style, marker="o", color=f"C{index + 1}", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("validation loss per epoch, one run per rule")
    return save_figure(fig, path)


def threshold_figure(
    threshs: np.ndarray,
    scores: np.ndarray,
    best: float,
    metric: str = "accuracy_multi",
    path: str | Path | None = None,
    ax: Axes | None = None,
) -> Figure:
    """A multi-label metric against the decision threshold, the chosen threshold marked."""
    if ax is None:
        fig = Figure(figsize=(6, 3.8))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.plot(threshs, scores, color="C0", marker="o", markersize=3, linewidth=1.5)
    best_score = float(np.interp(best, threshs, scores))
    ax.axvline(best, color="C1", linestyle="--", linewidth=1)
    label = f"best: {best:.2f} ({best_score:.4f})"
    ax.plot([best], [best_score], marker="o", color="C1", label=label)
    ax.set_xlabel("threshold on the sigmoid")
    ax.set_ylabel(f"{metric} (validation)")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("multi-label threshold sweep")
    return save_figure(fig, path)


def confusion_matrix_figure(
    counts: np.ndarray,
    names: Sequence[str],
    normalize: bool = False,
    path: str | Path | None = None,
) -> Figure:
    """Heat map of (C, C) counts, rows actual and columns predicted, each cell annotated."""
    n = len(names)
    values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    side = max(4.0, 0.32 * n + 2.0)  # inches; 37 classes -> about 14
    fig = Figure(figsize=(side, side))
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(np.arange(n), labels=list(names), rotation=90, fontsize=8)
    ax.set_yticks(np.arange(n), labels=list(names), fontsize=8)
    top = values.max() if values.size else 0
    for a in range(n):
        for p in range(n):
            if counts[a, p] == 0:
                continue  # empty cells stay blank, so the mistakes stand out
            text = f"{values[a, p]:.2f}" if normalize else str(int(counts[a, p]))
            colour = "white" if values[a, p] > top / 2 else "black"
            ax.text(p, a, text, ha="center", va="center", color=colour, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    total = int(counts.sum())
    right = int(np.trace(counts))
    ax.set_title(f"confusion matrix ({right} of {total} right)")
    fig.tight_layout()
    return save_figure(fig, path)


def per_class_figure(
    table: dict[str, dict[str, float]], title: str, path: str | Path | None = None
) -> Figure:
    """Horizontal bars of precision and recall per class, with each class's support."""
    names = list(table)
    fig = Figure(figsize=(7, max(2.5, 0.3 * len(names) + 1.2)))
    ax = fig.add_subplot()
    rows = np.arange(len(names))
    ax.barh(rows - 0.2, [table[c]["precision"] for c in names], height=0.4, label="precision")
    ax.barh(rows + 0.2, [table[c]["recall"] for c in names], height=0.4, label="recall")
    ax.set_yticks(rows, labels=[f"{c} ({int(table[c]['support'])})" for c in names], fontsize=8)
    ax.invert_yaxis()  # vocab order top to bottom
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction (support in brackets)")
    ax.grid(True, axis="x", alpha=0.25)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)
