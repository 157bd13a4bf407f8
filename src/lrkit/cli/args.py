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
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from lrkit import suggest
from lrkit.config import DATA, RANGE_TEST

DATASETS = ("fashion-mnist", "pets")


EXIT_SOME_FAILED = 1  # lrkit predict: some files could not be read, the others were predicted
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


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


class Unfinished(Exception):
    """A command did part of its work: `record` is what it did (written, and printed under
    --json), `code` the exit code: EXIT_INTERRUPTED after Ctrl-C, EXIT_SOME_FAILED when some
    inputs could not be used."""

    def __init__(self, message: str, record: dict[str, Any], code: int) -> None:
        super().__init__(message)
        self.record, self.code = record, code


# ------------------------------------------------------------------------------ value types

_INTEGER = re.compile(r"[+-]?[0-9]+")  # plain ASCII decimal: no '1_0', ' 5', '0x10', '١٢'
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")  # 1e-3, .5, 2.
_LONGEST = 40  # characters: any longer number is out of every range below


@dataclass(frozen=True)
class Range:
    """A numeric option's type: plain ASCII decimal text (floats: also 1e-3; never nan or inf)
    within [lo, hi] (`open_lo`/`open_hi`: the bound itself excluded). Calling it parses the text
    or raises argparse.ArgumentTypeError saying the allowed range."""

    kind: type
    lo: float
    hi: float
    open_lo: bool = False
    open_hi: bool = False

    def describe(self) -> str:
        if self.kind is int:
            return f"an integer in {self.lo}..{self.hi}"
        left, right = "(" if self.open_lo else "[", ")" if self.open_hi else "]"
        return f"a number in {left}{self.lo:g}, {self.hi:g}{right}"

    def __call__(self, text: str) -> Any:
        syntax = _INTEGER if self.kind is int else _DECIMAL
        value = None
        if len(text) <= _LONGEST and syntax.fullmatch(text):
            value = self.kind(text)
        if (
            value is None
            or not math.isfinite(value)
            or value < self.lo
            or value > self.hi
            or (self.open_lo and value == self.lo)
            or (self.open_hi and value == self.hi)
        ):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        return value


# Every numeric option's range, stated once (help texts and errors quote them).
MAX_WORKERS = 4 * os.cpu_count() if os.cpu_count() else 64  # loader processes
SEED = Range(int, 0, 2**32 - 1)  # what numpy's and torch's generators take
WORKERS = Range(int, 0, MAX_WORKERS)
PIXELS = Range(int, 8, 8192)  # --size, --presize
BATCH = Range(int, 1, 65536)  # --bs
EPOCHS = Range(int, 1, 10_000)
HEAD_EPOCHS = Range(int, 0, 10_000)  # --freeze-epochs
STEPS = Range(int, 1, 100_000)  # --num-it
REPEATS = Range(int, 1, 100)
SUBSET = Range(int, 1, 10_000_000)  # --train-subset, --valid-subset
LEARNING_RATE = Range(float, 1e-12, 1e4)  # --start-lr, --end-lr, --lr
DIV_THRESH = Range(float, 1, 1000, open_lo=True)
FRACTION = Range(float, 0, 1, open_lo=True, open_hi=True)  # --valid-pct
LR_MULTIPLIER = Range(float, 1, 1e6)  # --lr-mult


# ------------------------------------------------------------------------------ option groups


def add_command(
    commands: argparse._SubParsersAction, name: str, summary: str, description: str = ""
) -> argparse.ArgumentParser:
    """A subcommand with the options every command has (--out, --json, --seed, --device)."""
    sub = commands.add_parser(name, help=summary, description=description)
    add_common(sub)
    return sub


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("lrkit-out"), help="output folder")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument(
        "--seed", type=SEED, default=DATA.seed, help="seed for weights and data order"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")


def add_data(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", choices=DATASETS, help="a named dataset")
    group.add_argument("--data", help="the dataset's folder, or a folder of your images")
    group.add_argument("--label-re", help="regex whose first group is the label of a file name")
    group.add_argument("--labels", help="CSV: file name, label(s)")
    group.add_argument("--multi-label", action="store_true", help="space-separated labels")
    group.add_argument("--valid-pct", type=FRACTION, help="random validation share")
    group.add_argument("--presize", type=PIXELS, default=DATA.presize, help="short side, pixels")
    group.add_argument("--size", type=PIXELS, default=DATA.size, help="training size, pixels")
    group.add_argument("--bs", type=BATCH, help="batch size")
    group.add_argument("--workers", type=WORKERS, help="loader worker processes")
    group.add_argument("--train-subset", type=SUBSET, help="Fashion-MNIST: train items")
    group.add_argument("--valid-subset", type=SUBSET, help="Fashion-MNIST: valid items")


def add_model(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--arch",
        help="resnet_small, resnet18..resnet152, efficientnet_lite0..4, timm:NAME or "
        "torchvision:NAME where installed (default by dataset)",
    )
    group.add_argument("--pretrained", help="PATH, imagenet or none (default by arch)")
    group.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")


LOGGERS = ("csv", "tensorboard", "wandb")


def add_logging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log",
        choices=LOGGERS,
        default="csv",
        help="where the run is logged besides metrics.csv: tensorboard (OUT/tensorboard) or "
        "wandb (an offline run in OUT/wandb unless WANDB_MODE says otherwise); csv: nothing else",
    )


def add_range_test(parser: argparse.ArgumentParser, per_stage: bool = False) -> None:
    """--num-it, --start-lr, --end-lr. `per_stage`: None unless given, so that each stage's range
    test keeps its own settings (`lrkit.stages.merge_test_options`)."""
    group = parser.add_argument_group("range test")
    for flag, kind, default, what in (
        ("--num-it", STEPS, RANGE_TEST.num_it, "optimizer steps"),
        ("--start-lr", LEARNING_RATE, RANGE_TEST.start_lr, "the sweep's first learning rate"),
        ("--end-lr", LEARNING_RATE, RANGE_TEST.end_lr, "the rate it would reach at --num-it"),
    ):
        own = f" (default: each stage's own, else {default:g})" if per_stage else f" ({default:g})"
        group.add_argument(flag, type=kind, default=None if per_stage else default, help=what + own)


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


def not_a_file(path: str | Path) -> str | None:
    """None when `path` is a regular file (or a link to one); otherwise what it is instead, as
    words that follow the path in an error: 'does not exist', 'is a directory', 'is a named pipe
    (FIFO)', 'is a socket', 'is a device', 'is a link to a missing file'."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "is a link to a missing file" if os.path.islink(path) else "does not exist"
    except NotADirectoryError:
        return "does not exist"
    except OSError as error:
        return f"cannot be examined ({error.strerror or error})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "is a socket"
    return "is a device"


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
