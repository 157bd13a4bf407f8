"""`lrkit train`: fit_one_cycle (or a constant rate), optionally after head-only epochs."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

from rich.console import Console

from lrkit.cli.args import (
    EPOCHS,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    HEAD_EPOCHS,
    LR_MULTIPLIER,
    Unfinished,
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
from lrkit.cli.finetune import fine_tune_stages, range_test_name, train_in_stages
from lrkit.cli.interpretation import OUTPUTS as INTERPRETATION_OUTPUTS
from lrkit.cli.output import describe_lr
from lrkit.cli.results import (
    data_summary,
    finish_training,
    versions,
    written_list,
)
from lrkit.cli.setup import (
    resolved_config,
    setup,
)
from lrkit.range_test_result import finite_or_none, json_ready
from lrkit.stages import Stage


def add_command(commands: argparse._SubParsersAction) -> None:
    train = add_command_to(
        commands,
        "train",
        "fit with a fixed, sliced or suggested learning rate",
        "Train with fit_one_cycle (or a constant lr). --lr takes a number, LO:HI for "
        "discriminative rates over the layer groups, or a rule name (auto, minimum, valley, ...) "
        "to run a range test first. Writes model.lrk, metrics.csv, losses.png, schedule.png, "
        "train.json and what the model gets wrong on the validation set: confusion_matrix.png, "
        "top_losses.png and the most confused pairs (multi-label: the threshold sweep, "
        "threshold.png, and per-class precision/recall at the chosen threshold, per_class.png; "
        "the threshold is stored in model.lrk).",
    )
    add_data(train)
    add_model(train)
    add_range_test(train, per_stage=True)
    add_logging(train)
    train.add_argument("--epochs", type=EPOCHS, default=1)
    train.add_argument("--lr", default="auto", help="number, LO:HI, or a rule name")
    train.add_argument(
        "--freeze-epochs", type=HEAD_EPOCHS, default=0, help="head-only epochs first"
    )
    train.add_argument("--schedule", choices=("one-cycle", "constant"), default="one-cycle")
    train.add_argument(
        "--lr-mult",
        type=LR_MULTIPLIER,
        default=None,
        help="with a rule and --freeze-epochs: after unfreezing, slice(hi / LR_MULT, hi) "
        "(default 100, as fastai)",
    )
    train.set_defaults(run=run_train)


def run_train(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """`lrkit train`: optional frozen epochs, then training; exported model, CSV and plots.

    With a rule and --freeze-epochs, the stages are fine-tune's: a range test before each, and
    slice(hi / --lr-mult, hi) after unfreezing.
    """
    spec = parse_lr(args.lr)
    if args.freeze_epochs and isinstance(spec, str):  # a rule: fine-tune's stages, as fine_tune
        plan = fine_tune_stages(args.epochs, spec, args.freeze_epochs, args.lr_mult)
        plan[-1] = replace(plan[-1], name="train")
    elif args.freeze_epochs:  # a given rate: the head at it, then every group at it
        plan = [
            Stage("frozen", args.freeze_epochs, spec, freeze=True),
            Stage("train", args.epochs, spec, freeze=False),
        ]
    else:
        plan = [Stage("train", args.epochs, spec)]
    outputs = ["metrics.csv", "losses.png", "schedule.png", "model.lrk", "train.json"]
    outputs += INTERPRETATION_OUTPUTS
    if isinstance(spec, str):  # a rule: one range-test plot per stage
        outputs += [f"lr_find_{range_test_name(s)}.png" for s in plan if s.range_test]
    check_outputs(args.out, outputs)
    options, dls, learn = setup(args, console)
    done, interrupted, stopped = train_in_stages(args, learn, plan, console)
    stages = [
        {
            "stage": result.name,
            "epochs": result.epochs,
            "lr": describe_lr(result.lr),
            "range_test_warnings": result.range_test.warnings if result.range_test else [],
        }
        for result in done
    ]
    cut_short = bool(interrupted or stopped)
    model_path, plots, interpretation = finish_training(args, learn, done, cut_short, console)
    final = learn.recorder.log[-1] if learn.recorder.log else {}
    record = {
        "config": resolved_config(args),
        "stages": stages,
        "final": {
            k: (v if not isinstance(v, float) else finite_or_none(v)) for k, v in final.items()
        },
        "interpretation": interpretation,
        "interrupted": interrupted is not None,
        "stopped": stopped,
        "diverged": learn.diverged,
        "stop_reason": learn.stop_reason,
        "model": str(model_path) if model_path is not None else None,
        "data": data_summary(options, dls),
        "versions": versions(),
    }
    (args.out / "train.json").write_text(json.dumps(json_ready(record), indent=2, default=str))
    written = written_list(args.out, model_path, plots, "train.json")
    if interrupted:
        raise Unfinished(
            f"interrupted (Ctrl-C) {interrupted}; wrote {written}", record, EXIT_INTERRUPTED
        )
    if stopped:
        raise Unfinished(f"{stopped}; wrote {written}", record, EXIT_USAGE)
    console.print(f"wrote {written}")
    return record
