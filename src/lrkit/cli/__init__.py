"""The `lrkit` command. Thin: parse arguments, build data and learner, call the library, report.

`main(argv)` returns the exit code, so tests call it in-process. Human output goes to stdout,
or to stderr when `--json` puts one JSON object on stdout. A bad argument or path gets one
line on stderr and exit code 2, never a traceback; every output is checked writable before any
work. `lrkit predict` names each file it cannot read, predicts the others and exits 1.
Ctrl-C stops the whole command (not only the fit it lands in): what was done so far is
written, marked `"interrupted": true`, and the exit code is 130.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

import lrkit
from lrkit import suggest
from lrkit.callbacks import ProgressCallback
from lrkit.cli_args import (
    DIV_THRESH,
    EPOCHS,
    HEAD_EPOCHS,
    LEARNING_RATE,
    REPEATS,
    ArgumentError,
    Parser,
    UsageError,
    add_common,
    add_data,
    add_model,
    add_range_test,
    check_outputs,
    not_a_file,
    option_names,
    speak_flags,
)
from lrkit.compare import CompareConfig, compare_rules, rule_table, write_comparison
from lrkit.data.dataloaders import DataLoaders
from lrkit.data.download import DownloadError
from lrkit.datasets import fashion_mnist, pets
from lrkit.demo import DemoConfig, DemoInterrupted, run_demo
from lrkit.export_file import load_learner
from lrkit.finder import RangeTestInterrupted
from lrkit.image_learner import VisionLearner, vision_learner
from lrkit.metrics import accuracy_multi, error_rate
from lrkit.range_test_result import LRFindResult, UnusableCurveError, finite_or_none, json_ready
from lrkit.report import rich_table
from lrkit.stages import LR_MULT, Stage
from lrkit.vision import JunkWarning, csv_dataloaders, image_dataloaders

EXIT_SOME_FAILED = 1  # lrkit predict: some files could not be read, the others were predicted
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


class Unfinished(Exception):
    """A command did part of its work: `record` is what it did (written, and printed under
    --json), `code` the exit code: EXIT_INTERRUPTED after Ctrl-C, EXIT_SOME_FAILED when some
    inputs could not be used."""

    def __init__(self, message: str, record: dict[str, Any], code: int) -> None:
        super().__init__(message)
        self.record, self.code = record, code


# ------------------------------------------------------------------------------ data and model


@dataclass(frozen=True)
class DataOptions:
    """Which data to load and how; saved beside every result."""

    dataset: str | None = None  # a named dataset, or None for an image folder (`data`)
    data: str | None = None  # the dataset's folder, or the image folder
    label_re: str | None = None
    labels: str | None = None  # CSV of file name, label(s)
    multi_label: bool = False
    valid_pct: float | None = None  # None: the dataset's own split or 0.2
    presize: int = 460
    size: int = 224
    bs: int | None = None  # None: 128 for Fashion-MNIST, 32 for images
    workers: int | None = None
    train_subset: int | None = None  # Fashion-MNIST only: class-balanced subsets
    valid_subset: int | None = None
    seed: int = 0


def load_data(options: DataOptions) -> DataLoaders:
    """The DataLoaders the options describe."""
    if options.dataset == "fashion-mnist":
        return fashion_mnist(
            options.data,
            bs=options.bs or 128,
            train_subset=options.train_subset,
            valid_subset=options.valid_subset,
            seed=options.seed,
            num_workers=options.workers or 0,
        )
    images = {
        "presize": options.presize,
        "size": options.size,
        "bs": options.bs or 32,
        "num_workers": options.workers,
        "seed": options.seed,
    }
    if options.dataset == "pets":
        if options.label_re is not None or options.labels is not None:
            raise UsageError("--label-re and --labels are for --data DIR; Pets names its breeds")
        if options.valid_pct is not None:
            return pets(options.data, split="random", valid_pct=options.valid_pct, **images)
        return pets(options.data, **images)
    if options.data is None:
        raise UsageError("give --dataset fashion-mnist|pets, or --data DIR with your images")
    if not Path(options.data).is_dir():
        raise UsageError(f"--data {options.data} is not a folder")
    valid_pct = options.valid_pct if options.valid_pct is not None else 0.2
    if options.labels is not None:
        return csv_dataloaders(
            options.data,
            options.labels,
            multi_label=options.multi_label,
            valid_pct=valid_pct,
            **images,
        )
    if options.multi_label:
        raise UsageError("--multi-label needs --labels CSV (space-separated labels per file)")
    return image_dataloaders(
        options.data,
        label_re=options.label_re,
        label_from_folder=options.label_re is None,
        valid_pct=valid_pct,
        **images,
    )


def pick_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UsageError(f"--device {name!r} is not a device torch knows: {error}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} was asked for, but torch sees no CUDA GPU here")
    try:
        torch.empty(0, device=device)  # mps without support, cuda:7 on a one-GPU machine, ...
    except (RuntimeError, AssertionError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"--device {name} cannot be used here: {first_line}") from None
    return device


def resolved_arch(args: argparse.Namespace) -> str:
    """--arch, or the default for the dataset."""
    return args.arch or ("resnet_small" if args.dataset == "fashion-mnist" else "resnet34")


def resolved_pretrained(args: argparse.Namespace) -> str | bool:
    """--pretrained as vision_learner takes it (False for none), or the default for the arch."""
    default = "none" if resolved_arch(args) == "resnet_small" else "imagenet"
    pretrained: str | bool = args.pretrained or default
    if pretrained == "none":
        return False
    if pretrained != "imagenet" and not Path(pretrained).is_file():
        raise UsageError(f"--pretrained {pretrained} is not a file (or use imagenet / none)")
    return pretrained


def make_learner(args: argparse.Namespace, dls: DataLoaders, console: Console) -> VisionLearner:
    """The learner the model options describe; body frozen when it is pretrained."""
    arch, pretrained = resolved_arch(args), resolved_pretrained(args)
    precision = {"fp32": None, "bf16": "bf16", "fp16": "fp16"}[args.precision]
    torch.manual_seed(args.seed)
    metrics = [accuracy_multi] if dls.multi_label else [error_rate]
    return vision_learner(
        dls,
        arch,
        pretrained=pretrained,
        metrics=metrics,
        device=pick_device(args.device),
        mixed_precision=precision,
        progress=False,
        cbs=[ProgressCallback(console)],  # on stderr under --json: stdout stays pure JSON
    )


def versions() -> dict[str, str]:
    """Versions that decide whether a result can be reproduced."""
    return {
        "lrkit": lrkit.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def data_summary(options: DataOptions, dls: DataLoaders) -> dict[str, Any]:
    """The data settings and what they produced, for every JSON result."""
    return {
        **asdict(options),
        "n_train": dls.n_train,
        "n_valid": dls.n_valid,
        "classes": dls.c,
        "junk_files": len(getattr(dls, "junk", [])),
    }


# ------------------------------------------------------------------------------ arguments


def build_parser() -> argparse.ArgumentParser:
    from lrkit import cli_finetune  # it imports this module: import it once this one is loaded

    parser = Parser(
        prog="lrkit", description="Learning-rate range tests and fine-tuning for PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"lrkit {lrkit.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=description)
        add_common(sub)
        return sub

    find = command(
        "find",
        "range test; prints the suggestions, writes the plot",
        "Run the learning-rate range test and print every rule's suggestion. "
        "Writes lr_find.png and lr_find.json into --out.",
    )
    add_data(find)
    add_model(find)
    add_range_test(find)
    find.add_argument("--mode", choices=("exp", "linear"), default="exp")
    find.add_argument(
        "--div-thresh",
        type=DIV_THRESH,
        default=4.0,
        help="stop when the loss rises (x - 1) times its fall (or its noise) above the best",
    )
    find.add_argument("--val", action="store_true", help="measure the loss on validation batches")
    find.add_argument("--repeats", type=REPEATS, default=1, help="runs on other data orders")
    find.set_defaults(run=run_find)

    train = command(
        "train",
        "fit with a fixed, sliced or suggested learning rate",
        "Train with fit_one_cycle (or a constant lr). --lr takes a number, LO:HI for "
        "discriminative rates over the layer groups, or a rule name (auto, minimum, valley, ...) "
        "to run a range test first. Writes model.lrk, metrics.csv, losses.png, schedule.png.",
    )
    add_data(train)
    add_model(train)
    add_range_test(train)
    train.add_argument("--epochs", type=EPOCHS, default=1)
    train.add_argument("--lr", default="auto", help="number, LO:HI, or a rule name")
    train.add_argument(
        "--freeze-epochs", type=HEAD_EPOCHS, default=0, help="head-only epochs first"
    )
    train.add_argument("--schedule", choices=("one-cycle", "constant"), default="one-cycle")
    train.add_argument(
        "--lr-mult",
        type=cli_finetune.lr_mult,
        default=LR_MULT,
        help="with a rule and --freeze-epochs: after unfreezing, slice(hi / LR_MULT, hi)",
    )
    train.set_defaults(run=run_train)

    fine_tune = command(
        "fine-tune",
        "fastai's fine_tune: range test, head epochs, unfreeze, range test, sliced lrs",
        "With --lr a rule (auto, minimum, valley, ...): a range test on the frozen body, "
        "--freeze-epochs epochs on the head (fit_one_cycle), unfreeze, a new range test, "
        "--epochs epochs at slice(hi / --lr-mult, hi). With --lr a number hi: the head at hi, "
        "then slice(hi / --lr-mult, hi). Writes model.lrk, metrics.csv, losses.png, "
        "schedule.png, lr_find_frozen.png, lr_find_unfrozen.png and fine_tune.json.",
    )
    add_data(fine_tune)
    add_model(fine_tune)
    add_range_test(fine_tune)
    cli_finetune.add_arguments(fine_tune)
    fine_tune.set_defaults(run=cli_finetune.run_fine_tune)

    compare = command(
        "compare",
        "train once per suggestion rule from the same start; table + report",
        "One range test, then for each rule the same recipe from the same initial weights and "
        "seed. Writes lr_find.png, valid_loss.png, comparison.json, report.md and report.html.",
    )
    add_data(compare)
    add_model(compare)
    add_range_test(compare)
    compare.add_argument("--rules", default=",".join(suggest.rule_names()), help="comma list")
    compare.add_argument("--epochs", type=EPOCHS, default=2)
    compare.add_argument("--schedule", choices=("one-cycle", "constant"), default="one-cycle")
    compare.set_defaults(run=run_compare)

    summary = command("summary", "layer groups, frozen state, parameter counts", "")
    add_data(summary)
    add_model(summary)
    summary.set_defaults(run=run_summary)

    predict = command("predict", "labels for image files from an exported model", "")
    predict.add_argument("model", help="a file written by lrkit train (model.lrk)")
    predict.add_argument("files", nargs="+", help="image files")
    predict.add_argument(
        "--trust-pickle",
        action="store_true",
        help="run code the model file names (a pickled model, or a model builder lrkit does "
        "not know); only for files you trust",
    )
    predict.set_defaults(run=run_predict)

    demo = command(
        "demo",
        "the whole workflow on Fashion-MNIST, end to end, no network needed",
        "Range test, the rules compared, transfer learning with discriminative rates, and a "
        "report (report.md, report.html) in --out. --quick runs every step smaller.",
    )
    demo.add_argument("--quick", action="store_true", help="smaller subsets (about 2 minutes)")
    demo.add_argument("--data", help="folder with the Fashion-MNIST files (default: find them)")
    demo.set_defaults(run=run_demo_command)
    return parser


# ------------------------------------------------------------------------------ commands


def _data_options(args: argparse.Namespace) -> DataOptions:
    return DataOptions(
        dataset=args.dataset or (None if args.data else "fashion-mnist"),
        data=args.data,
        label_re=args.label_re,
        labels=args.labels,
        multi_label=args.multi_label,
        valid_pct=args.valid_pct,
        presize=args.presize,
        size=args.size,
        bs=args.bs,
        workers=args.workers,
        train_subset=args.train_subset,
        valid_subset=args.valid_subset,
        seed=args.seed,
    )


def _setup(args: argparse.Namespace, console: Console) -> tuple[DataOptions, Any, VisionLearner]:
    options = _data_options(args)
    args.dataset = options.dataset
    pick_device(args.device)  # a bad --device is found before the data is loaded
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", JunkWarning)
        try:
            dls = load_data(options)
        finally:  # the list of left-out files, as plain lines; above the error when it fails
            for warning in caught:
                console.print(f"[yellow]warning:[/] {warning.message}", highlight=False)
    learn = make_learner(args, dls, console)
    console.print(
        f"{learn.model.__class__.__name__} ({args.arch or 'default arch'}) on "
        f"{options.dataset or options.data}: {dls.n_train} train / {dls.n_valid} valid items, "
        f"{dls.c} classes, {learn.n_groups} layer groups, device {learn.device}"
    )
    return options, dls, learn


def _suggestion_table(title: str, suggestions: dict[str, float], spread=None) -> Table:
    rows = [["rule", "learning rate", *(["spread (decades)"] if spread is not None else [])]]
    for name, lr in suggestions.items():
        row = [f"auto (= {suggest.AUTO_RULE})" if name == "auto" else name]
        missing = "n/a (see the warnings)" if name == "auto" else "n/a (curve too short)"
        row.append(f"{lr:.2e}" if math.isfinite(lr) else missing)
        if spread is not None:
            row.append(f"{spread[name]:.2f}")
        rows.append(row)
    return rich_table(rows, title)


def run_find(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """`lrkit find`: the range test; table on screen, plot and JSON on disk."""
    check_outputs(args.out, ["lr_find.png", "lr_find.json"])
    options, dls, learn = _setup(args, console)
    settings = {
        "start_lr": args.start_lr,
        "end_lr": args.end_lr,
        "num_it": args.num_it,
        "mode": args.mode,
        "div_thresh": args.div_thresh,
        "use_valid": args.val,
        "progress": console.is_terminal,
    }
    try:
        if args.repeats > 1:
            found = learn.lr_find_repeated(repeats=args.repeats, **settings)
        else:
            found = learn.lr_find(**settings)
    except RangeTestInterrupted as stop:  # keep the curve so far, marked
        found = stop.partial
        record = {**found.to_dict(), "interrupted": True}
        written = [args.out / "lr_find.json"]
        if plot_partial_curve(found, args.out / "lr_find.png"):
            written.insert(0, args.out / "lr_find.png")
        record["data"] = data_summary(options, dls)
        record["versions"] = versions()
        (args.out / "lr_find.json").write_text(json.dumps(json_ready(record), indent=2))
        raise Unfinished(
            f"interrupted (Ctrl-C) after {len(found.lrs)} of {args.num_it} range-test steps; "
            f"wrote {' and '.join(map(str, written))}",
            record,
            EXIT_INTERRUPTED,
        ) from None
    if args.repeats > 1:
        first = found.runs[0]
        record = {
            **first.to_dict(),
            "suggestions": {k: finite_or_none(v) for k, v in found.suggestions.items()},
            "spread_decades": {k: finite_or_none(v) for k, v in found.spread.items()},
            "warnings": found.warnings,
            "runs": [run.to_dict() for run in found.runs],
        }
        table = _suggestion_table(
            f"median suggestions of {args.repeats} runs", found.suggestions, found.spread
        )
    else:
        record = found.to_dict()
        table = _suggestion_table(
            f"suggestions ({found.stop_reason} after {len(found.lrs)} steps)", found.suggestions
        )
    found.plot(args.out / "lr_find.png")
    record["data"] = data_summary(options, dls)
    record["model"] = {"arch": args.arch, "groups": learn.n_groups, "frozen_idx": learn.frozen_idx}
    record["versions"] = versions()
    (args.out / "lr_find.json").write_text(json.dumps(record, indent=2))
    console.print(table)
    for note in found.warnings:
        console.print(f"[yellow]warning:[/] {note}")
    console.print(f"wrote {args.out / 'lr_find.png'} and {args.out / 'lr_find.json'}")
    return record


def plot_partial_curve(found: LRFindResult, path: Path) -> bool:
    """Plot an interrupted range test's curve to `path` when it has points to draw (2 or more);
    returns whether it was written."""
    if len(found.lrs) < 2:
        return False
    found.plot(path)
    return True


def trained_any(learn: VisionLearner, done: list) -> bool:
    """Whether a training command trained anything worth exporting (a stage or some batches)."""
    return bool(done) or bool(getattr(learn.recorder, "losses", None))


def written_list(out: Path, model_path: Path | None, plots: list[str], record_name: str) -> str:
    """What a training command wrote, for its last line: only the files that exist."""
    names = ["metrics.csv", *plots, *sorted(p.name for p in out.glob("lr_find_*.png"))]
    names = [name for name in names if (out / name).is_file()]
    model = [str(model_path)] if model_path is not None else []
    return ", ".join([*model, *names, record_name])


def write_training_plots(learn: VisionLearner, out: Path) -> list[str]:
    """losses.png and schedule.png of what was trained (none before the first batch, as after
    Ctrl-C in the first range test); returns the names written."""
    written = []
    if getattr(learn.recorder, "losses", None):
        learn.recorder.plot_losses(out / "losses.png")
        written.append("losses.png")
    if getattr(learn.recorder, "lrs", None):
        learn.recorder.plot_schedule(out / "schedule.png")
        written.append("schedule.png")
    return written


def parse_lr(text: str) -> float | slice | str:
    """'3e-3' -> 0.003; '1e-5:1e-3' -> slice(1e-5, 1e-3); a rule name stays a string."""
    if text in suggest.rule_names():
        return text
    parts = text.split(":")
    if len(parts) > 2 or not all(re.fullmatch(r"[0-9.eE+-]+", part) for part in parts):
        raise UsageError(
            f"--lr {text!r} is not a number, LO:HI, or a rule ({', '.join(suggest.rule_names())})"
        )
    try:
        rates = [LEARNING_RATE(part) for part in parts]
    except argparse.ArgumentTypeError as error:
        raise UsageError(f"--lr {error}") from None
    if len(rates) == 1:
        return rates[0]
    if not rates[0] <= rates[1]:
        raise UsageError(f"--lr {text}: LO:HI needs LO <= HI")
    return slice(rates[0], rates[1])


def _describe(lr: float | slice) -> str | list[float]:
    return f"slice({lr.start:.2e}, {lr.stop:.2e})" if isinstance(lr, slice) else lr


def run_train(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """`lrkit train`: optional frozen epochs, then training; exported model, CSV and plots.

    With a rule and --freeze-epochs, the stages are fine-tune's: a range test before each, and
    slice(hi / --lr-mult, hi) after unfreezing.
    """
    from lrkit.cli_finetune import range_test_name, train_in_stages  # it imports this module

    spec = parse_lr(args.lr)
    if args.freeze_epochs:  # (stage name, epochs, freeze, lr_mult): the head, then every group
        mult = args.lr_mult if isinstance(spec, str) else None
        plan = [
            Stage("frozen", args.freeze_epochs, spec, freeze=True),
            Stage("train", args.epochs, spec, freeze=False, lr_mult=mult),
        ]
    else:
        plan = [Stage("train", args.epochs, spec)]
    outputs = ["metrics.csv", "losses.png", "schedule.png", "model.lrk", "train.json"]
    if isinstance(spec, str):  # a rule: one range-test plot per stage
        outputs += [f"lr_find_{range_test_name(stage)}.png" for stage in plan]
    check_outputs(args.out, outputs)
    options, dls, learn = _setup(args, console)
    done, interrupted, stopped = train_in_stages(args, learn, plan, console)
    stages = [
        {
            "stage": result.name,
            "epochs": result.epochs,
            "lr": _describe(result.lr),
            "range_test_warnings": result.range_test.warnings if result.range_test else [],
        }
        for result in done
    ]

    plots = write_training_plots(learn, args.out)
    model_path = learn.export(args.out / "model.lrk") if trained_any(learn, done) else None
    final = learn.recorder.log[-1] if learn.recorder.log else {}
    record = {
        "stages": stages,
        "final": {
            k: (v if not isinstance(v, float) else finite_or_none(v)) for k, v in final.items()
        },
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


def run_compare(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """`lrkit compare`: one range test, one training run per rule; table, plots, report."""
    rules = tuple(rule.strip() for rule in args.rules.split(",") if rule.strip())
    config = CompareConfig(
        rules=rules,
        epochs=args.epochs,
        schedule=args.schedule,
        num_it=args.num_it,
        start_lr=args.start_lr,
        end_lr=args.end_lr,
    )
    try:
        config.check()
    except ValueError as error:
        raise UsageError(str(error)) from None
    check_outputs(
        args.out, ["lr_find.png", "valid_loss.png", "comparison.json", "report.md", "report.html"]
    )
    options, dls, learn = _setup(args, console)
    try:
        comparison = compare_rules(learn, config)
    except UnusableCurveError as error:
        raise UsageError(
            f"the range test gives no learning rate to compare the rules at ({error.why}): "
            "raise --num-it, widen --start-lr/--end-lr, or use more data"
        ) from None
    except RangeTestInterrupted as stop:  # before any rule trained: the curve so far, marked
        record = {
            "rows": [],
            "best_rule": None,
            "interrupted": True,
            "range_test": stop.partial.to_dict(),
            "data": data_summary(options, dls),
            "seed": args.seed,
            "versions": versions(),
        }
        written = [args.out / "comparison.json"]
        if plot_partial_curve(stop.partial, args.out / "lr_find.png"):
            written.insert(0, args.out / "lr_find.png")
        (args.out / "comparison.json").write_text(json.dumps(json_ready(record), indent=2))
        raise Unfinished(
            f"interrupted (Ctrl-C) in the range test, after {len(stop.partial.lrs)} of "
            f"{args.num_it} steps, before any rule trained; wrote "
            f"{' and '.join(map(str, written))}",
            record,
            EXIT_INTERRUPTED,
        ) from None
    extra = {"data": data_summary(options, dls), "seed": args.seed, "versions": versions()}
    paths = write_comparison(comparison, args.out, extra)
    for note in comparison.range_test.warnings:
        console.print(f"[yellow]warning:[/] range test: {note}", highlight=False)
    console.print(rich_table(rule_table(comparison), "one run per rule, same start"))
    best, verdict = comparison.winner()
    console.print(verdict, highlight=False)
    record = {
        "rows": comparison.rows(),
        "best_rule": best.rule if best else None,
        "verdict": verdict,
        "suggestions": {k: finite_or_none(v) for k, v in comparison.range_test.suggestions.items()},
        "interrupted": comparison.interrupted,
        **extra,
    }
    written = f"{paths['report_md']}, {paths['report_html']} and {paths['json']}"
    if comparison.interrupted:
        done = f"{len(comparison.runs)} of {len(config.rules)} rules"
        raise Unfinished(
            f"interrupted (Ctrl-C) after {done}; wrote {written}", record, EXIT_INTERRUPTED
        )
    console.print(f"wrote {written}")
    return record


def run_summary(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """`lrkit summary`: the learner's modules, layer groups and frozen state."""
    options, dls, learn = _setup(args, console)
    text = learn.summary()
    console.print(text, markup=False, highlight=False)
    trainable = sum(p.numel() for p in learn.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in learn.model.parameters())
    return {
        "summary": text,
        "layer_groups": learn.n_groups,
        "frozen_idx": learn.frozen_idx,
        "parameters": total,
        "trainable_parameters": trainable,
        "data": data_summary(options, dls),
    }


