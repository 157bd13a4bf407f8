"""The result object: trimming before the rules, every rule's suggestion, warnings, output."""

import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from lrkit import LRFindResult, suggest


def make_result(losses, stop_reason="diverged", num_it=None, raw=None):
    losses = np.asarray(losses, dtype=float)
    n = len(losses)
    lrs = 1e-7 * 1e8 ** (np.arange(n) / (num_it or n))
    return LRFindResult(
        lrs=lrs,
        losses=losses,
        raw_losses=losses if raw is None else np.asarray(raw, dtype=float),
        group_lrs=lrs[:, None],
        num_it=num_it or n,
        start_lr=1e-7,
        end_lr=10.0,
        mode="exp",
        stop_reason=stop_reason,
    )


def u_shaped(n=100):
    x = np.linspace(0, 1, n)
    return 2.3 - 1.8 / (1 + np.exp(-(x - 0.55) * 14)) + np.exp((x - 0.9) * 25)


def test_rules_see_the_trimmed_curve():
    losses = u_shaped()
    losses[0] = -5.0  # inside the dropped first tenth: the rules must not see it
    res = make_result(losses)
    lrs, kept = res.trimmed()
    assert len(kept) == 85
    assert res.suggest("lowest") == suggest.lowest(lrs, kept) != res.lrs[0]
    assert res.suggestions["auto"] == suggest.auto(lrs, kept) == res.suggest("auto")
    assert set(res.suggestions) == {"lowest", "minimum", "steep", "valley", "slide", "auto"}


def test_a_rule_can_be_passed_as_a_function():
    res = make_result(u_shaped())
    assert res.suggest(lambda lrs, losses: float(lrs[0])) == res.trimmed()[0][0]


def test_too_short_curve_gives_nan_for_slide_and_a_warning():
    res = make_result(u_shaped(100)[:30], num_it=100)  # diverged early: 15 usable points
    assert math.isnan(res.suggestions["slide"])
    assert math.isfinite(res.suggestions["valley"])
    assert any("usable points" in w for w in res.warnings)
    assert "n/a" in repr(res)


def test_flat_curve_is_called_flat():
    res = make_result(np.full(100, 2.3) + np.linspace(0, -0.01, 100), stop_reason="completed")
    assert any("too flat" in w for w in res.warnings)


def test_noisy_curve_is_called_noisy():
    rng = np.random.default_rng(0)
    smooth = u_shaped()
    res = make_result(smooth, raw=smooth + rng.normal(0, 3.0, 100))
    assert any("noisy" in w for w in res.warnings)
    assert make_result(smooth).warnings == []


def test_curve_still_falling_at_the_end_says_raise_end_lr():
    res = make_result(np.linspace(3, 1, 100), stop_reason="completed")
    assert any("raise end_lr" in w for w in res.warnings)


def test_a_sweep_that_ends_as_the_loss_blows_up_is_not_still_falling():
    # the rise is in the last 5 points, which the rules trim off; the sweep ran out of steps
    # before the divergence check stopped it. Before: "still falling", and auto NaN.
    losses = np.concatenate([np.linspace(3, 1, 95), [1.3, 1.9, 2.8, 4.5, 7.0]])
    res = make_result(losses, stop_reason="completed")
    assert not any("raise end_lr" in w for w in res.warnings)
    assert math.isfinite(res.suggest("auto"))


def test_json_round_trip(tmp_path):
    res = make_result(u_shaped())
    path = res.save(tmp_path / "out" / "lr_find.json")
    back = LRFindResult.load(path)
    np.testing.assert_array_equal(back.lrs, res.lrs)
    np.testing.assert_array_equal(back.losses, res.losses)
    assert back.suggestions == res.suggestions and back.stop_reason == "diverged"


def test_loading_a_file_that_is_not_a_result_names_it(tmp_path):
    bad = tmp_path / "other.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match=r"other\.json"):
        LRFindResult.load(bad)


def test_plot_marks_every_rule_and_writes_png(tmp_path):
    res = make_result(u_shaped())
    fig = res.plot(tmp_path / "lr_find.png")
    assert isinstance(fig, Figure)
    assert (tmp_path / "lr_find.png").stat().st_size > 1000
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    named = [
        part for label in labels for part in label.split(":")[0].replace("≈", "=").split(" = ")
    ]
    for name in ("lowest", "minimum", "steep", "valley", "slide", "auto"):
        assert named.count(name) == 1, (name, labels)  # each rule in exactly one marker's label
    assert fig.axes[0].get_xscale() == "log"


def test_repr_is_a_table_of_rules():
    text = repr(make_result(u_shaped()))
    for name in ("lowest", "minimum", "steep", "valley", "slide", "auto"):
        assert f"\n  {name}" in text
