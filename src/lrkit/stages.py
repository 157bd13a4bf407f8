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

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lrkit.range_test_result import LRFindResult
from lrkit.schedule import LrSpec, group_lrs

if TYPE_CHECKING:
    from lrkit.learner import Learner

# fastai's fine_tune (fastai 2.8, learner.fine_tune): the head one-cycle with pct_start 0.99,
# then base_lr / 2 spread as slice(base_lr / 2 / 100, base_lr / 2), pct_start 0.3, div 5.
LR_MULT = 100.0  # fine_tune's ratio between the last layer group's rate and the first's
UNFROZEN = 0.5  # the unfrozen stage peaks at this x the head stage's rate
HEAD_PCT_START = 0.99  # the frozen stage's one-cycle warm-up share
PCT_START, DIV = 0.3, 5.0  # the unfrozen stage's one-cycle warm-up share and start = peak / div

# `auto` (see `auto_plan` and `rule_lr` for the reasoning; measured by
# benchmarks/finetune_design.py and against fastai by benchmarks/bench_vs_fastai.py).
AUTO_NUM_IT = 100  # range-test steps, as fastai's lr_find (shorter: pass num_it; see short_test)
SMOOTHING, SMOOTHING_STEPS = 0.98, 100  # lr_find's beta and num_it defaults (short_test)
AUTO_LR_MULT = 10.0  # fit_one_cycle(n, "auto") on an unfrozen body: slice(hi / 10, hi)
# The cheaper range test (`lr_find(**QUICK_RANGE_TEST)`): 40 % fewer steps at lr_find's
# resolution (12 steps per decade, as 100 steps over 1e-7 ... 10), over the decades where heads
# and from-scratch training find their rate. Regret of `auto` (benchmarks/rule_study.py, 11
# tasks x 5 range tests): +0.53 points against +0.39 for lr_find's 100 steps; the same 60 steps
# over 1e-7 ... 10 leave curves still falling (NaN).
QUICK_RANGE_TEST = {"num_it": 60, "start_lr": 1e-4}
# The head's range test in fine_tune(..., "auto"): the quick one, with the frozen body's
# BatchNorm weights held (`Learner.lr_find(hold_frozen=True)`: no backward through the body).
# On the Pets sample (benchmarks/bench_vs_fastai.py, 3 seeds x 2 halves) fine_tune reached
# 62.0 % validation error after it against 68.5 % after fastai's 100 steps from 1e-7 (within
# the noise), and the whole workflow took 0.45 of fastai's time.
AUTO_HEAD_TEST = {**QUICK_RANGE_TEST, "hold_frozen": True}


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
    test_options: Mapping[str, Any] = field(default_factory=dict)  # for its range test,
    # under the caller's own (`run_stages(..., **range_test)`)
    pct_start: float | None = None  # one-cycle warm-up share (None: fit_one_cycle's default)
    div: float | None = None  # one-cycle start rate = peak / div (None: fit_one_cycle's default)

    @property
    def one_cycle(self) -> dict[str, float]:
        """The one-cycle options this stage sets, for `fit_one_cycle(epochs, lr, **...)`."""
        options = {"pct_start": self.pct_start, "div": self.div}
        return {key: value for key, value in options.items() if value is not None}

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
        """Plain values for a JSON record (the range test as its settings, the steps it ran, its
        suggestion and warnings)."""
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
            "range_test": None
            if self.range_test is None
            else {
                "num_it": self.range_test.num_it,
                "start_lr": self.range_test.start_lr,
                "end_lr": self.range_test.end_lr,
                "steps": len(self.range_test.lrs),
            },
            "range_test_warnings": self.range_test.warnings if self.range_test else [],
        }


def fine_tune_plan(
    epochs: int,
    lr: LrSpec | str,
    freeze_epochs: int = 1,
    lr_mult: float | None = None,
    pct_start: float = PCT_START,
    div: float = DIV,
) -> list[Stage]:
    """fastai's fine_tune as stages: "frozen" (head only, `freeze_epochs`, skipped when 0, one
    cycle with pct_start HEAD_PCT_START), then "unfrozen" (all groups, `epochs`, one cycle with
    `pct_start` and `div`).

    A number trains the head at slice(lr) (the frozen groups' BatchNorm layers at lr / 10) and
    then all groups at slice(hi / lr_mult, hi) with hi = UNFROZEN x lr, as fastai does; a slice
    or list is used as given. A rule name gets a range test before each stage: the frozen stage
    trains at its suggestion hi, the unfrozen one at slice(hi2 / lr_mult, hi2) from a new test.
    "auto" is `auto_plan`: one range test, fastai's steps from its rate. `lr_mult` None:
    LR_MULT (fastai's 100).
    Raises ValueError for epochs < 1, freeze_epochs < 0 or lr_mult < 1.
    """
    if epochs < 1 or freeze_epochs < 0:
        raise ValueError(f"need epochs >= 1 and freeze_epochs >= 0, got {epochs}, {freeze_epochs}")
    if lr == "auto":
        return auto_plan(epochs, freeze_epochs, lr_mult, pct_start, div)
    lr_mult = LR_MULT if lr_mult is None else _check_mult(lr_mult)
    head = slice(lr) if isinstance(lr, (int, float)) else lr  # fastai: slice(base_lr)
    plan = [head_stage(freeze_epochs, head)] if freeze_epochs else []
    schedule = {"freeze": False, "pct_start": pct_start, "div": div}
    if isinstance(lr, (int, float)):
        hi = UNFROZEN * lr
        plan.append(Stage("unfrozen", epochs, slice(hi / lr_mult, hi), **schedule))
    else:
        plan.append(Stage("unfrozen", epochs, lr, lr_mult=lr_mult, **schedule))
    return plan


