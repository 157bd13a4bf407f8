"""`auto` on hand-made curves whose answer can be worked out by hand, and what every command
that would train on it does when the curve cannot support a learning rate."""

import math

import numpy as np
import pytest

from lrkit import LRFindResult, suggest
from lrkit.range_test_result import UnusableCurveError

LRS = 10 ** np.linspace(-6, 1, 71)  # 10 points per decade: index i is lr 10 ** (-6 + i / 10)


def curve(steps: dict[int, float], start: float = 2.0) -> np.ndarray:
    """Losses from per-step changes: steps[i] is losses[i + 1] - losses[i] (0 elsewhere)."""
    diffs = np.zeros(len(LRS) - 1)
    for i, change in steps.items():
        diffs[i] = change
    return start + np.concatenate([[0.0], np.cumsum(diffs)])


def normal_steps() -> dict[int, float]:
    """Flat to 1e-3, a gentle fall with its single steepest step from index 44 (lr 10^-1.6)
    to 45, the lowest loss at index 50 (lr 0.1), then a rise."""
    steps = {i: -0.05 for i in range(30, 44)}
    steps[44] = -0.3
    steps.update({i: -0.02 for i in range(45, 50)})
    steps.update({i: 0.5 for i in range(50, 70)})
    return steps


def test_normal_curve_gives_the_steepest_point_of_the_descent():
    # steepest step at index 44 -> 10^-1.6 = 0.0251, inside [lowest/10, lowest/1.5] = [0.01, 0.067]
    assert suggest.auto(LRS, curve(normal_steps())) == pytest.approx(10**-1.6)


def test_steepest_point_far_below_the_lowest_is_raised_to_a_tenth_of_it():
    steps = normal_steps()
    steps[44] = -0.05
    steps[32] = -0.3  # steepest at 10^-2.8, more than a decade below the lowest loss (0.1)
    assert suggest.auto(LRS, curve(steps)) == pytest.approx(0.1 / 10)


def test_curve_that_never_turns_up_gives_its_steepest_point():
    # a head trained for many epochs by the range test itself: the loss falls to the very end,
    # so the lowest point (10) says nothing about divergence and sets no floor
    steps = {i: -0.01 for i in range(20, 70)}
    steps[35] = -0.3  # steepest at 10^-2.5, more than a decade below the end
    assert suggest.auto(LRS, curve(steps)) == pytest.approx(10**-2.5)


def test_cliff_right_after_the_minimum_is_never_taken():
    steps = normal_steps()
    steps.update({50: 6.0, 51: -5.0, 52: 6.0})  # up a cliff, a steep drop back, up again
    losses = curve(steps)
    assert suggest.steep(LRS, losses) == pytest.approx(LRS[51])  # fastai's steep falls for it
    assert suggest.auto(LRS, losses) == pytest.approx(10**-1.6)


def test_steepest_just_before_the_minimum_is_kept_below_the_lowest():
    steps = normal_steps()
    steps[49] = -0.6  # steepest step right before the lowest loss at 0.1
    assert suggest.auto(LRS, curve(steps)) == pytest.approx(0.1 / 1.5)


@pytest.mark.parametrize("where", [0, 1, 2, 6])
def test_noise_at_the_start_of_the_curve_is_ignored(where):
    steps = normal_steps()
    steps[where] = -0.8  # a drop among the first points, far steeper than the real descent
    steps[where + 1] = 0.8
    lr = suggest.auto(LRS, curve(steps))
    assert suggest.steep(LRS, curve(steps)) == pytest.approx(LRS[where])
    # the first AUTO_SKIP points are never taken; a later blip, far below the lowest loss,
    # is raised to a tenth of it
    assert lr == pytest.approx(10**-1.6 if where < suggest.AUTO_SKIP else 0.1 / 10)


def test_negative_and_shifted_losses_give_the_same_lr():
    losses = curve(normal_steps())
    expected = suggest.auto(LRS, losses)
    assert suggest.auto(LRS, losses - 10.0) == pytest.approx(expected)  # all below zero
    assert suggest.auto(LRS, 3 * losses - 7.5) == pytest.approx(expected)


def test_flat_curve_gives_nan():
    losses = 2.3 + 0.001 * np.sin(np.arange(len(LRS)))
    assert math.isnan(suggest.auto(LRS, losses))
    assert "too flat" in suggest.auto_problem(LRS, losses)


