"""Suggestion rules on short hand-written curves whose answer can be read off, and against a
literal loop-by-loop version of fastai 2.8's algorithms on random curves."""

import math

import numpy as np
import pytest

from lrkit import suggest
from lrkit.suggest import CurveTooShortError, trim_curve

LRS8 = np.array([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0])


def test_trim_drops_first_tenth_and_last_five():
    lrs = np.arange(100, dtype=float) + 1
    losses = np.linspace(2, 1, 100)
    kept_lrs, kept_losses = trim_curve(lrs, losses, num_it=100)
    assert kept_lrs[0] == 11 and kept_lrs[-1] == 95 and len(kept_losses) == 85


def test_trim_cuts_at_first_non_finite_loss():
    losses = np.ones(40)
    losses[20] = np.nan
    losses[25] = np.inf
    lrs, kept = trim_curve(np.arange(40.0), losses, num_it=40)
    assert list(lrs) == list(range(4, 20)) and np.isfinite(kept).all()


def test_lowest_and_minimum():
    losses = np.array([3.0, 2.5, 2.0, 1.0, 0.5, 0.7, 2.0, 9.0])
    assert suggest.lowest(LRS8, losses) == 1e-2
    assert suggest.minimum(LRS8, losses) == pytest.approx(1e-3)


def test_steep_takes_slope_against_log_lr():
    lrs = np.array([1e-3, 1e-2, 1e-1, 1.0])
    losses = np.array([1.0, 0.9, 0.3, 0.2])  # drops 0.1, 0.6, 0.1 per decade
    assert suggest.steep(lrs, losses) == 1e-2


def test_steep_uneven_spacing_uses_log_lr_not_index():
    # Per point the second drop (0.5) is bigger, but it is spread over 3 decades.
    lrs = np.array([1e-4, 1e-3, 1.0, 10.0])
    losses = np.array([1.0, 0.7, 0.2, 0.19])
    assert suggest.steep(lrs, losses) == 1e-4


def test_valley_two_thirds_down_the_longest_descent():
    losses = np.array([3.0, 2.0, 5.0, 4.0, 3.0, 2.0, 1.0, 6.0])
    # Longest strictly falling chain ends at index 6 with 5 points (5, 4, 3, 2, 1):
    # start = 6 - 5 = 1, thirds = 5/3 -> index 1 + 1 + 0 = 2.
    assert suggest.longest_descent(losses) == (1, 6)
    assert suggest.valley(LRS8, losses) == LRS8[2]


def test_valley_on_a_rising_curve_is_the_first_lr():
    assert suggest.valley(LRS8, np.arange(8.0)) == LRS8[0]


def test_slide_on_a_straight_line_is_the_window_left_end():
    lrs = np.logspace(-5, 0, 17)
    losses = 1 - 0.01 * np.arange(17)
    assert suggest.slide(lrs, losses) == lrs[1]


def test_slide_moves_left_past_a_blow_up():
    lrs = np.logspace(-5, 0, 17)
    losses = 1 - 0.01 * np.arange(17)
    losses[16] = 2.0  # slopes at the right end are far from those 15 points earlier
    assert suggest.slide(lrs, losses) == lrs[0]


def test_slide_needs_sixteen_points():
    with pytest.raises(CurveTooShortError, match="at least 16"):
        suggest.slide(LRS8, np.ones(8))


def test_mismatched_arrays_are_refused():
    with pytest.raises(ValueError, match="one length"):
        suggest.steep(LRS8, np.ones(7))


def test_auto_is_its_own_rule_and_unknown_rule_is_named():
    losses = np.array([3.0, 2.5, 2.0, 1.0, 0.5, 0.7, 2.0, 9.0])
    assert suggest.get_rule("auto") is suggest.auto
    assert suggest.suggest(LRS8, losses, "auto") == suggest.auto(LRS8, losses)
    with pytest.raises(ValueError, match="'sharpest'"):
        suggest.get_rule("sharpest")


def test_register_a_rule_by_name():
    suggest.register_rule("half_lowest", lambda lrs, losses: suggest.lowest(lrs, losses) / 2)
    try:
        assert "half_lowest" in suggest.rule_names()
        losses = np.array([3.0, 2.5, 2.0, 1.0, 0.5, 0.7, 2.0, 9.0])
        assert suggest.suggest(LRS8, losses, "half_lowest") == pytest.approx(5e-3)
    finally:
        del suggest.RULES["half_lowest"]
    with pytest.raises(ValueError, match="auto"):
        suggest.register_rule("auto", suggest.steep)


# -- literal versions of fastai 2.8's loops (negative indices, in-loop bookkeeping) -----------
def reference_valley(lrs, losses):
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return float(lrs[max_start + int(sections) + int(sections / 2)])


def reference_slide(lrs, losses, lr_diff=15, thresh=0.005):
    grads = np.gradient(losses)
    r_idx, l_idx = -1, -1 - lr_diff
    found = lrs[l_idx]
    while l_idx >= -len(losses) and abs(grads[r_idx] - grads[l_idx]) > thresh:
        found = lrs[l_idx]
        r_idx -= 1
        l_idx -= 1
    return float(found)


def reference_steep(lrs, losses):
    grads = (losses[1:] - losses[:-1]) / (np.log(lrs[1:]) - np.log(lrs[:-1]))
    return float(lrs[grads.argmin()])


def random_range_test_curve(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(16, 120))
    lrs = np.logspace(-7, 1, n)
    x = np.linspace(0, 1, n)
    losses = 2.3 - 1.5 / (1 + np.exp(-(x - 0.5) * 12)) + np.exp((x - 0.9) * 30)
    losses = losses + rng.normal(0, rng.choice([0.001, 0.02, 0.2]), n)
    return lrs, losses


@pytest.mark.parametrize("seed", range(40))
def test_rules_match_fastai_loops_on_random_curves(seed):
    lrs, losses = random_range_test_curve(seed)
    assert suggest.valley(lrs, losses) == reference_valley(lrs, losses)
    assert suggest.slide(lrs, losses) == reference_slide(lrs, losses)
    assert suggest.steep(lrs, losses) == reference_steep(lrs, losses)
    assert suggest.minimum(lrs, losses) == float(lrs[np.argmin(losses)]) / 10
    assert math.isfinite(suggest.lowest(lrs, losses))
