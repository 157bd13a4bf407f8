"""Learning-rate specs and schedules, checked against hand-computed values."""

from __future__ import annotations

import itertools
import math

import pytest

from lrkit.schedule import (
    cos_anneal,
    group_lrs,
    lr_text,
    one_cycle_lr,
    one_cycle_mom,
    progress,
)


def test_float_gives_same_value_to_every_group():
    assert group_lrs(1e-3, 3) == [1e-3, 1e-3, 1e-3]
    assert group_lrs(2, 1) == [2.0]


def test_slice_hi_gives_tenth_to_all_but_last():
    assert group_lrs(slice(1e-2), 3) == pytest.approx([1e-3, 1e-3, 1e-2])
    assert group_lrs(slice(1e-2), 1) == [1e-2]


def test_slice_lo_hi_is_geometric():
    # 1e-5 -> 1e-3 over 3 groups: ratio 100, so 1e-5, 1e-4, 1e-3
    assert group_lrs(slice(1e-5, 1e-3), 3) == pytest.approx([1e-5, 1e-4, 1e-3])
    # 1 -> 16 over 5 groups: factor 2 per group
    assert group_lrs(slice(1.0, 16.0), 5) == pytest.approx([1.0, 2.0, 4.0, 8.0, 16.0])
    assert group_lrs(slice(1e-5, 1e-3), 2) == pytest.approx([1e-5, 1e-3])
    assert group_lrs(slice(1e-5, 1e-3), 1) == [1e-3]


def test_sequence_is_taken_per_group():
    assert group_lrs([1e-4, 1e-3], 2) == [1e-4, 1e-3]
    assert group_lrs((1, 2, 3), 3) == [1.0, 2.0, 3.0]


def test_sequence_of_wrong_length_names_both_lengths():
    with pytest.raises(ValueError, match=r"got 2 learning rates .* for 3 layer groups"):
        group_lrs([1e-4, 1e-3], 3)


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        (-1.0, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("0.1", TypeError),
        (slice(1e-3, 1e-2, 2), ValueError),
        (slice(1e-3, None), ValueError),
        (slice(0.0, 1e-2), ValueError),
        ([1e-3, -1.0], ValueError),
    ],
)
def test_bad_specs_are_refused(spec, error):
    with pytest.raises(error):
        group_lrs(spec, 2)


def test_cos_anneal_endpoints_and_middle():
    assert cos_anneal(1.0, 0.0, 0.0) == pytest.approx(1.0)
    assert cos_anneal(1.0, 0.0, 0.5) == pytest.approx(0.5)
    assert cos_anneal(1.0, 0.0, 1.0) == pytest.approx(0.0)
    # quarter way along: 0 + 1 * (1 + cos(pi/4)) / 2
    assert cos_anneal(1.0, 0.0, 0.25) == pytest.approx((1 + math.sqrt(0.5)) / 2)


def test_one_cycle_lr_shape():
    lr_max, div, div_final = 1.0, 25.0, 1e5
    assert one_cycle_lr(0.0, lr_max, div, div_final, 0.25) == pytest.approx(0.04)
    assert one_cycle_lr(0.25, lr_max, div, div_final, 0.25) == pytest.approx(1.0)
    assert one_cycle_lr(1.0, lr_max, div, div_final, 0.25) == pytest.approx(1e-5)
    # halfway through warm-up: midpoint of 0.04 and 1.0
    assert one_cycle_lr(0.125, lr_max, div, div_final, 0.25) == pytest.approx(0.52)
    # halfway through the decay: midpoint of 1.0 and 1e-5
    assert one_cycle_lr(0.625, lr_max, div, div_final, 0.25) == pytest.approx((1 + 1e-5) / 2)
    values = [one_cycle_lr(i / 100, lr_max, pct_start=0.3) for i in range(101)]
    peak = values.index(max(values))
    assert peak == 30
    assert all(a <= b for a, b in itertools.pairwise(values[: peak + 1]))
    assert all(a >= b for a, b in itertools.pairwise(values[peak:]))


def test_one_cycle_edge_pct_start():
    assert one_cycle_lr(0.0, 1.0, pct_start=0.0) == pytest.approx(1.0)
    assert one_cycle_lr(1.0, 1.0, pct_start=1.0) == pytest.approx(1.0)
    assert one_cycle_lr(0.99, 1.0, div=10, pct_start=0.99) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="pct_start"):
        one_cycle_lr(0.5, 1.0, pct_start=1.5)


def test_one_cycle_mom_runs_opposite():
    moms = (0.95, 0.85, 0.95)
    assert one_cycle_mom(0.0, moms, 0.25) == pytest.approx(0.95)
    assert one_cycle_mom(0.25, moms, 0.25) == pytest.approx(0.85)
    assert one_cycle_mom(0.125, moms, 0.25) == pytest.approx(0.90)
    assert one_cycle_mom(1.0, moms, 0.25) == pytest.approx(0.95)


def test_progress_counts_steps_done():
    assert [progress(i, 5) for i in range(5)] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert progress(0, 1) == 0.0


def test_every_kind_of_rate_reads_as_text():
    assert lr_text(1e-3) == "1.00e-03"
    assert lr_text(slice(2e-3)) == "slice(2.00e-03)"  # fine_tune's head stage, as fastai
    assert lr_text(slice(1e-5, 1e-3)) == "slice(1.00e-05, 1.00e-03)"
    assert lr_text([1e-4, 1e-3]) == "[1.00e-04, 1.00e-03]"
