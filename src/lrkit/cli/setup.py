"""What every data command does first: load the data the options describe, pick the
device, build the learner, and say what was built.
"""

from __future__ import annotations

import argparse
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from lrkit import TensorBoardCallback, WandbCallback
from lrkit.callbacks import Callback, ProgressCallback
from lrkit.cli.args import (
    UsageError,
)
from lrkit.cli.output import class_counts, class_lines, left_out_lines
from lrkit.config import DATA
from lrkit.data.dataloaders import DataLoaders
from lrkit.datasets import fashion_mnist, pets
from lrkit.metrics import accuracy_multi, error_rate
from lrkit.stages import LR_MULT
from lrkit.vision import (
    JunkWarning,
    VisionLearner,
    csv_dataloaders,
    image_dataloaders,
    vision_learner,
)

# ------------------------------------------------------------------------------ data and model


@dataclass(frozen=True)
class DataOptions:
    """Which data to load and how; saved beside every result."""

    dataset: str | None = None  # a named dataset, or None for an image folder (`data`)
    data: str | None = None  # the dataset's folder, or the image folder
    label_re: str | None = None
    labels: str | None = None  # CSV of file name, label(s)
    multi_label: bool = False
    valid_pct: float | None = None  # None: the dataset's own split or DATA.valid_pct
    presize: int = DATA.presize
    size: int = DATA.size
    bs: int | None = None  # None: 128 for Fashion-MNIST, DATA.bs for images
    workers: int | None = None
    train_subset: int | None = None  # Fashion-MNIST only: class-balanced subsets
    valid_subset: int | None = None
    seed: int = DATA.seed


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
        "bs": options.bs or DATA.bs,
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
    valid_pct = options.valid_pct if options.valid_pct is not None else DATA.valid_pct
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


def resolved_config(args: argparse.Namespace) -> dict[str, Any]:
    """Every option of the command as it was used: defaults filled in (the arch and the
    pretrained weights by dataset, the device 'auto' resolved), paths as text. Saved in every
    JSON result and given to the experiment logger."""
    skip = {"run", "json", "on_exit"}
    config = {
        key: str(value) if isinstance(value, Path) else value
        for key, value in vars(args).items()
        if key not in skip
    }
    if "arch" in config:
        config["arch"] = resolved_arch(args)
        pretrained = resolved_pretrained(args)
        config["pretrained"] = "none" if pretrained is False else str(pretrained)
    if "lr_mult" in config and config["lr_mult"] is None:
        config["lr_mult"] = LR_MULT
    config["device"] = str(pick_device(args.device))
    return config


def experiment_logger(args: argparse.Namespace) -> Callback | None:
    """The --log backend beside metrics.csv: TensorBoard event files in OUT/tensorboard, or a
    W&B run in OUT/wandb (offline unless WANDB_MODE says otherwise; `wandb sync` uploads it
    later); None for csv. UsageError (one line) when the backend's package is missing."""
    kind = getattr(args, "log", "csv")
    config = resolved_config(args)
    try:
        if kind == "tensorboard":
            return TensorBoardCallback(args.out / "tensorboard", config=config)
        if kind == "wandb":
            return WandbCallback(
                project=os.environ.get("WANDB_PROJECT") or "lrkit",
                mode=os.environ.get("WANDB_MODE") or "offline",
                dir=args.out,
                config=config,
            )
    except ImportError as error:
        raise UsageError(f"--log {kind}: {error}") from None
    return None


def make_learner(
    args: argparse.Namespace,
    dls: DataLoaders,
    console: Console,
    logger: Callback | None = None,
) -> VisionLearner:
    """The learner the model options describe; body frozen when it is pretrained. `logger`
    (an experiment logger) joins its callbacks, so range tests and fits are both logged."""
    arch, pretrained = resolved_arch(args), resolved_pretrained(args)
    precision = {"fp32": None, "bf16": "bf16", "fp16": "fp16"}[args.precision]
    torch.manual_seed(args.seed)
    metrics = [accuracy_multi] if dls.multi_label else [error_rate]
    learn = vision_learner(
        dls,
        arch,
        pretrained=pretrained,
        metrics=metrics,
        device=pick_device(args.device),
        mixed_precision=precision,
        progress=False,
        cbs=[
            ProgressCallback(console),
            *([logger] if logger is not None else []),
        ],  # on stderr under --json: stdout stays pure JSON
    )
    # our ProgressCallback draws the fits; range tests run anywhere (compare's too) draw
    # their own bar where stderr is a terminal
    learn.show_progress = console.is_terminal
    return learn


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


def setup(args: argparse.Namespace, console: Console) -> tuple[DataOptions, Any, VisionLearner]:
    """Load the data and build the learner `args` describe; print what was built: the model,
    the data's sizes, the classes with their counts (and a warning for any class too small),
    and the left-out files as one line per reason."""
    options = _data_options(args)
    args.dataset = options.dataset
    pick_device(args.device)  # a bad --device is found before the data is loaded
    logger = experiment_logger(args)  # and a missing logging package too
    if logger is not None:
        args.on_exit = [*getattr(args, "on_exit", []), logger.close]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", JunkWarning)
        try:
            dls = load_data(options)
        finally:  # the left-out files, one line per reason; above the error when it fails
            for warning in caught:
                for line in left_out_lines(str(warning.message), {"label_re": "--label-re"}):
                    console.print(f"[yellow]warning:[/] {escape(line)}")
    learn = make_learner(args, dls, console, logger)
    console.print(
        f"{learn.model.__class__.__name__} ({resolved_arch(args)}) on "
        f"{options.dataset or options.data}: {dls.n_train} train / {dls.n_valid} valid items, "
        f"{dls.c} classes, {learn.n_groups} layer groups, device {learn.device}"
    )
    counts = class_counts(dls)
    if counts:
        lines, few = class_lines(counts)
        for line in lines:
            console.print(line, markup=False)
        for line in few:
            console.print(f"[yellow]warning:[/] {escape(line)}")
    return options, dls, learn
