"""The strategy comparison: one range test, then the same training recipe once per suggestion
rule, each from the same initial weights, optimizer state, RNG states and data order.

This is the seed article's experiment (lowest-loss lr vs minimum/10 vs steepest point) made
one call for any Learner: the answer to "which rule should I trust?" measured, not argued.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lrkit import suggest
from lrkit.callbacks import ProgressCallback
from lrkit.config import RANGE_TEST
from lrkit.learner import Learner
from lrkit.plots import valid_loss_per_rule_figure
from lrkit.range_test_result import LRFindResult, finite_or_none, json_ready
from lrkit.report import Report, plural
from lrkit.schedule import LrSpec
from lrkit.snapshot import TrainingSnapshot
from lrkit.stages import Stage, one_cycle, run_stages

DEFAULT_RULES = ("lowest", "minimum", "steep", "valley", "slide", "auto")
# A rule wins only when its metric is this many standard errors below the next rule's
# (two-sided 5 % for a two-proportion z-test).
WIN_Z = 1.96
SHARE_METRICS = ("error_rate",)  # metrics that are a share of the validation items
# A run whose validation loss rose above this multiple of the untrained loss blew up.
BLOW_UP = 2.0


def two_proportion_z(p_low: float, p_high: float, n: int) -> float:
    """How many standard errors the share `p_high` lies above `p_low`, both measured on the
    same `n` items (a two-proportion z-test with unpooled variance); inf when both are exact
    and differ, 0 when they are equal. Raises ValueError for n < 1."""
    if n < 1:
        raise ValueError(f"need at least one item to compare shares on, got n={n}")
    se = math.sqrt((p_low * (1 - p_low) + p_high * (1 - p_high)) / n)
    if se > 0:
        return (p_high - p_low) / se
    return math.inf if p_high > p_low else (-math.inf if p_high < p_low else 0.0)


def noise_sentence(
    what: str, name_a: str, p_a: float, name_b: str, p_b: float, n: int, unit: str = "items"
) -> str:
    """One sentence on whether two error rates (shares of the same `n` validation `unit`)
    differ by more than the validation set's noise: WIN_Z standard errors of a
    two-proportion z-test. `what` names the quantity, e.g. "error rate"."""
    z = two_proportion_z(min(p_a, p_b), max(p_a, p_b), n)
    test = f"two-proportion z-test on {n} validation {unit}, |z| = {z:.2f}"
    if z > WIN_Z:
        lower = name_a if p_a < p_b else name_b
        return (
            f"The {what} of {name_a} ({p_a:.1%}) and of {name_b} ({p_b:.1%}) differ by more "
            f"than the validation set's noise ({test} > {WIN_Z}): {lower} is really lower."
        )
    return (
        f"The {what} of {name_a} ({p_a:.1%}) and of {name_b} ({p_b:.1%}) differ by less than "
        f"the validation set's noise ({test} <= {WIN_Z}): this run cannot tell them apart."
    )


@dataclass(frozen=True)
class CompareConfig:
    """The recipe every rule's run follows; saved beside the results."""

    rules: tuple[str, ...] = DEFAULT_RULES
    epochs: int = 2
    schedule: str = "one-cycle"  # "one-cycle" (fit_one_cycle at the rule's lr) or "constant"
    num_it: int = RANGE_TEST.num_it  # steps of the range test
    start_lr: float = RANGE_TEST.start_lr  # the range test's sweep
    end_lr: float = RANGE_TEST.end_lr
    metric: str = "error_rate"  # the column the table ranks the rules by (lower is better)

    def check(self) -> None:
        """Refuse impossible settings before any training."""
        if not self.rules:
            raise ValueError("rules is empty: name at least one suggestion rule")
        known = suggest.rule_names()
        unknown = [rule for rule in self.rules if rule not in known]
        if unknown:
            raise ValueError(f"unknown rules {unknown}; choose from {known}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.schedule not in ("one-cycle", "constant"):
            raise ValueError(f"schedule must be 'one-cycle' or 'constant', got {self.schedule!r}")


@dataclass
class RuleRun:
    """How training went at one rule's learning rate."""

    rule: str
    lr: float  # nan when the curve was too short for the rule
    diverged: bool
    train_loss: float | None
    valid_loss: float | None
    metrics: dict[str, float | None]
    seconds: float
    valid_losses: list[float | None] = field(default_factory=list)  # per finished epoch
    note: str = ""
    interrupted: bool = False  # Ctrl-C ended it early: shown, never ranked

    def value(self, name: str) -> float | None:
        """A column of the table by name: lr, train_loss, valid_loss or a metric."""
        if name in ("lr", "train_loss", "valid_loss"):
            return getattr(self, name)
        return self.metrics.get(name)


@dataclass
class Comparison:
    """The range test, one run per rule, and the recipe that produced them."""

    range_test: LRFindResult
    runs: list[RuleRun]
    config: CompareConfig
    n_valid: int | None = None  # validation items the metric was measured on (for the noise)

    @property
    def interrupted(self) -> bool:
        """Whether Ctrl-C stopped the comparison (its last run is cut short, later rules absent)."""
        return any(run.interrupted for run in self.runs)

    def best(self) -> RuleRun | None:
        """The run with the lowest ranking metric (valid loss if the metric is missing),
        among runs that did not diverge."""
        scored = [
            (score, index)
            for index, run in enumerate(self.runs)
            if not (run.diverged or run.interrupted) and (score := self._score(run)) is not None
        ]
        return self.runs[min(scored)[1]] if scored else None

    def winner(self) -> tuple[RuleRun | None, str]:
        """(the best run, or None when no difference beats the noise; one sentence saying so).

        The ranking metric is a share of the n_valid validation items (error rate, accuracy):
        the best run wins only when a two-proportion z-test puts it more than WIN_Z standard
        errors below the next rule with another lr. Without n_valid or for another metric
        there is no noise estimate, so no winner is named.
        """
        best = self.best()
        if best is None:
            return None, "No run finished without diverging: no winner."
        metric, p1 = self.config.metric, self._score(best)
        others = [
            (score, run.rule)
            for run in self.runs
            if run.lr != best.lr
            and not (run.diverged or run.interrupted)
            and (score := self._score(run)) is not None
        ]
        if not others:
            return best, f"Best: {best.rule} (lr {best.lr:.2e}), the only run that did not diverge."
        p2, second = min(others)
        n = self.n_valid
        if self.value_is_share() and n:
            z = two_proportion_z(p1, p2, n)
            test = f"two-proportion z-test on {n} validation items, z = {z:.2f}"
            if z > WIN_Z:
                return best, (
                    f"Best: {best.rule} (lr {best.lr:.2e}): its {metric} {p1:.4f} is below the "
                    f"next rule's ({second}, {p2:.4f}) by more than the validation set's noise "
                    f"({test} > {WIN_Z})."
                )
            return None, (
                f"No clear winner: {best.rule} ({p1:.4f}) and {second} ({p2:.4f}) differ by "
                f"less than the validation set's noise ({test} <= {WIN_Z})."
            )
        return None, (
            f"No clear winner named: {best.rule} has the lowest {metric} ({p1:.4g}, next "
            f"{second} {p2:.4g}), but there is no noise estimate for it."
        )

    def value_is_share(self) -> bool:
        """Whether the ranking metric is a share of items (an error rate or an accuracy)."""
        return self.config.metric in SHARE_METRICS

    def _score(self, run: RuleRun) -> float | None:
        value = run.value(self.config.metric)
        value = run.valid_loss if value is None else value
        return value if value is not None and math.isfinite(value) else None

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per rule: rule, lr, diverged, losses, metrics, seconds."""
        return [
            {
                "rule": run.rule,
                "lr": finite_or_none(run.lr),
                "diverged": run.diverged,
                "train_loss": run.train_loss,
                "valid_loss": run.valid_loss,
                **run.metrics,
                "error_rate": run.metrics.get("error_rate"),  # always present, None if unmeasured
                "seconds": run.seconds,
                "valid_losses": run.valid_losses,
                "note": run.note,
                "interrupted": run.interrupted,
            }
            for run in self.runs
        ]

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready: config, range test, rows and the best rule."""
        best, verdict = self.winner()
        return {
            "config": asdict(self.config),
            "range_test": self.range_test.to_dict(),
            "rows": self.rows(),
            "best_rule": best.rule if best else None,  # None: no difference beyond the noise
            "verdict": verdict,
            "n_valid": self.n_valid,
            "interrupted": self.interrupted,
        }


def _final(log: list[dict[str, Any]], key: str) -> float | None:
    value = log[-1].get(key) if log else None
    return float(value) if value is not None else None


def compare_rules(
    learn: Learner, config: CompareConfig | None = None, range_test: LRFindResult | None = None
) -> Comparison:
    """Range-test `learn` (or take `range_test`, one already run on it as it is now), then
    train it once per rule from its current state. Weights,
    optimizer, random states and data order are put back at the end; the recorder keeps the
    last run's history. With "auto" among the rules, raises UnusableCurveError before any
    training when the range test's curve cannot support a learning rate (too flat, too
    noisy, ...). A Ctrl-C that ends a
    run's fit ends the comparison after that run (`Comparison.interrupted`)."""
    config = config or CompareConfig()
    config.check()
    if range_test is None:
        range_test = learn.lr_find(
            start_lr=config.start_lr, end_lr=config.end_lr, num_it=config.num_it
        )
    if "auto" in config.rules:  # a curve auto reads no rate from stops here, before training
        range_test.require("auto")
    start = TrainingSnapshot.capture(learn.model, learn.opt, [learn.dls.train, learn.dls.valid])
    runs: list[RuleRun] = []
    by_lr: dict[float, RuleRun] = {}  # rules that agree on the lr share one run
    try:
        for rule in config.rules:
            lr = _suggestion(range_test, rule)
            if lr in by_lr:
                twin = by_lr[lr]
                runs.append(
                    replace(twin, rule=rule, note=f"same lr as {twin.rule}: one run serves both")
                )
                continue
            start.restore(keep=True)  # same weights, optimizer, RNGs and data order every time
            runs.append(_train_at_rule(learn, range_test, rule, lr, config))
            if learn.interrupted:  # Ctrl-C ended this run's fit: the comparison stops here
                break
            if math.isfinite(lr):
                by_lr[lr] = runs[-1]
    finally:
        start.restore()
    return Comparison(range_test, runs, config, n_valid=learn.dls.n_valid)


def _suggestion(range_test: LRFindResult, rule: str) -> float:
    """The rule's lr, NaN when the curve is too short for it."""
    try:
        return range_test.suggest(rule)
    except suggest.CurveTooShortError:
        return math.nan


def untrained_loss(raw_losses: Sequence[float]) -> tuple[float, float]:
    """(mean, standard deviation) of the loss before training, from a range test's first
    tenth (at least 3 points): at its tiny starting lrs the weights have barely moved.

    Infinite mean when there is no point; no spread from a single point.
    """
    head = np.asarray(raw_losses[: max(3, len(raw_losses) // 10)], dtype=float)
    head = head[np.isfinite(head)]
    if head.size == 0:
        return math.inf, 0.0
    return float(head.mean()), float(head.std())


def ended_worse(train_loss: float, raw_losses: Sequence[float]) -> bool:
    """Whether training ended clearly above the untrained loss: by more than twice the
    batch-to-batch spread, so a run at an lr too small to move anything is not counted."""
    untrained, noise = untrained_loss(raw_losses)
    return train_loss > untrained + 2 * noise


def divergence(
    learn: Learner,
    train_loss: float | None,
    valid_loss: float | None,
    untrained_losses: Sequence[float],
) -> str | None:
    """Why a finished run went haywire, or None: a stop on a non-finite loss, a non-finite
    final loss, or training that ended clearly above the loss it started from."""
    if learn.diverged:
        return learn.stop_reason or "training stopped on a non-finite loss"
    if any(v is not None and not math.isfinite(v) for v in (train_loss, valid_loss)):
        return f"the final loss is not finite (train {train_loss}, valid {valid_loss})"
    if train_loss is not None and ended_worse(train_loss, untrained_losses):
        untrained = untrained_loss(untrained_losses)[0]
        return f"the training loss ended at {train_loss:.3g}, above the untrained {untrained:.3g}"
    return None


def blew_up(valid_losses: Sequence[float | None], raw_losses: Sequence[float]) -> str | None:
    """Why a run's validation loss counts as blown up (above BLOW_UP x the untrained loss at
    any epoch), or None."""
    untrained = untrained_loss(raw_losses)[0]
    seen = [v for v in valid_losses if v is not None and math.isfinite(v)]
    if not seen or not math.isfinite(untrained) or untrained <= 0:
        return None
    worst = max(seen)
    if worst > BLOW_UP * untrained:
        return (
            f"the validation loss reached {worst:.3g}, {worst / untrained:.1f}x the untrained "
            f"{untrained:.3g}: it blew up"
        )
    return None


def _train_at_rule(
    learn: Learner, range_test: LRFindResult, rule: str, lr: float, config: CompareConfig
) -> RuleRun:
    if not math.isfinite(lr):
        note = f"the range test's curve is too short for {rule}: raise num_it"
        return RuleRun(rule, math.nan, False, None, None, {}, 0.0, note=note)
    began = time.perf_counter()
    learn.recorder.clear()  # every rule trains from the same start: its history is its own
    label_epoch_table(learn, f"rule {rule}, lr {lr:.2e}")
    fit = one_cycle if config.schedule == "one-cycle" else constant
    for _ in run_stages(learn, [Stage(rule, config.epochs, lr)], fit=fit):
        pass  # one stage at a number: no range test, the learner's freeze state as it is
    seconds = time.perf_counter() - began
    log = learn.recorder.log
    valid_loss, train_loss = _final(log, "valid_loss"), _final(log, "train_loss")
    reason = divergence(learn, train_loss, valid_loss, range_test.raw_losses)
    reason = reason or blew_up([row.get("valid_loss") for row in log], range_test.raw_losses)
    skip = {"epoch", "train_loss", "valid_loss", "time"}
    metrics = {key: _final(log, key) for key in (log[-1] if log else {}) if key not in skip}
    return RuleRun(
        rule=rule,
        lr=lr,
        diverged=reason is not None,
        train_loss=train_loss,
        valid_loss=valid_loss,
        metrics=metrics,
        seconds=seconds,
        valid_losses=[row.get("valid_loss") for row in log],
        note=learn.stop_reason if learn.interrupted else reason or "",
        interrupted=learn.interrupted,
    )


def constant(learn: Learner, stage: Stage, lr: LrSpec) -> None:
    """Train a stage at a constant rate: `fit(stage.epochs, lr)`."""
    learn.fit(stage.epochs, lr)


def label_epoch_table(learn: Learner, label: str) -> None:
    """Print `label` where `learn`'s progress callbacks print their epoch table, just above it,
    so that each run's table says which rule and lr it belongs to."""
    for callback in learn.cbs:
        if isinstance(callback, ProgressCallback):
            callback.console.print(label, style="bold", highlight=False)


def format_cell(value: float | None) -> str:
    """A table cell: four decimals, or "-" when there is no value."""
    return "-" if value is None else f"{value:.4f}"


def rule_table(comparison: Comparison) -> list[list[str]]:
    """The comparison as text cells, header row first; diverged runs say so."""
    metric_names = sorted({name for run in comparison.runs for name in run.metrics})
    table = [["rule", "lr", "train_loss", "valid_loss", *metric_names, "time (s)"]]
    best = comparison.winner()[0]
    for run in comparison.runs:
        name = run.rule + (" (best)" if run is best else "")
        lr = f"{run.lr:.2e}" if math.isfinite(run.lr) else "n/a"
        if run.diverged:
            results = ["diverged", "diverged", *["-"] * len(metric_names)]
        else:
            metrics = [format_cell(run.metrics.get(m)) for m in metric_names]
            results = [format_cell(run.train_loss), format_cell(run.valid_loss), *metrics]
        table.append([name, lr, *results, f"{run.seconds:.1f}"])
    return table


def write_comparison(
    comparison: Comparison, folder: str | Path, extra: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Plots, comparison.json (with `extra`, e.g. data settings and versions) and report.md +
    report.html into `folder`; returns the written paths by name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "lr_find_plot": folder / "lr_find.png",
        "valid_loss_plot": folder / "valid_loss.png",
        "json": folder / "comparison.json",
    }
    comparison.range_test.plot(paths["lr_find_plot"])
    valid_loss_per_rule_figure(
        {run.rule: run.valid_losses for run in comparison.runs},
        {run.rule for run in comparison.runs if run.diverged},
        paths["valid_loss_plot"],
    )
    record = json_ready({**comparison.to_dict(), **(extra or {})})
    paths["json"].write_text(json.dumps(record, indent=2, allow_nan=False))

    config = comparison.config
    report = Report("Learning-rate rules compared")
    report.paragraph(
        f"One range test ({plural(len(comparison.range_test.lrs), 'step')}, "
        f"{comparison.range_test.stop_description}), then {plural(config.epochs, 'epoch')} of "
        f"{config.schedule} training per rule, each from the same weights, optimizer state, "
        "random states and data order."
    )
    for note in comparison.range_test.warnings:
        report.paragraph(f"Warning about the range test: {note}")
    report.table(rule_table(comparison))
    report.figure(paths["lr_find_plot"], "The range test with every rule's suggestion marked")
    report.figure(paths["valid_loss_plot"], "Validation loss per epoch for each rule")
    report.paragraph(comparison.winner()[1])  # the section ends with what the numbers mean
    report.settings({"config": asdict(config), **(extra or {})})
    report.paragraph(
        "These are the settings every run above used, so that the table can be reproduced."
    )
    paths["report_md"], paths["report_html"] = report.write(folder)
    return paths
