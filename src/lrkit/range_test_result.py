"""`LRFindResult`: the curve a range test recorded, the rules' suggestions, and a verdict on
whether the curve can be trusted."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lrkit import suggest as rules
from lrkit.plots import lr_find_figure, lr_find_repeats_figure

# A curve whose raw losses scatter (robust std of the step-to-step changes, / sqrt 2) more than
# the smoothed curve falls is "noisy". On the range tests of benchmarks/rule_study.py the ratio
# was at most 0.5, but for S7 (batches of 10, curves falling by 5-9 %): 1.3 on one of five.
NOISE_TO_DROP = 1.0
# A completed curve lowest at its end that fell by more than this share of its whole drop over
# its last decade has no minimum yet: "auto" gives none. (The study's completed curves that
# ended lowest, SGD and a head on an ImageNet body, had 0.17 to 0.31, and auto did well on them.)
STILL_FALLING = 0.5
# A sweep that ran all its steps ends "lowest at the end" unless its last recorded loss (in the
# points the rules trim off) lies more than this share of the curve's drop above its lowest:
# then the loss had turned up and the sweep ended at the edge of divergence, not still falling.
TURNED_UP = 0.25


def describe_stop(stop_reason: str, div_thresh: float | None, end_lr: float) -> str:
    """A range test's `stop_reason` code in plain words. "diverged" is the planned end of a
    sweep, worded as `lrkit.finder.has_diverged` decides it (the smoothed loss more than
    (div_thresh - 1) x the curve's fall, or its noise if larger, above its best): a stop, not a
    failure."""
    if stop_reason == "diverged":
        if div_thresh is None:
            return "stopped as planned: the loss rose well above its minimum"
        return (
            f"stopped as planned: the loss rose {div_thresh - 1:g}× its fall above its minimum "
            f"(div_thresh={div_thresh:g})"
        )
    if stop_reason == "completed":
        return f"completed: every step up to end_lr={end_lr:g}"
    if stop_reason == "non-finite loss":
        return "stopped: the loss became NaN or infinite"
    if stop_reason == "interrupted":
        return "interrupted (Ctrl-C): the curve so far"
    return f"stopped: {stop_reason}"


def finite_or_none(value: float) -> float | None:
    """A number for JSON: NaN and infinities become null."""
    return value if math.isfinite(value) else None


def json_ready(obj: Any) -> Any:
    """`obj` with every non-finite float (anywhere in dicts and lists) replaced by None, so
    that json.dumps writes strict JSON."""
    if isinstance(obj, float):
        return finite_or_none(obj)
    if isinstance(obj, dict):
        return {key: json_ready(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(value) for value in obj]
    return obj


class UnusableCurveError(ValueError):
    """A range test's curve cannot support the learning rate asked of it; `why` says, in a
    few words, what is wrong with the curve (flat, noisy, ...)."""

    def __init__(self, why: str) -> None:
        super().__init__(
            f"the range test gives no learning rate ({why}): pass a learning rate yourself, or "
            "run the range test longer, over a wider lr range or with more data"
        )
        self.why = why


@dataclass(frozen=True, eq=False)
class LRFindResult:
    """One range test: lrs (of the last param group), smoothed and raw losses, and how it ended.

    `group_lrs[i, g]` is the lr param group g had at step i (groups keep their ratios).
    `stop_reason` is "completed", "diverged" (the smoothed loss rose more than
    (div_thresh - 1) x the curve's scale above its best; see `lrkit.finder.has_diverged`),
    "non-finite loss" or "interrupted" (Ctrl-C: the curve so far, see RangeTestInterrupted).
    """

    lrs: np.ndarray
    losses: np.ndarray
    raw_losses: np.ndarray
    group_lrs: np.ndarray
    num_it: int
    start_lr: float
    end_lr: float
    mode: str
    stop_reason: str
    config: dict[str, Any] = field(default_factory=dict)

    # -- the curve the rules see ---------------------------------------------------------
    def trimmed(self) -> tuple[np.ndarray, np.ndarray]:
        """(lrs, losses) without the first num_it//10 points and the last 5, as fastai trims."""
        return rules.trim_curve(self.lrs, self.losses, self.num_it)

    def suggest(self, rule: str | rules.Rule = "auto") -> float:
        """The lr one rule (a name, "auto", or a function (lrs, losses) -> float) suggests.

        "auto" is NaN when the curve cannot support a suggestion; `warnings` says why.
        """
        if rule == "auto" and self.auto_problems():
            return math.nan
        lrs, losses = self.trimmed()
        return rules.suggest(lrs, losses, rule)

    @property
    def suggestions(self) -> dict[str, float]:
        """Every registered rule's suggestion (NaN where the curve is too short for a rule,
        and for "auto" where the curve cannot support one)."""
        found: dict[str, float] = {}
        for name in rules.rule_names():
            try:
                found[name] = self.suggest(name)
            except rules.CurveTooShortError:
                found[name] = math.nan
        return found

    def require(self, rule: str = "auto") -> float:
        """The rule's lr for training on; raises UnusableCurveError (one line: why, and what to
        do) where the suggestion is NaN, so nothing trains at a rate the curve cannot give."""
        try:
            lr = self.suggest(rule)
        except rules.CurveTooShortError:
            raise UnusableCurveError(f"the curve is too short for rule {rule!r}") from None
        if math.isfinite(lr) and lr > 0:
            return lr
        notes = self.auto_problems() if rule == "auto" else []
        why = "; ".join(note.split(";")[0] for note in notes)
        raise UnusableCurveError(why or f"rule {rule!r} gave {lr}")

    # -- can it be trusted? ----------------------------------------------------------------
    def auto_problems(self) -> list[str]:
        """The warnings that mean no learning rate can be read off the curve (empty if one can):
        too flat, too noisy, still falling at end_lr, lowest at the very start."""
        return [note for kind, note in self._verdicts() if kind not in ("short", "edge")]

    @property
    def warnings(self) -> list[str]:
        """Plain words on why the suggestions may not be trustworthy (empty when all is well)."""
        return [note for _, note in self._verdicts()]

    def _verdicts(self) -> list[tuple[str, str]]:
        lrs, losses = self.trimmed()
        notes: list[tuple[str, str]] = []
        if len(losses) < 16:
            notes.append(
                (
                    "short",
                    f"only {len(losses)} usable points after trimming (of {len(self.losses)} "
                    "recorded): lower start_lr or raise num_it so the loss has room to fall",
                )
            )
        if len(losses) < 2:
            if len(losses) == 0:
                notes.append(("empty", "no usable points: the range test gives no learning rate"))
            return notes
        start = losses[0]
        drop = start - losses.min()
        problem = rules.auto_problem(lrs, losses)
        if problem is not None and drop < rules.FLAT_DROP * max(abs(start), 1e-12):
            notes.append(
                (
                    "flat",
                    f"{problem}; widen the lr range, raise num_it, or check that the model "
                    "can learn",
                )
            )
            return notes
        if problem is not None:
            notes.append(("start", f"{problem}; lower start_lr"))
        # Noise on the descent only (past the minimum the loss blows up anyway), from the
        # differences of consecutive raw losses: the trend and the smoothing's lag cancel out.
        descent = int(np.argmin(losses)) + 1
        raw = rules.trim_curve(self.lrs, self.raw_losses, self.num_it)[1][:descent]
        steps = np.diff(raw)
        scatter = 0.0
        if len(steps) >= 2:
            scatter = float(1.4826 * np.median(np.abs(steps - np.median(steps))) / np.sqrt(2))
        if scatter > NOISE_TO_DROP * drop:
            notes.append(
                (
                    "noisy",
                    f"the raw losses scatter (std {scatter:.3g} from step to step) more than the "
                    f"curve falls ({drop:.3g}): the curve is noisy; use a bigger batch or more "
                    "iterations",
                )
            )
        if self.stop_reason == "completed" and self._lowest_at_the_end(losses):
            # still falling steeply over the last decade: the minimum lies past end_lr
            last = losses[lrs >= lrs[-1] / 10]
            steep_end = last[0] - last[-1] > STILL_FALLING * drop
            notes.append(
                (
                    "falling" if steep_end else "edge",
                    f"the loss was still falling at end_lr={self.end_lr:g}: the range may stop "
                    "too early; raise end_lr",
                )
            )
        return notes

    def _lowest_at_the_end(self, trimmed: np.ndarray) -> bool:
        """Whether the loss is lowest at the end of the sweep: the trimmed curve's last points,
        with no rise in the points trimmed off after them (a sweep that ran out of steps just
        as the loss blew up has its rise there, and was not still falling)."""
        if np.argmin(trimmed) < len(trimmed) - 2:
            return False
        recorded = self.losses[np.isfinite(self.losses)]
        lowest = trimmed.min()
        return bool(recorded[-1] - lowest <= TURNED_UP * (trimmed[0] - lowest))

    # -- output ---------------------------------------------------------------------------
    @property
    def stop_description(self) -> str:
        """How the range test ended, in words for a person (`stop_reason` is the short code):
        "diverged", the normal end, reads "stopped as planned: the loss rose 3× its fall above
        its minimum (div_thresh=4)"."""
        return describe_stop(self.stop_reason, self.config.get("div_thresh"), self.end_lr)

    def plot(self, path: str | Path | None = None, ax: Axes | None = None) -> Figure:
        """Loss against lr on a log axis, with every rule's suggestion marked and labelled
        (rules that agree share a marker) and the warnings written in the figure."""
        return lr_find_figure(
            self.lrs, self.losses, self.raw_losses, self.suggestions, path, ax, self.warnings
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers, ready for JSON (NaN suggestions become null)."""
        return {
            "lrs": self.lrs.tolist(),
            "losses": self.losses.tolist(),
            "raw_losses": self.raw_losses.tolist(),
            "group_lrs": self.group_lrs.tolist(),
            "num_it": self.num_it,
            "start_lr": self.start_lr,
            "end_lr": self.end_lr,
            "mode": self.mode,
            "stop_reason": self.stop_reason,
            "stop_description": self.stop_description,
            "suggestions": {k: finite_or_none(v) for k, v in self.suggestions.items()},
            "warnings": self.warnings,
            "config": self.config,
        }

    def save(self, path: str | Path) -> Path:
        """Write `to_dict()` as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LRFindResult:
        """Rebuild a result from `to_dict()` output (suggestions are recomputed)."""
        return cls(
            lrs=np.asarray(data["lrs"], dtype=np.float64),
            losses=np.asarray(data["losses"], dtype=np.float64),
            raw_losses=np.asarray(data["raw_losses"], dtype=np.float64),
            group_lrs=np.asarray(data["group_lrs"], dtype=np.float64),
            num_it=int(data["num_it"]),
            start_lr=float(data["start_lr"]),
            end_lr=float(data["end_lr"]),
            mode=str(data["mode"]),
            stop_reason=str(data["stop_reason"]),
            config=dict(data.get("config", {})),
        )

    @classmethod
    def load(cls, path: str | Path) -> LRFindResult:
        """Read a result written by `save`."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{path} is not an lr_find result written by lrkit: {error}"
            ) from error

    def __repr__(self) -> str:
        lines = [
            f"LRFindResult: {len(self.lrs)} of {self.num_it} steps, {self.mode} "
            f"{self.start_lr:g} -> {self.end_lr:g}; {self.stop_description}",
            f"  {'rule':<9}lr",
        ]
        for name, value in self.suggestions.items():
            missing = "n/a (see the warnings)" if name == "auto" else "n/a (curve too short)"
            shown = f"{value:.3g}" if math.isfinite(value) else missing
            lines.append(f"  {name:<9}{shown}")
        lines += [f"  warning: {note}" for note in self.warnings]
        return "\n".join(lines)


def geometric_median(values: np.ndarray) -> float:
    """The middle value (the geometric mean of the middle two for an even count); NaN if any
    value is missing. Exact for odd counts, so the median is always one of the runs' lrs."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    if not np.isfinite(values).all():
        return math.nan
    middle = len(values) // 2
    if len(values) % 2:
        return float(values[middle])
    return float(np.sqrt(values[middle - 1] * values[middle]))


@dataclass(frozen=True, eq=False)
class RepeatedLRFind:
    """Several range tests from the same weights on different data orders.

    A suggestion is the geometric median of the runs' suggestions; `spread` says, per rule, how
    many decades lie between the lowest and the highest run, so one noisy run cannot fool you.
    """

    runs: tuple[LRFindResult, ...]

    def _per_rule(self) -> dict[str, np.ndarray]:
        table = [run.suggestions for run in self.runs]
        return {name: np.array([row[name] for row in table]) for name in table[0]}

    @property
    def suggestions(self) -> dict[str, float]:
        """Per rule, the median over runs (geometric; NaN if any run had none)."""
        return {name: geometric_median(values) for name, values in self._per_rule().items()}

    @property
    def spread(self) -> dict[str, float]:
        """Per rule, log10(highest / lowest suggestion) over the runs, in decades."""
        return {
            name: float(np.log10(values.max() / values.min()))
            if np.isfinite(values).all()
            else math.nan
            for name, values in self._per_rule().items()
        }

    def suggest(self, rule: str = "auto") -> float:
        """The median suggestion of one rule over the runs."""
        return geometric_median(np.array([run.suggest(rule) for run in self.runs]))

    @property
    def warnings(self) -> list[str]:
        """Each run's warnings once, plus rules whose runs disagree by more than a decade."""
        notes = list(dict.fromkeys(note for run in self.runs for note in run.warnings))
        first = self.runs[0]
        if len(self.runs) > 1 and all(
            np.array_equal(run.raw_losses, first.raw_losses) for run in self.runs[1:]
        ):
            notes.append(
                "every run gave the same curve: the loader's order did not change between runs "
                "(shuffle it), so the spread of 0 says nothing"
            )
        for name, decades in self.spread.items():
            if decades > 1:
                notes.append(
                    f"{name}: the runs disagree by {decades:.1f} decades; do not trust one run"
                )
        return notes

    def plot(self, path: str | Path | None = None, ax: Axes | None = None) -> Figure:
        """Every run's curve, and per rule the range of its suggestions with the median marked."""
        ranges = {
            name: (float(values.min()), geometric_median(values), float(values.max()))
            for name, values in self._per_rule().items()
        }
        return lr_find_repeats_figure(
            [(run.lrs, run.losses) for run in self.runs], ranges, path, ax
        )

    def __repr__(self) -> str:
        lines = [
            f"RepeatedLRFind: {len(self.runs)} runs",
            f"  {'rule':<9}{'median lr':<12}spread (decades)",
        ]
        spread = self.spread
        for name, value in self.suggestions.items():
            shown = f"{value:<12.3g}{spread[name]:.2f}" if math.isfinite(value) else "n/a"
            lines.append(f"  {name:<9}{shown}")
        lines += [f"  warning: {note}" for note in self.warnings]
        return "\n".join(lines)
