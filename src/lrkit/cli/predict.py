"""`lrkit predict MODEL FILES...`: labels for image files from an exported model."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from PIL import Image
from rich.console import Console

from lrkit.cli.args import (
    EXIT_SOME_FAILED,
    Unfinished,
    UsageError,
    not_a_file,
)
from lrkit.cli.args import (
    add_command as add_command_to,
)
from lrkit.vision import load_learner


def add_command(commands: argparse._SubParsersAction) -> None:
    predict = add_command_to(commands, "predict", "labels for image files from an exported model")
    predict.add_argument("model", help="a file written by lrkit train (model.lrk)")
    predict.add_argument("files", nargs="+", help="image files")
    predict.add_argument(
        "--trust-pickle",
        action="store_true",
        help="run code the model file names (a pickled model, or a model builder lrkit does "
        "not know); only for files you trust",
    )
    predict.set_defaults(run=run_predict)


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
