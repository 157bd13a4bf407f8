"""Learning-rate specs and schedules as pure functions; the training loop owns the step counter.

`group_lrs` is the one place that turns a user's learning-rate argument (a float, a `slice`, or
one value per layer group) into a list of per-group values. The schedules take the fraction
of training done, `pct` in [0, 1], and return a value; the loop applies it to every group.

Why not torch's `OneCycleLR`: lrkit follows fastai's one-cycle, which differs from it.
Measured here (torch 2.x, 100 steps, lr_max 1e-2): torch's defaults warm up over 30 % of the
steps (fastai: 25 %) and end at lr_max / 2.5e5 (fastai aims at lr_max / 1e5); with those
matched (pct_start 0.25, final_div_factor 4000), torch still counts the last step as the end
of the cycle and reaches 1e-7 there, while fastai's `progress` gives the last step
pct = 99/100, so its lr there is 4.5e-6 (45x torch's) and its momentum 0.94996 rather than
0.95. Matching fastai step for step matters for reproducing its results; a pure function
of pct also needs no scheduler object and takes a slice's per-group peaks directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

LrSpec = float | slice | Sequence[float]


def lr_text(lr: LrSpec) -> str:
    """A learning rate as people read it: 1.00e-03, slice(1.00e-03) (fastai's: the last group
    at 1e-3, the others a tenth of it), slice(1.00e-05, 1.00e-03), or [1.00e-04, 1.00e-03]."""
    if isinstance(lr, slice):
        if lr.start is None:
            return f"slice({lr.stop:.2e})"
        return f"slice({lr.start:.2e}, {lr.stop:.2e})"
    if isinstance(lr, (list, tuple)):
        return "[" + ", ".join(f"{value:.2e}" for value in lr) + "]"
    return f"{lr:.2e}"


def check_lr(value: object, what: str) -> float:
    """A learning rate must be a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{what} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if math.isnan(value):
        raise ValueError(
            f"{what} is NaN, as a range test's 'auto' is when its curve cannot give a learning "
            "rate (its warnings say why): pass a number, or rerun the range test longer"
        )
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return value


def group_lrs(lr: LrSpec, n_groups: int) -> list[float]:
    """Per-group learning rates from a float, `slice(hi)`, `slice(lo, hi)` or one value per group.

    - float: the same value for every group;
    - `slice(hi)`: `hi / 10` for every group but the last, `hi` for the last (fastai's rule);
    - `slice(lo, hi)`: a geometric spread from `lo` (first group) to `hi` (last group); with a
      single group that group gets `hi`;
    - a sequence: taken as is, and it must hold exactly one value per group.
    """
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    if isinstance(lr, slice):
        if lr.step is not None:
            raise ValueError(f"a learning-rate slice takes no step, got {lr!r}")
        if lr.stop is None:
            raise ValueError(
                f"a lr slice needs an upper value, slice(hi) or slice(lo, hi): got {lr!r}"
            )
        hi = check_lr(lr.stop, "the slice's upper learning rate")
        if lr.start is None:
            return [hi / 10] * (n_groups - 1) + [hi]
        lo = check_lr(lr.start, "the slice's lower learning rate")
        if n_groups == 1:
            return [hi]
        if lo <= 0:
            raise ValueError(
                f"slice(lo, hi) spreads geometrically, so lo must be > 0, got lo={lo!r}"
            )
        ratio = hi / lo
        return [lo * ratio ** (i / (n_groups - 1)) for i in range(n_groups)]
    if isinstance(lr, Sequence) and not isinstance(lr, str):
        if len(lr) != n_groups:
            raise ValueError(
                f"got {len(lr)} learning rates {list(lr)!r} for {n_groups} layer groups; "
                f"pass one value per group, a float, or a slice"
            )
        return [check_lr(value, f"learning rate for group {i}") for i, value in enumerate(lr)]
    return [check_lr(lr, "the learning rate")] * n_groups


def cos_anneal(start: float, end: float, pct: float) -> float:
    """Half a cosine from `start` (pct 0) to `end` (pct 1)."""
    pct = min(max(pct, 0.0), 1.0)
    return end + (start - end) * (1 + math.cos(math.pi * pct)) / 2


def _two_phase(pct: float, pct_start: float, start: float, middle: float, end: float) -> float:
    """Cosine from `start` to `middle` over [0, pct_start], then cosine to `end` over the rest."""
    if not 0.0 <= pct_start <= 1.0:
        raise ValueError(f"pct_start must lie in [0, 1], got {pct_start!r}")
    pct = min(max(pct, 0.0), 1.0)
    if pct < pct_start:
        return cos_anneal(start, middle, pct / pct_start)
    if pct_start == 1.0:
        return middle
    return cos_anneal(middle, end, (pct - pct_start) / (1 - pct_start))


def one_cycle_lr(
    pct: float, lr_max: float, div: float = 25.0, div_final: float = 1e5, pct_start: float = 0.25
) -> float:
    """One-cycle lr: cosine warm-up lr_max/div -> lr_max, then cosine down to lr_max/div_final."""
    return _two_phase(pct, pct_start, lr_max / div, lr_max, lr_max / div_final)


def one_cycle_mom(
    pct: float, moms: tuple[float, float, float] = (0.95, 0.85, 0.95), pct_start: float = 0.25
) -> float:
    """One-cycle momentum, the lr's twin run the opposite way: moms[0] -> moms[1] -> moms[2]."""
    return _two_phase(pct, pct_start, moms[0], moms[1], moms[2])


def progress(step: int, total: int) -> float:
    """Fraction of training done before `step` (0-based) of `total` steps, as fastai counts it.

    The first step gets pct 0 (lr_max/div in one-cycle); the last gets (total-1)/total, so a
    schedule's final value is approached but not reached, and pct_start=0.99 stays a warm-up.
    """
    if total <= 0:
        return 0.0
    return step / total
