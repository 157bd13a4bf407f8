"""Candidate suggestion rules studied by rule_study.py, as (lrs, losses) -> float on trimmed curves.

Families (the issue's hints): a fixed fraction below the lowest-loss lr; steep searched only on
the descent (after the first few points, before the lowest loss), on slopes taken over a wider
window; steep clamped between a lower and an upper fraction of the lowest-loss lr; a geometric
mean of steep and minimum; and the same anchored on where the curve's bottom begins instead of
its single lowest point.
"""

from __future__ import annotations

import math

import numpy as np

SKIP = 3  # first points of the trimmed curve never taken (start-of-sweep noise)


def lowest_index(losses: np.ndarray) -> int:
    return int(np.argmin(losses))


def bottom_index(losses: np.ndarray, frac: float) -> int:
    """First index whose loss is within `frac` of the total drop of the lowest loss."""
    drop = losses[0] - losses.min()
    return int(np.flatnonzero(losses <= losses.min() + frac * drop)[0])


def steep_index(lrs: np.ndarray, losses: np.ndarray, window: int, end: int) -> int:
    """Index of the steepest fall per ln(lr), slopes over +-window points, searched in
    [SKIP, end]."""
    log = np.log(lrs)
    best, where = math.inf, min(max(SKIP, 0), end)
    for i in range(SKIP, end + 1):
        a, b = max(i - window, 0), min(i + window, len(lrs) - 1)
        if b == a:
            continue
        slope = (losses[b] - losses[a]) / (log[b] - log[a])
        if slope < best:
            best, where = slope, i
    return where


def frac(k: float):
    def rule(lrs, losses):
        return float(lrs[lowest_index(losses)] / k)

    return rule


def steep_desc(window: int):
    def rule(lrs, losses):
        return float(lrs[steep_index(lrs, losses, window, lowest_index(losses))])

    return rule


def clamp(window: int, lo_div: float, hi_div: float, anchor: str = "lowest", bfrac: float = 0.1):
    def rule(lrs, losses):
        end = lowest_index(losses)
        ref = lrs[end] if anchor == "lowest" else lrs[bottom_index(losses, bfrac)]
        s = lrs[steep_index(lrs, losses, window, end)]
        return float(min(max(s, ref / lo_div), ref / hi_div))

    return rule


def geo(window: int, k: float = 10):
    def rule(lrs, losses):
        end = lowest_index(losses)
        s = lrs[steep_index(lrs, losses, window, end)]
        return float(math.sqrt(s * lrs[end] / k))

    return rule


def bottom_frac(bfrac: float, k: float):
    def rule(lrs, losses):
        return float(lrs[bottom_index(losses, bfrac)] / k)

    return rule


CANDIDATES: dict[str, object] = {}
for _k in (2, 3, 4, 6):
    CANDIDATES[f"low/{_k}"] = frac(_k)
for _w in (1, 3, 5):
    CANDIDATES[f"steepD w{_w}"] = steep_desc(_w)
    CANDIDATES[f"geo w{_w}"] = geo(_w)
    for _lo in (10, 30):
        for _hi in (1, 2, 3):
            CANDIDATES[f"cl w{_w} {_lo}-{_hi}"] = clamp(_w, _lo, _hi)
for _b in (0.05, 0.1, 0.2):
    for _k in (1, 2, 3):
        CANDIDATES[f"bot{_b}/{_k}"] = bottom_frac(_b, _k)
    for _w in (1, 3):
        CANDIDATES[f"clB{_b} w{_w} 10-1"] = clamp(_w, 10, 1, "bottom", _b)
        CANDIDATES[f"clB{_b} w{_w} 10-2"] = clamp(_w, 10, 2, "bottom", _b)


def fsteep_index(lrs: np.ndarray, losses: np.ndarray, end: int) -> int:
    """fastai's steep (slope i joins points i and i+1, per ln lr), searched in [SKIP, end)."""
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    stop = max(end, SKIP + 1)
    return SKIP + int(np.argmin(slopes[SKIP:stop]))


def fclamp(lo_div: float, hi_div: float, restrict: bool = True):
    def rule(lrs, losses):
        low = lowest_index(losses)
        i = fsteep_index(lrs, losses, low if restrict else len(losses) - 1)
        return float(min(max(lrs[i], lrs[low] / lo_div), lrs[low] / hi_div))

    return rule


for _lo in (6, 10, 20):
    for _hi in (1, 1.5, 2, 3):
        CANDIDATES[f"fcl {_lo}-{_hi}"] = fclamp(_lo, _hi)
        CANDIDATES[f"fclU {_lo}-{_hi}"] = fclamp(_lo, _hi, restrict=False)
CANDIDATES["fsteepR"] = fclamp(1e9, 1e-9)


def fclamp_edge(lo_div: float, hi_div: float, edge: int = 1):
    """fclamp, but when the lowest loss is among the last `edge` points (no rise seen after it:
    no divergence edge to measure from) the lower bound is dropped."""

    def rule(lrs, losses):
        low = lowest_index(losses)
        i = fsteep_index(lrs, losses, low)
        floor = lrs[low] / lo_div if low < len(losses) - edge else 0.0
        return float(min(max(lrs[i], floor), lrs[low] / hi_div))

    return rule


for _e in (1, 2, 3):
    CANDIDATES[f"v2 edge{_e}"] = fclamp_edge(10, 1.5, _e)