def head_stage(epochs: int, lr: LrSpec | str, **options: Any) -> Stage:
    """fine_tune's first stage: the body frozen, one cycle warming up for HEAD_PCT_START of it."""
    return Stage("frozen", epochs, lr, freeze=True, pct_start=HEAD_PCT_START, **options)


def _check_mult(lr_mult: float) -> float:
    if not lr_mult >= 1:
        raise ValueError(
            f"lr_mult must be >= 1 (the first group's rate is hi / lr_mult), got {lr_mult}"
        )
    return float(lr_mult)


def auto_plan(
    epochs: int,
    freeze_epochs: int = 1,
    lr_mult: float | None = None,
    pct_start: float = PCT_START,
    div: float = DIV,
) -> list[Stage]:
    """`fine_tune(epochs, "auto")`: fastai's fine_tune at the `auto` rate of one range test.

    1. "frozen": a range test on the frozen body (AUTO_HEAD_TEST: 60 steps from 1e-4, the
       body's BatchNorm held); the head trains at its `auto` suggestion hi (one cycle,
       pct_start HEAD_PCT_START, `freeze_epochs`).
    2. "unfrozen": every group at slice(hi2 / LR_MULT, hi2) with hi2 = UNFROZEN x hi (fastai's
       hi / 2 and spread 100), one cycle with `pct_start` and `div`; no second range test.

    Why no second range test: after unfreezing, the curve of the whole network stays flat
    until the body's rates are large enough to wreck its ImageNet features, so its suggestion
    says little about the rate that fine-tunes best (fastbook's warning), and on small data it
    costs more than the training it serves (Pets sample: 100 range-test steps against 12
    training steps).
    Measured (benchmarks/finetune_design.py, Pets sample, seeds 0-2, mean validation error
    after the unfrozen stage, every variant from the same head): hi/2 spread 100 71.0 %; a
    second range test with `auto` at spread 10 69.5 % (at spread 100 73.8 %), for 100 more
    steps of the unfrozen network, 7 times this stage's training; hi/5 spread 10 73.5 %; hi/2
    or hi at spreads 3 or 10 (the body at >= 2e-3) wrecked the body's features (82-96 %).
    README "Pets" has the table and the side-by-side run against fastai.
    Without head epochs (freeze_epochs=0) there is no head rate to start from: one range test
    on the unfrozen learner with the spread applied (`stage_lr`).
    """
    mult = LR_MULT if lr_mult is None else _check_mult(lr_mult)
    schedule = {"freeze": False, "lr_mult": mult, "pct_start": pct_start, "div": div}
    if not freeze_epochs:
        return [Stage("unfrozen", epochs, "auto", test_options=short_test(AUTO_NUM_IT),
                      **schedule)]  # fmt: skip
    return [
        head_stage(freeze_epochs, "auto", test_options=AUTO_HEAD_TEST),
        Stage("unfrozen", epochs, "auto", from_previous=UNFROZEN, **schedule),
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
    AUTO_NUM_IT steps run with that spread applied. Why 10: after a head stage on the Pets
    sample, `auto` from a range test of the unfrozen network (groups at one rate), trained at
    slice(hi / 10, hi), reached 69.5 % mean validation error against 73.8 % at fastai's 100
    (benchmarks/finetune_design.py, 3 seeds).
    Raises UnusableCurveError before anything trains when the curve gives no rate.
    """
    if rule != "auto":
        return stage_lr(learn, rule, **range_test)[0]
    mult = AUTO_LR_MULT if lr_mult is None else _check_mult(lr_mult)
    options = merge_test_options(short_test(AUTO_NUM_IT), range_test)
    return stage_lr(learn, "auto", mult if trainable_groups(learn) > 1 else None, **options)[0]


def merge_test_options(own: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """A range test's options: a stage's or rule's `own` (`Stage.test_options`), each replaced by
    the caller's where `given`; a given num_it drops the own smoothing (beta) too, as that was
    scaled to the own length. lr_find's defaults fill the rest."""
    options = {**own, **given}
    if "num_it" in given and "beta" not in given:
        options.pop("beta", None)
    return options


def one_cycle(learn: Learner, stage: Stage, lr: LrSpec) -> None:
    """The default way to train a stage: `fit_one_cycle(stage.epochs, lr)` with its options."""
    learn.fit_one_cycle(stage.epochs, lr, **stage.one_cycle)


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
            options = merge_test_options(stage.test_options, range_test)
            lr, found = stage_lr(learn, stage.lr, stage.lr_mult, **options)
        previous_hi = group_lrs(lr, learn.n_groups)[-1]  # a rule's or a given rate's top
        if found is not None and on_range_test is not None:
            on_range_test(stage, found)
        fit(learn, stage, lr)
        rule = stage.lr if isinstance(stage.lr, str) else None
        yield StageResult(stage.name, stage.epochs, lr, group_lrs(lr, learn.n_groups), rule, found)
        if learn.interrupted or learn.diverged:
            return
