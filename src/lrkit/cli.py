"""The `lrkit` command. Thin: parse arguments, build data and model, call the library, report.

`main(argv)` returns the exit code, so tests call it in-process. Human output goes to stdout,
or to stderr when `--json` puts one JSON object on stdout. A bad argument or path gets one
line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import lrkit
from lrkit.data.dataloaders import DataLoaders
from lrkit.data.download import DownloadError
from lrkit.datasets import fashion_mnist
from lrkit.models import simple_cnn
from lrkit.range_test_result import finite_or_none

EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with what the user asked for: reported in one line, exit code 2."""


@dataclass(frozen=True)
class DataOptions:
    """Which data to load and how; saved beside every result."""

    dataset: str = "fashion-mnist"
    data_path: str | None = None
    bs: int = 128
    train_subset: int | None = None
    valid_subset: int | None = None
    seed: int = 0


def load_data(options: DataOptions) -> DataLoaders:
    """The DataLoaders the options describe."""
    if options.dataset == "fashion-mnist":
        return fashion_mnist(
            options.data_path,
            bs=options.bs,
            train_subset=options.train_subset,
            valid_subset=options.valid_subset,
            seed=options.seed,
        )
    raise UsageError(f"unknown dataset {options.dataset!r}; choose one of {list(DATASETS)}")


DATASETS = ("fashion-mnist",)
ARCHS = {"simple_cnn": simple_cnn}


def build_model(arch: str, num_classes: int) -> nn.Module:
    """A fresh model of the named architecture for `num_classes` outputs."""
    if arch not in ARCHS:
        raise UsageError(f"unknown --arch {arch!r}; choose one of {sorted(ARCHS)}")
    return ARCHS[arch](num_classes=num_classes)


def pick_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UsageError(f"--device {name!r} is not a device torch knows: {error}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but torch sees no CUDA GPU here")
    return device


def versions() -> dict[str, str]:
    """Versions that decide whether a result can be reproduced."""
    return {
        "lrkit": lrkit.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("lrkit-out"), help="output folder")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and data order")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--dataset", default="fashion-mnist", choices=DATASETS)
    parser.add_argument("--data-path", help="folder with the dataset's files (default: find it)")
    parser.add_argument("--bs", type=_positive_int, default=128, help="batch size")
    parser.add_argument("--train-subset", type=_positive_int, help="class-balanced train subset")
    parser.add_argument("--valid-subset", type=_positive_int, help="class-balanced valid subset")
    parser.add_argument("--arch", default="simple_cnn", help=f"one of {sorted(ARCHS)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrkit", description="Learning-rate range tests and fine-tuning for PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"lrkit {lrkit.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    find = commands.add_parser(
        "find",
        help="range test on a dataset + model; prints suggestions, writes the plot",
        description="Run the learning-rate range test and print every rule's suggestion. "
        "Writes lr_find.png and lr_find.json into --out.",
    )
    _add_common(find)
    find.add_argument("--start-lr", type=_positive_float, default=1e-7)
    find.add_argument("--end-lr", type=_positive_float, default=10.0)
    find.add_argument("--num-it", type=_positive_int, default=100, help="optimizer steps")
    find.add_argument("--mode", choices=("exp", "linear"), default="exp")
    find.add_argument("--div-thresh", type=float, default=4.0, help="stop at this x best loss")
    find.add_argument("--val", action="store_true", help="measure the loss on validation batches")
    find.add_argument(
        "--repeats", type=_positive_int, default=1, help="runs on different data orders (spread)"
    )
    find.set_defaults(run=run_find)
    return parser


def run_find(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """`lrkit find`: the range test on fresh weights; table on screen, plot and JSON on disk."""
    data_options = DataOptions(
        dataset=args.dataset,
        data_path=args.data_path,
        bs=args.bs,
        train_subset=args.train_subset,
        valid_subset=args.valid_subset,
        seed=args.seed,
    )
    device = pick_device(args.device)
    dls = load_data(data_options)
    torch.manual_seed(args.seed)
    model = build_model(args.arch, dls.c or 10).to(device)
    console.print(
        f"range test: {args.arch} on {args.dataset} ({dls.n_train} train items, bs {args.bs}), "
        f"{args.num_it} steps {args.start_lr:g} -> {args.end_lr:g}, device {device}"
    )
    settings = dict(
        start_lr=args.start_lr,
        end_lr=args.end_lr,
        num_it=args.num_it,
        mode=args.mode,
        div_thresh=args.div_thresh,
        val_loader=dls.valid if args.val else None,
        device=device,
        progress=console.is_terminal,
    )
    loss_fn = nn.functional.cross_entropy
    if args.repeats > 1:
        found = lrkit.lr_find_repeated(model, dls.train, loss_fn, repeats=args.repeats, **settings)
        first = found.runs[0]
        record = {
            **first.to_dict(),
            "suggestions": {k: finite_or_none(v) for k, v in found.suggestions.items()},
            "spread_decades": {k: finite_or_none(v) for k, v in found.spread.items()},
            "warnings": found.warnings,
            "runs": [run.to_dict() for run in found.runs],
        }
        title = f"median suggestions of {args.repeats} runs"
    else:
        found = first = lrkit.lr_find(model, dls.train, loss_fn, **settings)
        record = found.to_dict()
        title = f"suggestions ({first.stop_reason} after {len(first.lrs)} steps)"
    args.out.mkdir(parents=True, exist_ok=True)
    found.plot(args.out / "lr_find.png")
    record["data"] = {**asdict(data_options), "n_train": dls.n_train, "n_valid": dls.n_valid}
    record["model"] = {"arch": args.arch, "device": str(device)}
    record["versions"] = versions()
    (args.out / "lr_find.json").write_text(json.dumps(record, indent=2))

    table = Table(title=title)
    table.add_column("rule")
    table.add_column("learning rate", justify="right")
    if args.repeats > 1:
        table.add_column("spread (decades)", justify="right")
    for name, lr in found.suggestions.items():
        row = [f"auto (= {lrkit.suggest.AUTO_RULE})" if name == "auto" else name]
        row.append(f"{lr:.2e}" if math.isfinite(lr) else "n/a (curve too short)")
        if args.repeats > 1:
            row.append(f"{found.spread[name]:.2f}")
        table.add_row(*row)
    console.print(table)
    for note in found.warnings:
        console.print(f"[yellow]warning:[/] {note}")
    console.print(f"wrote {args.out / 'lr_find.png'} and {args.out / 'lr_find.json'}")
    return record


def main(argv: list[str] | None = None) -> int:
    """Run one `lrkit` command; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse has printed its one-line message
        return int(stop.code or 0)
    console = Console(stderr=args.json, highlight=False)
    try:
        result = args.run(args, console)
    except (UsageError, ValueError, FileNotFoundError, DownloadError) as error:
        print(f"lrkit {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"lrkit {args.command}: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
