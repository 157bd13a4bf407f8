"""Training in stages, each at a rate a range test chooses right before it: fastai's fine_tune.

A stage is: set the frozen state (freeze, unfreeze, or leave it), find its learning rate (a
number is taken as it is; a rule name runs a range test on the learner as it is now and takes
that rule's suggestion `hi`, spread as `slice(hi / lr_mult, hi)` over the layer groups when
`lr_mult` is set), then train. `fine_tune_plan` is fastai's recipe as stages: the head with the
body frozen, then everything with discriminative rates. `lrkit fine-tune` and `lrkit train
--freeze-epochs` both run these stages.

A suggestion that is not a positive finite number (a rule may answer NaN for a curve it cannot
trust) stops the stages with `UnusableCurveError` before anything trains at it.

`auto` (`fine_tune(epochs, "auto")`, `fit_one_cycle(n, "auto")`) chooses the head's rate and the
spread itself; see `auto_plan` and `rule_lr` for how, and the constants below for where they
were measured.
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

# `auto` in fine_tune / fit_one_cycle (see `auto_plan` for the reasoning; measured against
# fastai by benchmarks/bench_vs_fastai.py, README "Pets").
AUTO_NUM_IT = 100  # range-test steps, as fastai's lr_find (shorter: pass num_it; see short_test)
SMOOTHING, SMOOTHING_STEPS = 0.98, 100  # lr_find's beta and num_it defaults (short_test)
AUTO_UNFROZEN = 0.5  # the unfrozen stage peaks at this x the head stage's rate
AUTO_LR_MULT = 10.0  # ... and spreads it as slice(hi / AUTO_LR_MULT, hi)


@dataclass(frozen=True)
class Stage:
    """One stage of training: what to freeze, how long, and at which rate.

    `lr`: a number, slice or per-group list, or a rule name (a range test runs first).
    `freeze`: True freezes all but the last group, False unfreezes, None leaves it.
    `lr_mult`: for a rule, spread its suggestion hi as slice(hi / lr_mult, hi); None: hi for
    every group. `from_previous`: take hi from the stage before instead of a range test.
    """

    name: str
    epochs: int
    lr: LrSpec | str
    freeze: bool | None = None
    lr_mult: float | None = None
    from_previous: float | None = None  # with a rule: hi = this x the previous stage's hi, and
    # no range test (the stage before must have found its hi from a rule)
    num_it: int | None = None  # the range test's length, unless the caller sets num_it

    @property
    def range_test(self) -> bool:
        """Whether a range test runs before this stage (a rule not taken from the stage before)."""
        return isinstance(self.lr, str) and self.from_previous is None


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
    epochs: int, lr: LrSpec | str, freeze_epochs: int = 1, lr_mult: float | None = None
) -> list[Stage]:
    """fastai's fine_tune as stages: "frozen" (head only, `freeze_epochs`, skipped when 0), then
    "unfrozen" (all groups, `epochs`).

    A number trains the head at `lr` and then all groups at slice(lr / lr_mult, lr); a slice or
    list is used as given. A rule name gets a range test before each stage: the frozen stage
    trains at its suggestion hi, the unfrozen one at slice(hi2 / lr_mult, hi2) from a new test.
    "auto" is `auto_plan`: one range test, the spread from a fixed rule. `lr_mult` None:
    LR_MULT (fastai's 100), or AUTO_LR_MULT for "auto".
    Raises ValueError for epochs < 1, freeze_epochs < 0 or lr_mult < 1.
    """
    if epochs < 1 or freeze_epochs < 0:
        raise ValueError(f"need epochs >= 1 and freeze_epochs >= 0, got {epochs}, {freeze_epochs}")
    if lr == "auto":
        return auto_plan(epochs, freeze_epochs, lr_mult)
    lr_mult = default_lr_mult(lr) if lr_mult is None else _check_mult(lr_mult)
    plan = [Stage("frozen", freeze_epochs, lr, freeze=True)] if freeze_epochs else []
    if isinstance(lr, (int, float)):
        plan.append(Stage("unfrozen", epochs, slice(lr / lr_mult, lr), freeze=False))
    else:
        plan.append(Stage("unfrozen", epochs, lr, freeze=False, lr_mult=lr_mult))
    return plan


def default_lr_mult(lr: LrSpec | str) -> float:
    """The spread fine_tune uses when none is given: AUTO_LR_MULT for "auto", else LR_MULT."""
    return AUTO_LR_MULT if lr == "auto" else LR_MULT


def _check_mult(lr_mult: float) -> float:
    if not lr_mult >= 1:
        raise ValueError(
            f"lr_mult must be >= 1 (the first group's rate is hi / lr_mult), got {lr_mult}"
        )
    return float(lr_mult)


def auto_plan(epochs: int, freeze_epochs: int = 1, lr_mult: float | None = None) -> list[Stage]:
    """`fine_tune(epochs, "auto")`: the head's rate from one range test, the spread from a rule.

    1. "frozen": a range test of AUTO_NUM_IT steps on the frozen body; the head trains at its
       `auto` suggestion hi (one-cycle, `freeze_epochs`).
    2. "unfrozen": every group at slice(hi2 / AUTO_LR_MULT, hi2) with hi2 = AUTO_UNFROZEN x hi,
       and no second range test.

    Why no second range test: after unfreezing, the curve of the whole network stays flat
    until the body's rates are large enough to wreck its ImageNet features, so its suggestion
    says little about the rate that fine-tunes best (fastbook's warning), and on small data it
    costs several times the training it serves (Pets sample: 100 range-test steps against 10
    training steps). hi2 = hi / 2 is fastai's own step from the head stage to the unfrozen one;
    the spread 10 (fastai: 100) lets the body move in a fine-tune of a few epochs. Both are
    choices, not yet fitted: benchmarks/finetune_design.py measures the alternatives (a second
    range test, spreads 3/10/100, hi/2 or hi/5) but did not finish on the shared 2-core
    machine; benchmarks/bench_vs_fastai.py measures the plan against fastai (README "Pets").
    Without head epochs (freeze_epochs=0) there is no head rate to start from: one range test
    on the unfrozen learner with the spread applied (`stage_lr`).
    """
    mult = default_lr_mult("auto") if lr_mult is None else _check_mult(lr_mult)
    if not freeze_epochs:
        return [Stage("unfrozen", epochs, "auto", freeze=False, lr_mult=mult, num_it=AUTO_NUM_IT)]
    return [
        Stage("frozen", freeze_epochs, "auto", freeze=True, num_it=AUTO_NUM_IT),
        Stage("unfrozen", epochs, "auto", freeze=False, lr_mult=mult, from_previous=AUTO_UNFROZEN),
    ]


def short_test(num_it: int | None) -> dict[str, Any]:
    """Range-test options for a test of `num_it` steps over the default sweep: the smoothing
    scaled so that it spans as many decades of lr as fastai's beta 0.98 does over 100 steps
    ({} for None: the caller's or lr_find's defaults)."""
    if num_it is None:
        return {}
    return {"num_it": num_it, "beta": SMOOTHING ** (SMOOTHING_STEPS / num_it)}


def trainable_groups(learn: Learner) -> int:
    """How many layer groups train: those from `frozen_idx` on (a frozen group's BatchNorm
    layers may still train with train_bn, but at a rate that does not matter here)."""
    return learn.n_groups - learn.frozen_idx


def stage_lr(
    learn: Learner, lr: LrSpec | str, lr_mult: float | None = None, **range_test: Any
) -> tuple[LrSpec, LRFindResult | None]:
    """The rate a stage trains at: `lr` itself, or, for a rule name, its suggestion from a range
    test on `learn` as it is now (`range_test` goes to `learn.lr_find`), spread with `lr_mult`.

    With "auto" and more than one trainable group the range test runs with the spread already
    applied (groups at 1/lr_mult ... 1 of the last one's rate), so the curve is the one of the
    configuration that will train. Raises UnusableCurveError (one line: why, and what to do)
    when the curve gives no rate for the rule (NaN, too short, ...), before anything trains.
    """
    if not isinstance(lr, str):
        return lr, None
    if lr == "auto" and lr_mult and trainable_groups(learn) > 1:
        for group, value in zip(
            learn.opt.param_groups, group_lrs(slice(1 / lr_mult, 1.0), learn.n_groups), strict=True
        ):
            group["lr"] = value  # only the ratios matter: the range test scales them together
    found = learn.lr_find(**range_test)
    hi = found.require(lr)
    return (slice(hi / lr_mult, hi) if lr_mult else hi), found


def rule_lr(
    learn: Learner, rule: str = "auto", lr_mult: float | None = None, **range_test: Any
) -> LrSpec:
    """`fit_one_cycle(n, rule)`: the rate from a range test on `learn` as it is now.

    A rule other than "auto": its suggestion hi for every group. "auto" with one trainable group
    (a plain model, or a frozen body): its suggestion hi; with several (an unfrozen body):
    slice(hi / lr_mult, hi), lr_mult AUTO_LR_MULT unless given, hi read from a range test of
    AUTO_NUM_IT steps run with that spread applied. Raises UnusableCurveError before anything
    trains when the curve gives no rate.
    """
    if rule != "auto":
        return stage_lr(learn, rule, **range_test)[0]
    mult = default_lr_mult("auto") if lr_mult is None else _check_mult(lr_mult)
    if "num_it" not in range_test:
        range_test = {**short_test(AUTO_NUM_IT), **range_test}
    return stage_lr(learn, "auto", mult if trainable_groups(learn) > 1 else None, **range_test)[0]


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
    previous_hi: float | None = None
    for stage in plan:
        if stage.freeze is True:
            learn.freeze()
        elif stage.freeze is False:
            learn.unfreeze()
        if stage.from_previous is not None and previous_hi is not None:
            hi = stage.from_previous * previous_hi
            lr, found = (slice(hi / stage.lr_mult, hi) if stage.lr_mult else hi), None
        else:
            options = (
                range_test if "num_it" in range_test else {**short_test(stage.num_it), **range_test}
            )
            lr, found = stage_lr(learn, stage.lr, stage.lr_mult, **options)
        previous_hi = group_lrs(lr, learn.n_groups)[-1]  # a rule's or a given rate's top
        if found is not None and on_range_test is not None:
            on_range_test(stage, found)
        fit(learn, stage, lr)
        rule = stage.lr if isinstance(stage.lr, str) else None
        yield StageResult(stage.name, stage.epochs, lr, group_lrs(lr, learn.n_groups), rule, found)
        if learn.interrupted or learn.diverged:
            return
