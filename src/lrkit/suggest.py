"""Suggestion rules: pure functions from a range-test curve `(lrs, losses)` to one learning rate.

Each rule gives the same number as fastai 2.8's rule of the same name on the same arrays. The
rules see the curve after `trim_curve` (the first num_it//10 points and the last 5 dropped,
cut at the first non-finite loss), which `LRFindResult` applies once before calling them.

What each rule measures its slope against differs, so it is stated per rule:
- `lowest`, `minimum`: no slope; the index of the lowest loss.
- `steep`: slope against the natural log of the lr.
- `valley`: no slope; the longest run of strictly decreasing losses, counted in points.
- `slide`: slope against the point index (`numpy.gradient` with unit spacing).

`auto` is lrkit's own rule (not fastai's): `steep` on the descent, kept within a tenth and two
thirds of the lowest-loss lr, NaN where `auto_problem` finds the curve unusable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

Rule = Callable[[np.ndarray, np.ndarray], float]


class CurveTooShortError(ValueError):
    """The curve has too few points left for a rule to say anything."""


def _as_curve(lrs: Sequence[float], losses: Sequence[float], min_points: int) -> tuple:
    lrs = np.asarray(lrs, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    if lrs.shape != losses.shape or lrs.ndim != 1:
        raise ValueError(
            f"lrs and losses must be 1-d arrays of one length, got shapes {lrs.shape} and "
            f"{losses.shape}"
        )
    if len(lrs) < min_points:
        raise CurveTooShortError(
            f"the curve has {len(lrs)} points, this rule needs at least {min_points}; "
            "run the range test for more iterations (num_it) or let it diverge later"
        )
    return lrs, losses


def trim_curve(
    lrs: Sequence[float], losses: Sequence[float], num_it: int, skip_end: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Drop the first `num_it // 10` points and the last `skip_end`, then cut at the first
    non-finite loss: the part of a range test that the rules should look at."""
    lrs = np.asarray(lrs, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    end = len(losses) - skip_end
    lrs, losses = lrs[num_it // 10 : max(end, 0)], losses[num_it // 10 : max(end, 0)]
    bad = np.flatnonzero(~np.isfinite(losses))
    if len(bad):
        lrs, losses = lrs[: bad[0]], losses[: bad[0]]
    return lrs, losses


def lowest(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """The lr at the lowest loss. Usually too high: the loss is about to blow up there."""
    lrs, losses = _as_curve(lrs, losses, min_points=1)
    return float(lrs[np.argmin(losses)])


def minimum(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """The lr at the lowest loss divided by 10: a decade below the edge of divergence."""
    return lowest(lrs, losses) / 10


def steep(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """The lr where the loss falls fastest per unit of ln(lr)."""
    lrs, losses = _as_curve(lrs, losses, min_points=2)
    slopes = np.diff(losses) / np.diff(np.log(lrs))  # slope i joins points i and i+1
    return float(lrs[np.argmin(slopes)])


def longest_descent(losses: Sequence[float]) -> tuple[int, int]:
    """(start, end) of the longest chain of strictly decreasing losses, as fastai counts it.

    chain[i] is the length of the longest chain j1 < j2 < ... < i with strictly falling
    losses; the end is the earliest i with the longest chain and start = end - chain[end].
    """
    losses = np.asarray(losses, dtype=np.float64)
    chain = np.ones(len(losses), dtype=np.int64)
    for i in range(1, len(losses)):
        higher_before = losses[:i] > losses[i]
        if higher_before.any():
            chain[i] = chain[:i][higher_before].max() + 1
    if chain.max() == 1:  # no two points fall: fastai's search never moves off index 0
        return 0, 0
    end = int(np.argmax(chain))  # argmax returns the earliest of equal maxima
    return end - int(chain[end]), end


def valley(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """An lr two thirds down the longest valley of the curve (fastai's default rule)."""
    lrs, losses = _as_curve(lrs, losses, min_points=1)
    start, end = longest_descent(losses)
    third = (end - start) / 3
    return float(lrs[start + int(third) + int(third / 2)])


def slide(
    lrs: Sequence[float], losses: Sequence[float], lr_diff: int = 15, thresh: float = 0.005
) -> float:
    """Slide a window of `lr_diff` points leftwards from the end until the slopes at its two
    ends agree within `thresh`; suggest the window's left end (a point before the blow-up)."""
    lrs, losses = _as_curve(lrs, losses, min_points=lr_diff + 1)
    slopes = np.gradient(losses)  # against the point index
    right = len(losses) - 1
    left = right - lr_diff
    candidate = lrs[left]
    while left >= 0 and abs(slopes[right] - slopes[left]) > thresh:
        candidate = lrs[left]
        right -= 1
        left -= 1
    return float(candidate)


RULES: dict[str, Rule] = {
    "lowest": lowest,
    "minimum": minimum,
    "steep": steep,
    "valley": valley,
    "slide": slide,
}

# A curve whose smoothed loss falls by less than this fraction of its start is "flat".
FLAT_DROP = 0.05


def auto_problem(lrs: Sequence[float], losses: Sequence[float]) -> str | None:
    """Why a trimmed curve cannot support an `auto` suggestion, in words; None when it can.

    Flat: the loss falls by less than FLAT_DROP of its start's magnitude (so negative losses
    work too). No descent: the lowest loss is less than a decade above the curve's first
    AUTO_SKIP points, so the useful range lies at or below the start of the sweep.
    """
    lrs, losses = _as_curve(lrs, losses, min_points=1)
    start = losses[0]
    drop = start - losses.min()
    if len(losses) < 2 or drop < FLAT_DROP * max(abs(start), 1e-12):
        return (
            f"the loss fell by only {100 * drop / max(abs(start), 1e-12):.1f}% over the sweep: "
            "the curve is too flat to read a learning rate from"
        )
    low = int(np.argmin(losses))
    if low <= AUTO_SKIP or lrs[low] < 10 * lrs[AUTO_SKIP]:
        return (
            f"the loss is lowest near the start of the sweep (lr {lrs[low]:.2g}): the useful "
            "range lies below start_lr"
        )
    return None


def auto(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """The project's recommended rule: fastai's `steep` searched on the descent only, kept
    between a tenth and two thirds of the lowest-loss lr; NaN when `auto_problem` finds the
    curve unusable (too flat, lowest at the start).

    How it decides, on the trimmed curve:
    1. the lowest loss, at index `low`; the steepest fall per ln(lr) (slope i joins points i
       and i + 1) among points AUTO_SKIP ... low: start-of-sweep noise and any drop past the
       divergence cliff are outside the search, so where the range test stops does not matter;
    2. that lr, raised to at least lowest / AUTO_LOW_DIV (fastai's `minimum`, which never
       trained badly) when a blip far below the lowest point was steeper than the real
       descent; no floor when the lowest loss is the curve's last point (the sweep ended while
       the loss was still falling, as for a small head the range test itself trains for many
       epochs: that point is no divergence edge);
    3. capped at lowest / AUTO_HIGH_DIV, below the edge of divergence.

    Why: from scratch, the curve falls fastest well below its lowest point and the best lr lies
    near there (`minimum` is about right); for a new head on a frozen body it still falls
    fastest close to the lowest point and the best lr is there (`minimum` is 0.8 decades
    low). `steep` follows both, but alone it takes start noise or a drop past the cliff.
    Measured in benchmarks/rule_study.py; the numbers are under AUTO_RULE.
    """
    lrs, losses = _as_curve(lrs, losses, min_points=1)
    if auto_problem(lrs, losses) is not None:
        return math.nan
    low = int(np.argmin(losses))
    slopes = np.diff(losses[: low + 1]) / np.diff(np.log(lrs[: low + 1]))  # i joins i, i + 1
    steepest = lrs[AUTO_SKIP + int(np.argmin(slopes[AUTO_SKIP:]))]
    # A lowest loss at the curve's last point has no rise after it: it marks where the sweep
    # ended, not the edge of divergence, so a tenth of it is no floor.
    floor = lrs[low] / AUTO_LOW_DIV if low < len(losses) - 1 else 0.0
    return float(min(max(steepest, floor), lrs[low] / AUTO_HIGH_DIV))


# `auto` never takes the first AUTO_SKIP points of the trimmed curve (start-of-sweep noise),
# and keeps its lr between lowest / AUTO_LOW_DIV and lowest / AUTO_HIGH_DIV.
AUTO_SKIP = 3
AUTO_LOW_DIV = 10.0
AUTO_HIGH_DIV = 1.5
# What `auto` does, in a few words (tables show it). Measured by benchmarks/rule_study.py, 12
# one-cycle tasks x 5 range tests x 3 training seeds, regret = test error at the lr minus the
# best of a half-decade grid (points), read off a quarter-decade grid (checked by training at
# the suggestions: trained - interpolated +0.14 on average, 0.36 in size):
# - designed on T1-T3 (the open suite) + S1 (SGD CNN) + S3 (tabular): auto +0.27 mean
#   (minimum +1.13, steep +0.76), worst +2.0, none > 5; the bounds barely matter (lowest/6 ..
#   lowest/20 and lowest/1 .. lowest/2 all within +0.06);
# - held out S2 (no BatchNorm), S4 (10 epochs), S5 (SGD MLP): +0.71, +0.20, +0.16. S6 (Pets
#   head on ImageNet Lite0) failed the first version (+27: its curve never turns up); the
#   floor is dropped there since (S6 +0.00, nothing else changed by more than 0.03);
# - S7-S9, added after that change: S9 (SGD, 8 epochs) +0.25, S8 (wine, 89 test items) +1.6,
#   S7 (a head from 100 images, bs 10) fails: 2 of 5 curves too flat / noisy (NaN), the
#   other 3 0.7-1 decade low. Trained at the suggestions: open suite +0.37 (T3 +1.10),
#   tuning +0.44, held out +0.33, added +9.3. README "The suggestion rules" has the table.
AUTO_RULE = "steep, bounded"


def register_rule(name: str, rule: Rule) -> None:
    """Make `rule(lrs, losses) -> float` available by `name` to `suggest` and the CLI."""
    if name == "auto":
        raise ValueError("'auto' names the project's recommended rule and cannot be replaced")
    if not callable(rule):
        raise TypeError(f"a rule must be callable (lrs, losses) -> float, got {rule!r}")
    RULES[name] = rule


def rule_names() -> list[str]:
    """Every registered rule name, plus 'auto'."""
    return [*RULES, "auto"]


def get_rule(name: str) -> Rule:
    """The rule registered as `name` ('auto' is the recommended one)."""
    if name == "auto":
        return auto
    if name not in RULES:
        raise ValueError(f"unknown suggestion rule {name!r}; choose one of {rule_names()}")
    return RULES[name]


def suggest(lrs: Sequence[float], losses: Sequence[float], rule: str | Rule = "auto") -> float:
    """Apply one rule (by name or as a function) to an already trimmed curve."""
    function = get_rule(rule) if isinstance(rule, str) else rule
    return float(function(np.asarray(lrs, np.float64), np.asarray(losses, np.float64)))
