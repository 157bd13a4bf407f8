"""Training in stages, each at a rate a range test chooses right before it: fastai's fine_tune.

A stage is: set the frozen state (freeze, unfreeze, or leave it), find its learning rate (a
number is taken as it is; a rule name runs a range test on the learner as it is now and takes
that rule's suggestion `hi`, spread as `slice(hi / lr_mult, hi)` over the layer groups when
`lr_mult` is set), then train. `fine_tune_plan` is fastai's recipe as stages: the head with the
body frozen, then everything with discriminative rates. `lrkit fine-tune` and `lrkit train
--freeze-epochs` both run these stages.

A suggestion that is not a positive finite number (a rule may answer NaN for a curve it cannot
trust) stops the stages with `UnusableCurveError` before anything trains at it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lrkit.range_test_result import LRFindResult
from lrkit.schedule import LrSpec, group_lrs

if TYPE_CHECKING:
    from lrkit.learner import Learner

LR_MULT = 100.0  # fine_tune's ratio between the last layer group's rate and the first's


@dataclass(frozen=True)
class Stage:
    """One stage of training: what to freeze, how long, and at which rate.

    `lr`: a number, slice or per-group list, or a rule name (a range test runs first).
    `freeze`: True freezes all but the last group, False unfreezes, None leaves it.
    `lr_mult`: for a rule, spread its suggestion hi as slice(hi / lr_mult, hi); None: hi for
    every group.
    """

    name: str
    epochs: int
    lr: LrSpec | str
    freeze: bool | None = None
    lr_mult: float | None = None


@dataclass(frozen=True)
class StageResult:
    """What a stage did: the rate it trained at (per group too) and its range test, if any."""

    name: str
    epochs: int
    lr: LrSpec
    group_lrs: list[float]
    rule: str | None
    range_test: LRFindResult | None

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a JSON record (the range test as its suggestion and warnings)."""
        lr = self.lr
        if isinstance(lr, slice):
            lr = {"slice": [lr.start, lr.stop]}
        return {
            "stage": self.name,
            "epochs": self.epochs,
            "lr": lr,
            "group_lrs": self.group_lrs,
            "rule": self.rule,
            "suggestion": self.group_lrs[-1] if self.rule is not None else None,
            "range_test_warnings": self.range_test.warnings if self.range_test else [],
        }


def fine_tune_plan(
    epochs: int, lr: LrSpec | str, freeze_epochs: int = 1, lr_mult: float = LR_MULT
) -> list[Stage]:
    """fastai's fine_tune as stages: "frozen" (head only, `freeze_epochs`, skipped when 0), then
    "unfrozen" (all groups, `epochs`).

    A rule name gets a range test before each stage: the frozen stage trains at its suggestion
    hi, the unfrozen one at slice(hi2 / lr_mult, hi2) from a new test. A number trains the head
    at `lr` and then all groups at slice(lr / lr_mult, lr); a slice or list is used as given.
    Raises ValueError for epochs < 1, freeze_epochs < 0 or lr_mult < 1.
    """
    if epochs < 1 or freeze_epochs < 0:
        raise ValueError(f"need epochs >= 1 and freeze_epochs >= 0, got {epochs}, {freeze_epochs}")
    if not lr_mult >= 1:
        raise ValueError(
            f"lr_mult must be >= 1 (the first group's rate is hi / lr_mult), got {lr_mult}"
        )
    plan = [Stage("frozen", freeze_epochs, lr, freeze=True)] if freeze_epochs else []
    if isinstance(lr, (int, float)):
        plan.append(Stage("unfrozen", epochs, slice(lr / lr_mult, lr), freeze=False))
    else:
        plan.append(Stage("unfrozen", epochs, lr, freeze=False, lr_mult=lr_mult))
    return plan


def stage_lr(
    learn: Learner, lr: LrSpec | str, lr_mult: float | None = None, **range_test: Any
) -> tuple[LrSpec, LRFindResult | None]:
    """The rate a stage trains at: `lr` itself, or, for a rule name, its suggestion from a range
    test on `learn` as it is now (`range_test` goes to `learn.lr_find`), spread with `lr_mult`.

    Raises UnusableCurveError (one line: why, and what to do) when the curve gives no rate for
    the rule (NaN, too short, ...), before anything trains.
    """
    if not isinstance(lr, str):
        return lr, None
    found = learn.lr_find(**range_test)
    hi = found.require(lr)
    return (slice(hi / lr_mult, hi) if lr_mult else hi), found


def one_cycle(learn: Learner, stage: Stage, lr: LrSpec) -> None:
    """The default way to train a stage: `fit_one_cycle(stage.epochs, lr)`."""
    learn.fit_one_cycle(stage.epochs, lr)


def run_stages(
    learn: Learner,
    plan: Sequence[Stage],
    fit: Callable[[Learner, Stage, LrSpec], None] = one_cycle,
    on_range_test: Callable[[Stage, LRFindResult], None] | None = None,
    **range_test: Any,
) -> Iterator[StageResult]:
    """Run the stages in order, yielding each one's result once it has trained.

    Stops after a stage that was interrupted (Ctrl-C) or diverged. `fit(learn, stage, lr)`
    trains a stage; `on_range_test(stage, result)` sees each range test before its stage
    trains (to plot it or print its warnings); `range_test` goes to `learn.lr_find`. A caller
    that catches an exception raised here keeps every result already yielded.
    """
    for stage in plan:
        if stage.freeze is True:
            learn.freeze()
        elif stage.freeze is False:
            learn.unfreeze()
        lr, found = stage_lr(learn, stage.lr, stage.lr_mult, **range_test)
        if found is not None and on_range_test is not None:
            on_range_test(stage, found)
        fit(learn, stage, lr)
        rule = stage.lr if isinstance(stage.lr, str) else None
        yield StageResult(stage.name, stage.epochs, lr, group_lrs(lr, learn.n_groups), rule, found)
        if learn.interrupted or learn.diverged:
            return
