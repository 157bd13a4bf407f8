"""The `lrkit` command's arguments: value types, option groups, one-line errors, output checks.

Every bad value is reported in one line that names the flag (`--valid-pct must be a number in
(0, 1), got '1.5'`), never argparse's usage block. Library errors name Python arguments
(`label_re`, `num_it=5`); `speak_flags` rewrites them in the command line's terms.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

DATASETS = ("fashion-mnist", "pets")


class UsageError(Exception):
    """A problem with what the user asked for: reported in one line, exit code 2."""


class ArgumentError(UsageError):
    """argparse refused the command line; `prog` is the (sub)command it was parsing."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised, not printed with the usage)."""

    def error(self, message: str) -> NoReturn:
        # argparse says "argument --valid-pct: must be ..."; the flag starts the line instead
        flag = re.match(r"argument (\S+): (.*)", message, flags=re.DOTALL)
        if flag is not None:
            name, reason = flag.groups()
            message = f"{name} {reason}" if reason.startswith("must") else f"{name}: {reason}"
        one_line = " ".join(message.split())
        raise ArgumentError(self.prog, f"{one_line} (see {self.prog} --help)")


# ------------------------------------------------------------------------------ value types


def _number(text: str, kind: type, wanted: str) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
    return value


def integer(text: str) -> int:
    return int(_number(text, int, "an integer"))


def positive_int(text: str) -> int:
    value = int(_number(text, int, "a positive integer"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = int(_number(text, int, "an integer >= 0"))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = float(_number(text, float, "a positive number"))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def above_one(text: str) -> float:
    value = float(_number(text, float, "a number > 1"))
    if value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number > 1, got {text!r}")
    return value


def fraction(text: str) -> float:
    value = float(_number(text, float, "a number in (0, 1)"))
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}")
    return value


# ------------------------------------------------------------------------------ option groups


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("lrkit-out"), help="output folder")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--seed", type=integer, default=0, help="seed for weights and data order")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")


def add_data(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", choices=DATASETS, help="a named dataset")
    group.add_argument("--data", help="the dataset's folder, or a folder of your images")
    group.add_argument("--label-re", help="regex whose first group is the label of a file name")
    group.add_argument("--labels", help="CSV: file name, label(s)")
    group.add_argument("--multi-label", action="store_true", help="space-separated labels")
    group.add_argument("--valid-pct", type=fraction, help="random validation share")
    group.add_argument("--presize", type=positive_int, default=460, help="short side, pixels")
    group.add_argument("--size", type=positive_int, default=224, help="training size, pixels")
    group.add_argument("--bs", type=positive_int, help="batch size")
    group.add_argument("--workers", type=non_negative_int, help="loader worker processes")
    group.add_argument("--train-subset", type=positive_int, help="Fashion-MNIST: train items")
    group.add_argument("--valid-subset", type=positive_int, help="Fashion-MNIST: valid items")


def add_model(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--arch",
        help="resnet_small, resnet18..resnet152, efficientnet_lite0..4, timm:NAME or "
        "torchvision:NAME where installed (default by dataset)",
    )
    group.add_argument("--pretrained", help="PATH, imagenet or none (default by arch)")
    group.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")


def add_range_test(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("range test")
    group.add_argument("--num-it", type=positive_int, default=100, help="optimizer steps")
    group.add_argument("--start-lr", type=positive_float, default=1e-7)
    group.add_argument("--end-lr", type=positive_float, default=10.0)


# ------------------------------------------------------------------------------ library errors

# Library arguments whose command-line flag has another name (or none but this wording).
ALIASES = {
    "call load_learner(path, trust_pickle=True)": "pass --trust-pickle",
    "path=None": "no --data",
    "path=": "--data",
    "split='random'": "--valid-pct",
    "use_valid": "--val",
    "num_workers": "--workers",
    "mixed_precision": "--precision",
}
_EDGE_BEFORE, _EDGE_AFTER = r"(?<![\w/.\-])", r"(?![\w/\-])"  # not inside a path or a flag


def option_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Python name -> flag for every long option of the parser and its subcommands."""
    names: dict[str, str] = {}
    for action in parser._actions:  # argparse keeps no public list of its options
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                names.update(option_names(sub))
        for flag in action.option_strings:
            if flag.startswith("--") and flag not in ("--help", "--version"):
                names[action.dest] = flag
    return names


def speak_flags(message: str, flags: dict[str, str]) -> str:
    """A library message in the command line's terms: `num_it=5` -> `--num-it=5`, `label_re`
    -> `--label-re`, `multi_label=True` -> `--multi-label`. Names without an underscore are
    rewritten only as `name=` (a bare `size` or `data` is too often an ordinary word)."""
    for name, flag in ALIASES.items():
        message = re.sub(_EDGE_BEFORE + re.escape(name), flag, message)
    for name, flag in flags.items():
        message = re.sub(_EDGE_BEFORE + re.escape(name) + r"=True\b", flag, message)
        message = re.sub(_EDGE_BEFORE + re.escape(name) + "=", flag + "=", message)
        if "_" in name:
            message = re.sub(_EDGE_BEFORE + re.escape(name) + _EDGE_AFTER, flag, message)
    return message


# ------------------------------------------------------------------------------ outputs


def check_outputs(folder: Path, files: Sequence[str], folders: Sequence[str] = ()) -> None:
    """Create `folder` and make sure every output the command will write there can be written,
    before any work starts (so no training is lost to a bad --out at the end).

    Raises UsageError naming the path when the folder cannot be created, nothing can be
    written in it, an output file's name is taken by a folder (or a read-only file), or an
    output folder's name by a file.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"--out {folder} cannot be created ({error.strerror or error}); choose another --out"
        ) from None
    try:  # as root, permission bits say little: try it
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lrkit-write-test-"):
            pass
    except OSError as error:
        raise UsageError(
            f"--out {folder} is not writable ({error.strerror or error}); choose another --out"
        ) from None
    for name in files:
        path = folder / name
        if path.is_dir():
            raise UsageError(
                f"--out {folder} holds a folder named {name}, where lrkit writes its {name} "
                "file; move it away or choose another --out"
            )
        if path.exists() and not os.access(path, os.W_OK):
            raise UsageError(f"{path} is read-only; move it away or choose another --out")
    for name in folders:
        if (folder / name).exists() and not (folder / name).is_dir():
            raise UsageError(
                f"--out {folder} holds a file named {name}, where lrkit writes a folder; move "
                "it away or choose another --out"
            )
