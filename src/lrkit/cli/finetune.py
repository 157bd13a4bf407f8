"""`lrkit fine-tune`, and the staged training it shares with `lrkit train --freeze-epochs`.

fastai's fine_tune as one command: a range test on the frozen body when --lr is a rule, K
epochs on the head (fit_one_cycle), unfreeze, a new range test, N epochs at slice(hi/lr_mult,
hi). The stages themselves are the library's (`lrkit.stages`); this module adds what a command
does around them: one metrics.csv for all stages, a plot per range test, the warnings on screen,
Ctrl-C and an untrustworthy suggestion turned into a record of what was done.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console

from lrkit.callbacks import CSVLogger
from lrkit.cli.args import (
    EPOCHS,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    HEAD_EPOCHS,
    LR_MULTIPLIER,
    Unfinished,
    UsageError,
    add_data,
    add_logging,
    add_model,
    add_range_test,
    check_outputs,
    parse_lr,
)
from lrkit.cli.args import (
    add_command as add_command_to,
)
from lrkit.cli.interpretation import OUTPUTS as INTERPRETATION_OUTPUTS
from lrkit.cli.output import Heartbeat, describe_lr, plural
from lrkit.cli.results import (
    data_summary,
    finish_training,
    plot_partial_curve,
    versions,
    written_list,
)
from lrkit.cli.setup import (
    resolved_arch,
    resolved_config,
    setup,
)
from lrkit.config import RANGE_TEST
from lrkit.finder import RangeTestInterrupted
from lrkit.range_test_result import LRFindResult, UnusableCurveError, finite_or_none, json_ready
from lrkit.schedule import LrSpec
from lrkit.stages import (
    LR_MULT,
    Stage,
    StageResult,
    fine_tune_plan,
    merge_test_options,
    run_stages,
)
from lrkit.vision.learner import VisionLearner


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = add_command_to(
        commands,
        "fine-tune",
        "fastai's fine_tune: range test, head epochs, unfreeze, range test, sliced lrs",
        "With --lr a rule (minimum, valley, ...): a range test on the frozen body, "
        "--freeze-epochs epochs on the head (fit_one_cycle), unfreeze, a new range test, "
        "--epochs epochs at slice(hi / --lr-mult, hi). With --lr auto: the head's range test "
        "is a quick one (60 steps from 1e-4, no backward through the frozen body) and there is "
        "no second one: slice(hi2 / --lr-mult, hi2) with hi2 = hi / 2 (learn.fine_tune's auto "
        "plan). With --lr a number: the head at it, then slice(hi / --lr-mult, hi) with hi = "
        "half of it, as fastai's fine_tune. Writes model.lrk, "
        "metrics.csv, losses.png, schedule.png, lr_find_frozen.png, lr_find_unfrozen.png (not "
        "for auto), fine_tune.json and the interpretation (confusion_matrix.png and "
        "top_losses.png; multi-label: threshold.png and per_class.png), as lrkit train does.",
    )
    add_data(parser)
    add_model(parser)
    add_range_test(parser, per_stage=True)
    add_logging(parser)
    parser.add_argument("--epochs", type=EPOCHS, default=1, help="epochs after unfreezing")
    parser.add_argument(
        "--freeze-epochs", type=HEAD_EPOCHS, default=1, help="head-only epochs first"
    )
    parser.add_argument("--lr", default="auto", help="a rule name (auto, minimum, ...) or a number")
    parser.add_argument(
        "--lr-mult",
        type=LR_MULTIPLIER,
        default=None,
        help="last group's rate / first group's (default 100, as fastai)",
    )
    parser.set_defaults(run=run_fine_tune)


def train_in_stages(
    args: argparse.Namespace, learn: VisionLearner, plan: list[Stage], console: Console
) -> tuple[list[StageResult], str | None, str | None]:
    """Run `plan`, writing metrics.csv (a stage column) and lr_find_<stage>.png per range test.

    Returns (the stages done, where Ctrl-C stopped them or None, why they stopped before
    training at a rule's rate or None). `args` gives out, schedule, start_lr, end_lr, num_it.
    """
    done: list[StageResult] = []

    def fit(learn: VisionLearner, stage: Stage, lr: LrSpec) -> None:
        # one CSV for all stages: each appends below the one before, a stage column apart
        logger = CSVLogger(args.out / "metrics.csv", append=bool(done), stage=stage.name)
        if getattr(args, "schedule", "one-cycle") == "one-cycle":
            learn.fit_one_cycle(stage.epochs, lr, cbs=[logger], **stage.one_cycle)
        else:
            learn.fit(stage.epochs, lr, cbs=[logger])

    beats: list[Heartbeat] = []  # the running range test's, in a log

    given = {key: getattr(args, key) for key in ("start_lr", "end_lr", "num_it")}
    given = {key: value for key, value in given.items() if value is not None}

    def announce(stage: Stage) -> None:  # in a log, where no progress bar is drawn
        if stage.range_test and not console.is_terminal:
            test = {**asdict(RANGE_TEST), **merge_test_options(stage.test_options, given)}
            console.print(
                f"range test before the {stage.name} stage: up to {test['num_it']} steps, lr "
                f"{test['start_lr']:.0e} to {test['end_lr']:.0e} ...",
                markup=False,
            )
            beats.append(Heartbeat(console, f"range test before the {stage.name} stage").start())

    def quiet() -> None:
        while beats:
            beats.pop().stop()

    def on_range_test(stage: Stage, found: LRFindResult) -> None:
        quiet()
        console.print(
            f"range test before the {stage.name} stage: {len(found.lrs)} steps "
            f"({found.stop_reason})",
            markup=False,
        )
        found.plot(args.out / f"lr_find_{range_test_name(stage)}.png")
        for note in found.warnings:
            console.print(
                f"[yellow]warning:[/] range test before the {stage.name} stage: {note}",
                highlight=False,
            )

    interrupted = stopped = None
    try:
        announce(plan[0])
        for result in run_stages(
            learn,
            plan,
            fit,
            on_range_test,
            progress=console.is_terminal,
            **given,
        ):
            done.append(result)
            console.print(
                f"{result.name} stage: {plural(result.epochs, 'epoch')} at {describe_lr(result.lr)}"
            )
            if len(done) < len(plan):  # the next stage's range test starts now
                announce(plan[len(done)])
    except RangeTestInterrupted as stop:  # the curve so far is plotted, if it has points
        stage, steps = plan[len(done)], len(stop.partial.lrs)
        plot_partial_curve(stop.partial, args.out / f"lr_find_{range_test_name(stage)}.png")
        interrupted = (
            f"in the range test before the {stage.name} stage, after {steps} of "
            f"{stop.partial.num_it} steps"
        )
    except KeyboardInterrupt:  # a second Ctrl-C inside a fit
        interrupted = f"during the {plan[len(done)].name} stage"
    except UnusableCurveError as error:
        stopped = (
            f"stopped before the {plan[len(done)].name} stage: the range test gives no learning "
            f"rate ({error.why}): pass a learning rate as --lr NUMBER, or raise --num-it, widen "
            "--start-lr/--end-lr, or use more data"
        )
    finally:
        quiet()
    if learn.interrupted and done:  # the fit ended cleanly at the first Ctrl-C
        interrupted = f"in the {done[-1].name} stage at epoch {learn.epoch}, batch {learn.iter}"
    return done, interrupted, stopped


def range_test_name(stage: Stage) -> str:
    """The range test's plot name: lr_find_frozen / lr_find_unfrozen / lr_find_train."""
    return "unfrozen" if stage.freeze is False else stage.name


@dataclass(frozen=True)
class FineTuneConfig:
    """`lrkit fine-tune`'s fully resolved settings, saved in fine_tune.json."""

    epochs: int
    freeze_epochs: int
    lr: float | str  # a number, or the rule whose suggestion each stage trains at
    lr_mult: float | None  # the spread the last stage used
    num_it: int | None  # range tests: optimizer steps, and the lr range (start_lr, end_lr);
    start_lr: float | None  # None: each stage's own (what each test used is in its stage's
    end_lr: float | None  # record, "range_test")
    arch: str
    pretrained: str
    precision: str
    seed: int
    device: str


def parse_head_lr(text: str) -> float | str:
    """--lr for fine-tune: a rule name or one positive number (the head's rate, hi)."""
    spec = parse_lr(text)
    if isinstance(spec, slice):
        raise UsageError(
            f"--lr {text}: fine-tune spreads the rate itself as slice(hi / --lr-mult, hi); give "
            "one number (hi) or a rule name"
        )
    return spec


def run_fine_tune(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """`lrkit fine-tune`: range test, head epochs, unfreeze, range test, slice(hi/m, hi)."""
    lr = parse_head_lr(args.lr)
    plan = fine_tune_stages(args.epochs, lr, args.freeze_epochs, args.lr_mult)
    outputs = ["metrics.csv", "losses.png", "schedule.png", "model.lrk", "fine_tune.json"]
    outputs += INTERPRETATION_OUTPUTS
    if isinstance(lr, str):
        outputs += [f"lr_find_{range_test_name(s)}.png" for s in plan if s.range_test]
    check_outputs(args.out, outputs)
    options, dls, learn = setup(args, console)
    config = FineTuneConfig(
        epochs=args.epochs,
        freeze_epochs=args.freeze_epochs,
        lr=lr,
        lr_mult=args.lr_mult or LR_MULT,
        num_it=args.num_it,
        start_lr=args.start_lr,
        end_lr=args.end_lr,
        arch=resolved_arch(args),
        pretrained=resolved_config(args)["pretrained"],
        precision=args.precision,
        seed=args.seed,
        device=str(learn.device),
    )
    done, interrupted, stopped = train_in_stages(args, learn, plan, console)

    cut_short = bool(interrupted or stopped)
    model_path, plots, interpretation = finish_training(args, learn, done, cut_short, console)
    final = learn.recorder.log[-1] if learn.recorder.log else {}
    record = {
        "config": {**resolved_config(args), **asdict(config)},
        "stages": [result.to_dict() for result in done],
        "final": {k: finite_or_none(v) if isinstance(v, float) else v for k, v in final.items()},
        "interpretation": interpretation,
        "interrupted": interrupted is not None,
        "stopped": stopped,
        "diverged": learn.diverged,
        "stop_reason": learn.stop_reason,
        "model": str(model_path) if model_path is not None else None,
        "data": data_summary(options, dls),
        "versions": versions(),
    }
    (args.out / "fine_tune.json").write_text(json.dumps(json_ready(record), indent=2, default=str))
    written = written_list(args.out, model_path, plots, "fine_tune.json")
    if interrupted:
        raise Unfinished(
            f"interrupted (Ctrl-C) {interrupted}; wrote {written}", record, EXIT_INTERRUPTED
        )
    if stopped:
        raise Unfinished(f"{stopped}; wrote {written}", record, EXIT_USAGE)
    console.print(f"wrote {written}")
    return record


def fine_tune_stages(
    epochs: int, lr: float | str, freeze_epochs: int, mult: float | None
) -> list[Stage]:
    """The library's fine_tune plan (errors in one line, exit 2)."""
    try:
        return fine_tune_plan(epochs, lr, freeze_epochs, mult)
    except ValueError as error:
        raise UsageError(str(error)) from None
