"""The figures, inspected as objects: epoch ticks, the fits of fine_tune one after the other
with the unfreeze marked, the smoothed training loss, agreeing rules, warnings, axis labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from learner_fixtures import body_head, make_learner
from lrkit import LRFindResult
from lrkit.history import FitRecord, batch_positions, fit_starts
from lrkit.plots import (
    lr_find_figure,
    plot_losses,
    smooth,
    valid_loss_per_rule_figure,
)
from lrkit.range_test_result import RepeatedLRFind


def vertical_lines(ax):
    """The axvline()s of an axis: lines whose x is one value and whose y spans the axes."""
    return [
        line
        for line in ax.get_lines()
        if len(set(np.atleast_1d(line.get_xdata()))) == 1 and list(line.get_ydata()) == [0, 1]
    ]


def assert_integer_ticks(ax):
    ticks = ax.get_xticks()
    assert len(ticks) and all(float(t).is_integer() for t in ticks), ticks


@pytest.fixture(scope="module")
def fine_tuned():
    learn = make_learner(splitter=body_head)  # 6 batches per epoch
    learn.fine_tune(2, base_lr=1e-2, freeze_epochs=1)
    return learn


def test_the_recorder_keeps_both_fits_of_fine_tune(fine_tuned):
    rec = fine_tuned.recorder
    assert [fit.frozen for fit in rec.fits] == [True, False]
    assert [len(fit.log) for fit in rec.fits] == [1, 2]
    assert rec.losses == rec.fits[-1].losses and len(rec.losses) == 12  # the last fit, as fastai


def test_the_loss_plot_shows_both_fits_with_the_unfreeze_marked(fine_tuned):
    fig = fine_tuned.recorder.plot_losses()
    ax = fig.axes[0]
    marks = vertical_lines(ax)
    assert [(line.get_xdata()[0], line.get_label()) for line in marks] == [(1, "unfreeze")]
    assert any(text.get_text().strip() == "unfreeze" for text in ax.texts)
    labels = [line.get_label() for line in ax.get_lines()]
    valid = ax.get_lines()[labels.index("valid, per epoch")]
    assert list(valid.get_xdata()) == [1, 2, 3]  # one point per epoch of either fit
    raw = [line for line in ax.get_lines() if line.get_alpha() is not None]
    assert len(raw) == 2 and max(raw[1].get_xdata()) == pytest.approx(3)  # faint, per fit
    assert ax.get_xlabel() == "epoch"
    assert_integer_ticks(ax)


def test_the_schedule_plot_shows_both_fits_with_the_unfreeze_marked(fine_tuned):
    fig = fine_tuned.recorder.plot_schedule()
    ax_lr, ax_mom = fig.axes[:2]
    for ax in (ax_lr, ax_mom):
        assert [line.get_xdata()[0] for line in vertical_lines(ax)] == [1]
        assert_integer_ticks(ax)
    groups = [line for line in ax_lr.get_lines() if line.get_label().startswith("group")]
    assert len(groups) == 2
    head = groups[1].get_ydata()
    assert len(head) == 18 and head[6] < head[5]  # a second one-cycle starts at the unfreeze


def test_the_training_loss_is_smoothed_with_the_raw_losses_behind():
    assert np.allclose(smooth([0.0, 2.0], beta=0.5), [0.0, 4 / 3])  # hand-computed, debiased
    assert np.allclose(smooth([3.0] * 5), 3.0)  # no pull towards zero at the start
    assert np.allclose(smooth([1.0, math.nan, 1.0]), 1.0)
    fit = FitRecord(0, 1, 4, losses=[4.0, 1.0, 3.0, 2.0], iters_per_epoch=[4])
    ax = plot_losses([fit]).axes[0]
    raw, smoothed = ax.get_lines()[:2]
    assert list(raw.get_ydata()) == fit.losses and raw.get_alpha() < 0.5
    assert np.allclose(smoothed.get_ydata(), smooth(fit.losses))


def test_a_fit_without_batches_leaves_no_mark():
    learn = make_learner(splitter=body_head)
    learn.freeze()
    learn.fit_one_cycle(1, 1e-2)
    learn.fit_one_cycle(0, 1e-2)
    learn.unfreeze()
    learn.fit_one_cycle(1, 1e-3)
    assert len(learn.recorder.fits) == 3
    for fig in (learn.recorder.plot_losses(), learn.recorder.plot_schedule()):
        marks = [(line.get_xdata()[0], line.get_label()) for line in vertical_lines(fig.axes[0])]
        assert marks == [(1, "unfreeze")]


def test_batches_of_an_unfinished_epoch_sit_inside_it():
    fit = FitRecord(0, 1, 4, losses=[1.0] * 6, iters_per_epoch=[4])  # stopped after 2 of 4
    assert np.allclose(batch_positions(fit), [0.25, 0.5, 0.75, 1.0, 1.25, 1.5])
    assert fit_starts([fit, fit]) == [0.0, 2.0]


def test_valid_loss_per_rule_has_whole_epoch_ticks():
    fig = valid_loss_per_rule_figure({"valley": [1.0, 0.8, 0.7], "minimum": [1.1, 0.9, 0.8]}, set())
    assert_integer_ticks(fig.axes[0])


def curve(n=100):
    x = np.linspace(0, 1, n)
    lrs = 1e-7 * 1e8 ** (np.arange(n) / n)
    return lrs, 2.3 - 1.8 / (1 + np.exp(-(x - 0.55) * 14)) + np.exp((x - 0.9) * 25)


def test_rules_that_agree_share_one_visible_marker():
    lrs, losses = curve()
    found = {"minimum": 1e-3, "steep": 1e-3, "valley": 1.1e-3, "slide": 1e-1, "lowest": math.nan}
    fig = lr_find_figure(lrs, losses, losses, found)
    markers = [line for line in fig.axes[0].get_lines() if line.get_marker() not in ("None", "")]
    labels = sorted(line.get_label() for line in markers)
    assert labels == ["minimum ≈ steep ≈ valley: 1.00e-03, 1.10e-03", "slide: 1.00e-01"]
    same = lr_find_figure(lrs, losses, losses, {"minimum": 2e-3, "steep": 2e-3})
    assert [line.get_label() for line in same.axes[0].get_lines()][2:] == [
        "minimum = steep: 2.00e-03"
    ]


def test_the_range_test_plot_carries_its_warning():
    n = 100
    lrs = 1e-7 * 1e8 ** (np.arange(n) / n)
    flat = np.full(n, 2.3) + np.linspace(0, -0.01, n)
    res = LRFindResult(lrs, flat, flat, lrs[:, None], n, 1e-7, 10.0, "exp", "completed")
    assert res.warnings
    texts = [text.get_text() for text in res.plot().axes[0].texts]
    assert any("too flat" in text for text in texts), texts


def test_the_repeated_range_test_plot_labels_its_two_parts():
    lrs, losses = curve()
    runs = []
    for shift in (0, 3, 6):
        moved = np.roll(losses, shift)
        runs.append(
            LRFindResult(lrs, moved, moved, lrs[:, None], 100, 1e-7, 10.0, "exp", "diverged")
        )
    fig = RepeatedLRFind(tuple(runs)).plot()
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert "loss" in ax.get_ylabel() and "suggestions" in ax.get_ylabel()
    tick_texts = [tick.get_text() for tick in ax.get_yticklabels()]
    for name in ("minimum", "steep", "valley", "auto"):
        assert name in tick_texts, tick_texts