# what decoding a bad image file raises (truncated, not an image, too large, ...)
IMAGE_ERRORS = (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError)


def run_predict(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """`lrkit predict MODEL FILES...`: one label (or label set) per image file. A file that
    cannot be read is named on stderr (and in --json as an error entry); the others are still
    predicted, and the exit code is then 1."""
    instead = not_a_file(args.model)
    if instead is not None:
        what = "" if instead == "does not exist" else ", not a model file"
        raise UsageError(f"model file {args.model} {instead}{what}; export one with lrkit train")
    predictor = load_learner(args.model, trust_pickle=args.trust_pickle)
    rows, failed = [], []
    for name in args.files:
        try:
            instead = not_a_file(name)
            if instead is not None:
                what = "" if instead == "does not exist" else ", not an image file"
                raise FileNotFoundError(f"{instead}{what}")
            prediction = predictor.predict(name)
        except IMAGE_ERRORS as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            reason = reason.removeprefix(f"{name}: ")  # the line names the file once
            print(f"lrkit predict: error: {name}: {reason}", file=sys.stderr)
            rows.append({"file": name, "error": reason})
            failed.append(name)
            continue
        probs = [float(p) for p in prediction.probs]
        rows.append(
            {"file": name, "label": prediction.label, "index": prediction.index, "probs": probs}
        )
        confidence = max(probs) if probs else math.nan
        console.print(f"{name}: {prediction.label}  ({confidence:.3f})")
    record = {"predictions": rows, "failed": failed}
    if failed:
        raise Unfinished(
            f"{len(failed)} of {len(args.files)} files could not be read (named above); "
            "the others were predicted",
            record,
            EXIT_SOME_FAILED,
        )
    return record


def run_demo_command(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """`lrkit demo`: the end-to-end workflow on Fashion-MNIST."""
    config = DemoConfig(
        quick=args.quick, seed=args.seed, data_path=args.data, device=str(pick_device(args.device))
    )
    check_outputs(args.out, ["lr_find.png", "report.md", "report.html", "demo.json"], ["compare"])
    try:
        return run_demo(config, args.out, console)
    except DemoInterrupted as stop:
        written = ", ".join(map(str, stop.written))
        raise Unfinished(
            f"interrupted (Ctrl-C); wrote {written}", stop.summary, EXIT_INTERRUPTED
        ) from None


def main(argv: list[str] | None = None) -> int:
    """Run one `lrkit` command; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help and --version
        return int(stop.code or 0)
    except ArgumentError as error:
        print(f"{error.prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    console = Console(stderr=args.json, highlight=False)
    try:
        if args.out.exists() and not args.out.is_dir():
            raise UsageError(f"--out {args.out} is a file; give a folder for the results")
        result = args.run(args, console)
    except (UsageError, ValueError, OSError, re.error, DownloadError) as error:
        message = speak_flags(str(error), option_names(parser))
        print(f"lrkit {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except Unfinished as stop:  # what was done so far is written and marked
        if args.json:
            print(json.dumps(json_ready(stop.record), default=str, allow_nan=False))
        print(f"lrkit {args.command}: {stop}", file=sys.stderr)
        return stop.code
    except KeyboardInterrupt:  # before the command had anything to write
        if args.json:
            print(json.dumps({"command": args.command, "interrupted": True}))
        print(f"lrkit {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(json_ready(result), default=str, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
