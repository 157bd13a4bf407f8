"""What the commands write beside their results: versions, the data summary, the plots of
what was trained, and the list of files written.
"""

from __future__ import annotations

import argparse
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

import lrkit
from lrkit.cli.interpretation import interpret
from lrkit.cli.setup import DataOptions
from lrkit.data.dataloaders import DataLoaders
from lrkit.range_test_result import LRFindResult
from lrkit.vision.learner import VisionLearner


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


def finish_training(
    args: argparse.Namespace,
    learn: VisionLearner,
    done: list,
    cut_short: bool,
    console: Console,
) -> tuple[Path | None, list[str], dict[str, Any] | None]:
    """After a training command's stages: the loss and schedule plots, the interpretation
    (when the stages ran to their end: not after Ctrl-C, a stop or divergence), then the
    export (multi-label: with the threshold the interpretation chose). Returns (the model
    file or None when nothing trained, the names of the figures written, the interpretation
    record or None)."""
    plots = write_training_plots(learn, args.out)
    interpretation = None
    if done and not cut_short and not learn.diverged and not learn.interrupted:
        interpretation = interpret(learn, args.out, console)
        plots += interpretation.pop("written")
    model_path = learn.export(args.out / "model.lrk") if trained_any(learn, done) else None
    return model_path, plots, interpretation
