"""Matplotlib figures: the lr_find curve, training losses and schedules, batches of images.

Figures are built with `matplotlib.figure.Figure` directly (no pyplot), so nothing here
touches global state or needs a display; every function returns the Figure and, given a
path, also writes it as PNG.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lrkit.history import FitRecord, batch_positions, fit_change, fit_starts

# Suggestions closer than this (log10 lr, 0.1 = 26 %) share one marker and label: an 8-point
# marker spans about 0.16 decades on the 7-inch plot of a 1e-7..10 sweep, so closer markers
# would mostly hide each other.
AGREE_DECADES = 0.1
SMOOTH_BETA = 0.98  # the training loss's EMA in plot_losses, fastai's Recorder's beta


def save_figure(fig: Figure, path: str | Path | None) -> Figure:
    """Write `fig` to `path` (creating parent folders) when a path is given; return it."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def agreeing_rules(
    suggestions: dict[str, float], decades: float = AGREE_DECADES
) -> list[list[tuple[str, float]]]:
    """The finite suggestions in clusters whose neighbours lie within `decades` of each other
    (log10 lr), lowest lr first, each cluster in its rules' order of the dict."""
    order = {name: index for index, name in enumerate(suggestions)}
    found = sorted(
        ((name, lr) for name, lr in suggestions.items() if np.isfinite(lr) and lr > 0),
        key=lambda item: item[1],
    )
    clusters: list[list[tuple[str, float]]] = []
    for name, lr in found:
        if clusters and np.log10(lr / clusters[-1][-1][1]) <= decades:
            clusters[-1].append((name, lr))
        else:
            clusters.append([(name, lr)])
    return [sorted(cluster, key=lambda item: order[item[0]]) for cluster in clusters]


def agreeing_label(cluster: list[tuple[str, float]]) -> str:
    """ "minimum = steep: 1.20e-03" when the rules give the same lr to three digits,
    "minimum ≈ steep: 1.20e-03, 1.23e-03" when they differ a little."""
    shown = list(dict.fromkeys(f"{lr:.2e}" for _, lr in cluster))
    sign = " = " if len(shown) == 1 else " ≈ "
    return sign.join(name for name, _ in cluster) + ": " + ", ".join(shown)


def lr_find_figure(
    lrs: np.ndarray,
    losses: np.ndarray,
    raw_losses: np.ndarray,
    suggestions: dict[str, float],
    path: str | Path | None = None,
    ax: Axes | None = None,
    warnings: Sequence[str] = (),
) -> Figure:
    """The range test's loss curve on a log lr axis, each rule's suggestion marked on it.

    Rules that agree (within `AGREE_DECADES`) share one marker and one label ("minimum =
    steep: ..."), so no marker hides another. Each warning's first clause is written in the
    figure, under the title, so a saved plot keeps it.
    """
    if ax is None:
        fig = Figure(figsize=(7, 4.2))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.plot(lrs, raw_losses, color="0.75", linewidth=0.8, label="raw loss")
    ax.plot(lrs, losses, color="C0", linewidth=1.8, label="smoothed loss")
    log_lrs = np.log(lrs)
    markers = "ovs^DP*X"
    for index, cluster in enumerate(agreeing_rules(suggestions)):
        lr = float(np.exp(np.mean([np.log(value) for _, value in cluster])))
        loss_there = np.interp(np.log(lr), log_lrs, losses)
        ax.plot(
            [lr],
            [loss_there],
            linestyle="none",
            marker=markers[index % len(markers)],
            markersize=8,
            color=f"C{index + 1}",
            label=agreeing_label(cluster),
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
    lines = [
        textwrap.fill("warning: " + note.split(";")[0], 95, subsequent_indent="  ")
        for note in warnings
    ]
    if lines:
        ax.text(
            0.01,
            0.98,
            "\n".join(lines),
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=8,
            color="C3",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8},
        )
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


def smooth(values: Sequence[float], beta: float = SMOOTH_BETA) -> np.ndarray:
    """Debiased exponential moving average, as fastai's Recorder smooths the loss it plots:
    avg_i = beta avg_(i-1) + (1 - beta) x_i, shown as avg_i / (1 - beta^(i+1)). Non-finite
    values are skipped (the average carries over). Returns shape (len(values),)."""
    out = np.empty(len(values))
    average, count = 0.0, 0
    for index, value in enumerate(values):
        if math.isfinite(value):
            average = beta * average + (1 - beta) * value
            count += 1
        out[index] = average / (1 - beta**count) if count else math.nan
    return out


