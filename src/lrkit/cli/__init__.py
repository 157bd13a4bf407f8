"""The `lrkit` command. Thin: parse arguments, build data and learner, call the library, report.

`main(argv)` returns the exit code, so tests call it in-process. Human output goes to stdout,
or to stderr when `--json` puts one JSON object on stdout. A bad argument or path gets one
line on stderr and exit code 2, never a traceback; every output is checked writable before any
work. `lrkit predict` names each file it cannot read, predicts the others and exits 1.
Ctrl-C stops the whole command (not only the fit it lands in): what was done so far is
written, marked `"interrupted": true`, and the exit code is 130.

One module per subcommand group, each with `add_command(commands)` (its options) and its
`run_*(args, console)` (parse, call the library, print): `find`, `train`, `finetune`,
`compare_demo`, `summary`, `predict`. What they share: `args` (option types, one-line errors,
exit codes), `setup` (data, learner, --log, the resolved config), `results` (files written
beside a result), `interpretation` (what train and fine-tune say about the model), `output`
(the console, machine lines, the class list and left-out files after loading).
"""

from __future__ import annotations

import argparse
import json
import re
import sys

import lrkit
from lrkit.cli import compare_demo, find, finetune, predict, summary, train
from lrkit.cli.args import (
    EXIT_INTERRUPTED,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    ArgumentError,
    Parser,
    Unfinished,
    UsageError,
    option_names,
    speak_flags,
)
from lrkit.cli.output import make_console
from lrkit.fetch import DownloadError
from lrkit.malloc import tune_malloc
from lrkit.range_test_result import json_ready

__all__ = ["EXIT_INTERRUPTED", "EXIT_SOME_FAILED", "EXIT_USAGE", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The `lrkit` parser: one subcommand per module, in the order `lrkit --help` lists them."""
    parser = Parser(
        prog="lrkit", description="Learning-rate range tests and fine-tuning for PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"lrkit {lrkit.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (find, train, finetune, compare_demo, summary, predict):
        module.add_command(commands)
    compare_demo.add_demo_command(commands)
    return parser


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
    tune_malloc()  # training on the CPU: keep freed memory for the next step (lrkit.malloc)
    console = make_console(stderr=args.json)
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
    finally:  # an experiment logger's run is finished, whatever happened
        for close in getattr(args, "on_exit", []):
            close()
    if args.json:
        print(json.dumps(json_ready(result), default=str, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