def test_lowest_loss_at_the_start_gives_nan():
    losses = np.linspace(2.0, 3.0, len(LRS))
    losses[2:12] = np.linspace(1.0, 1.9, 10)  # the lowest loss within a decade of the start
    assert math.isnan(suggest.auto(LRS, losses))
    assert "start" in suggest.auto_problem(LRS, losses)


def test_auto_is_never_below_the_first_points_nor_above_the_lowest():
    rng = np.random.default_rng(7)
    for _ in range(300):
        losses = np.cumsum(rng.normal(0, 0.1, len(LRS))) + rng.normal(0, 2)
        lr = suggest.auto(LRS, losses)
        if math.isfinite(lr):
            assert LRS[suggest.AUTO_SKIP] <= lr <= suggest.lowest(LRS, losses) / 1.5


def result(losses, raw=None, stop_reason="diverged") -> LRFindResult:
    """A 100-step range test whose trimmed curve (points 10..94) is `losses` on LRS[:85]."""
    lrs = 1e-7 * 1e8 ** (np.arange(100) / 100)
    full = np.concatenate([np.full(10, losses[0]), losses, np.full(5, losses[-1])])
    return LRFindResult(
        lrs=lrs,
        losses=full,
        raw_losses=full if raw is None else raw,
        group_lrs=lrs[:, None],
        num_it=100,
        start_lr=1e-7,
        end_lr=10.0,
        mode="exp",
        stop_reason=stop_reason,
    )


def u_curve() -> np.ndarray:
    x = np.linspace(0, 1, 85)
    return 2.3 - 1.8 / (1 + np.exp(-(x - 0.55) * 14)) + np.exp((x - 0.9) * 25)


def test_result_auto_is_the_rule_on_the_trimmed_curve():
    res = result(u_curve())
    lrs, losses = res.trimmed()
    assert res.suggest("auto") == suggest.auto(lrs, losses) > 0
    assert res.require("auto") == res.suggest("auto")


def test_noisy_curve_gives_nan_with_the_reason():
    rng = np.random.default_rng(0)
    smooth = result(u_curve()).losses
    res = result(u_curve(), raw=smooth + rng.normal(0, 3.0, 100))
    assert math.isnan(res.suggest("auto")) and math.isnan(res.suggestions["auto"])
    assert any("noisy" in note for note in res.warnings)
    assert math.isfinite(res.suggest("minimum"))  # the other rules still answer


def test_curve_still_falling_steeply_at_end_lr_gives_nan():
    falling = 3 - 2 * np.linspace(0, 1, 85) ** 6  # most of the fall in the last decade
    res = result(falling, stop_reason="completed")
    assert math.isnan(res.suggest("auto"))
    assert any("raise end_lr" in note for note in res.auto_problems())
    # a curve lowest at end_lr that has flattened out still gives an lr, with the warning
    res = result(np.linspace(3, 1, 85), stop_reason="completed")
    assert math.isfinite(res.suggest("auto")) and any("raise end_lr" in w for w in res.warnings)


def test_flat_curve_require_raises_one_line_saying_what_to_do():
    res = result(np.full(85, 2.3) + np.linspace(0, -0.01, 85), stop_reason="completed")
    assert math.isnan(res.suggest("auto"))
    with pytest.raises(UnusableCurveError, match="too flat") as caught:
        res.require("auto")
    message = str(caught.value)
    assert "\n" not in message and "pass a learning rate" in message


def test_learner_verbs_refuse_a_nan_rate_before_changing_anything():
    from learner_fixtures import make_learner

    learn = make_learner()
    with pytest.raises(ValueError, match=r"NaN.*pass a number"):
        learn.fit_one_cycle(1, math.nan)
    with pytest.raises(ValueError, match="NaN"):
        learn.fine_tune(1, base_lr=math.nan)
    assert all(p.requires_grad for p in learn.model.parameters())  # not left frozen
    assert learn.recorder.log == []


def test_require_names_the_rule_when_the_curve_is_too_short_for_it():
    full = result(u_curve())
    n = 25  # stopped after 25 of 100 steps: 10 usable points, slide needs 16
    res = LRFindResult(
        full.lrs[:n], full.losses[:n], full.losses[:n], full.group_lrs[:n], 100, 1e-7, 10.0,
        "exp", "diverged",
    )  # fmt: skip
    with pytest.raises(UnusableCurveError, match="too short for rule 'slide'"):
        res.require("slide")