def integer_epoch_axis(ax: Axes) -> None:
    """Ticks on whole epochs only, labelled "epoch", the axis starting at epoch 0."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if ax.has_data():
        ax.set_xlim(left=0)
    ax.set_xlabel("epoch")


def mark_fit_changes(axes: Sequence[Axes], stages: Sequence[FitRecord]) -> list[float]:
    """A dashed vertical line, labelled with what changed ("unfreeze", ...), where each stage
    after the first begins; returns those epochs."""
    starts = fit_starts(stages)
    for index in range(1, len(stages)):
        change = fit_change(stages[index - 1], stages[index])
        for ax in axes:
            ax.axvline(starts[index], color="0.35", linestyle="--", linewidth=1, label=change)
            ax.text(
                starts[index],
                0.98,
                f" {change}",
                transform=ax.get_xaxis_transform(),  # x in data, y in axes fraction
                ha="left",
                va="top",
                fontsize=8,
                color="0.35",
            )
    return starts[1:]


def plot_losses(stages: Sequence[FitRecord], path: str | Path | None = None) -> Figure:
    """Training loss per batch, smoothed as fastai's plot_loss draws it (debiased EMA, beta
    `SMOOTH_BETA`, restarted at each fit) with the raw losses faint behind, and the validation
    loss at the end of each epoch; x is the epoch, every fit after the one before it, each
    change between fits (e.g. "unfreeze") a dashed vertical line. Fits without a batch (0
    epochs, or stopped before the first) are left out."""
    stages = [stage for stage in stages if stage.losses]
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    valid_xs, valid_ys = [], []
    for index, (stage, start) in enumerate(zip(stages, fit_starts(stages), strict=True)):
        xs = batch_positions(stage, start)
        first = index == 0
        ax.plot(
            xs,
            stage.losses,
            color="C0",
            alpha=0.25,
            linewidth=0.8,
            label="train, per batch" if first else None,
        )
        ax.plot(
            xs,
            smooth(stage.losses),
            color="C0",
            linewidth=1.6,
            label=f"train, smoothed (EMA {SMOOTH_BETA})" if first else None,
        )
        for epoch, row in enumerate(stage.log):
            value = row.get("valid_loss")
            if value is not None and math.isfinite(value):
                valid_xs.append(start + epoch + 1)
                valid_ys.append(value)
    if valid_xs:
        ax.plot(valid_xs, valid_ys, color="C1", marker="o", linewidth=1.5, label="valid, per epoch")
    mark_fit_changes([ax], stages)
    integer_epoch_axis(ax)
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("training losses")
    return save_figure(fig, path)


def plot_schedule(stages: Sequence[FitRecord], path: str | Path | None = None) -> Figure:
    """Learning rate of every layer group (log scale) and the momentum against the epoch,
    every fit after the one before it, each change between fits a dashed vertical line; fits
    without a batch are left out."""
    stages = [stage for stage in stages if stage.lrs]
    fig = Figure(figsize=(9, 3.6))
    ax_lr, ax_mom = fig.subplots(1, 2)
    starts = fit_starts(stages)
    xs = np.concatenate(
        [batch_positions(s, at) for s, at in zip(stages, starts, strict=True)] or [np.zeros(0)]
    )
    n_groups = max((len(row) for stage in stages for row in stage.lrs), default=0)
    # (batch, group); a fit with fewer param groups leaves the others blank
    lrs = np.full((len(xs), n_groups), np.nan)
    moms = np.full(len(xs), np.nan)
    row_at = 0
    for stage in stages:
        for row, mom in zip(stage.lrs, stage.moms, strict=True):
            lrs[row_at, : len(row)] = row
            moms[row_at] = np.nan if mom is None else mom
            row_at += 1
    for group in range(n_groups):
        ax_lr.plot(xs, lrs[:, group], linewidth=1.5, label=f"group {group}")
    finite = lrs[np.isfinite(lrs)]
    if len(finite) and (finite > 0).all():
        ax_lr.set_yscale("log")
    ax_mom.plot(xs, moms, color="C3", linewidth=1.5)
    mark_fit_changes([ax_lr, ax_mom], stages)
    for ax in (ax_lr, ax_mom):
        integer_epoch_axis(ax)
        ax.grid(True, which="both", alpha=0.25)
    ax_lr.set_ylabel("learning rate")
    ax_lr.legend(fontsize=8, loc="best")
    ax_mom.set_ylabel("momentum (beta1)")
    fig.suptitle("schedule")
    return save_figure(fig, path)


def lr_find_repeats_figure(
    curves: list[tuple[np.ndarray, np.ndarray]],
    ranges: dict[str, tuple[float, float, float]],
    path: str | Path | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Several range-test curves over each other; below them one row per rule, its (lowest,
    median, highest) suggestion over the runs drawn as a bar with the median marked. The y
    axis's ticks are losses beside the curves and rule names beside the rows."""
    if ax is None:
        fig = Figure(figsize=(7, 4.2))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    for index, (lrs, losses) in enumerate(curves):
        ax.plot(lrs, losses, color="C0", alpha=0.45, linewidth=1.2, label=None if index else "runs")
    all_losses = np.concatenate([losses for _, losses in curves])
    low, high = np.nanmin(all_losses), np.nanpercentile(all_losses, 90)
    loss_ticks = [t for t in MaxNLocator(5).tick_values(low, high * 1.1) if low <= t <= high * 1.1]
    rows: list[tuple[float, str]] = []
    for index, (name, (lowest, median, highest)) in enumerate(ranges.items()):
        level = low - (index + 1) * 0.06 * (high - low)  # one row per rule below the curves
        rows.append((level, name))
        if not np.isfinite(median):
            continue
        color = f"C{index + 1}"
        ax.plot([lowest, highest], [level, level], color=color, linewidth=3)
        ax.plot([median], [level], marker="o", color=color, label=f"{name}: {median:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_yticks(
        [*loss_ticks, *(level for level, _ in rows)],
        labels=[*(f"{t:.3g}" for t in loss_ticks), *(name for _, name in rows)],
    )
    ax.set_ylabel("smoothed loss of each run (above);\neach rule's suggestions, low-high (below)")
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
    integer_epoch_axis(ax)
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
