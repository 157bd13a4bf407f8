"""`lrkit predict MODEL FILES...`: labels for image files from an exported model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from PIL import Image
from rich.console import Console

from lrkit.cli.args import (
    EXIT_SOME_FAILED,
    FRACTION,
    Unfinished,
    UsageError,
    not_a_file,
)
from lrkit.cli.args import (
    add_command as add_command_to,
)
from lrkit.cli.output import machine_line
from lrkit.cli.setup import pick_device
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
    predict.add_argument(
        "--thresh",
        type=FRACTION,
        help="multi-label: a label is predicted when its probability is above this "
        "(default: the threshold chosen at training, stored in the model file)",
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
    device = pick_device(args.device)
    predictor = load_learner(args.model, device=device, trust_pickle=args.trust_pickle)
    if args.thresh is not None:
        if not predictor.multi_label:
            raise UsageError(
                f"--thresh is for multi-label models; {args.model} predicts one label per image"
            )
        predictor.thresh = args.thresh
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
        names = predictor.vocab or [str(i) for i in range(len(probs))]
        rows.append(
            {
                "file": name,
                "label": prediction.label,
                "index": prediction.index,
                "probs": probs,
                "probabilities": dict(zip(names, probs, strict=True)),
            }
        )
        line = f"{name}\t{prediction_text(prediction.index, probs, names, predictor)}"
        if args.json:  # stdout holds the JSON: the lines go with the other human output
            console.print(line, markup=False, soft_wrap=True)
        else:
            machine_line(line)
    record = {"predictions": rows, "failed": failed}
    if predictor.multi_label:
        record["thresh"] = predictor.thresh
    if failed:
        raise Unfinished(
            f"{len(failed)} of {len(args.files)} files could not be read (named above); "
            "the others were predicted",
            record,
            EXIT_SOME_FAILED,
        )
    return record


def prediction_text(index: Any, probs: list[float], names: list[str], predictor: Any) -> str:
    """What follows the file name on a prediction line: `cat (0.912)`; multi-label, each
    predicted label with its own probability, `cat (0.912), dog (0.760)`, or what was
    closest when no label clears the threshold."""
    if not predictor.multi_label:
        return f"{names[index]} ({probs[index]:.3f})"
    if index:
        return ", ".join(f"{names[i]} ({probs[i]:.3f})" for i in index)
    best = max(range(len(probs)), key=probs.__getitem__)
    return f"(no label above {predictor.thresh:g}; highest: {names[best]} ({probs[best]:.3f}))"
