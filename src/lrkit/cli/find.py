"""`lrkit find`: the range test; a table of the suggestions, lr_find.png and lr_find.json."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from rich.console import Console
from rich.table import Table

from lrkit import suggest
from lrkit.cli.args import (
    DIV_THRESH,
    EXIT_INTERRUPTED,
    REPEATS,
    Unfinished,
    add_data,
    add_logging,
    add_model,
    add_range_test,
    check_outputs,
)
from lrkit.cli.args import (
    add_command as add_command_to,
)
from lrkit.cli.output import Heartbeat
from lrkit.cli.results import (
    data_summary,
    plot_partial_curve,
    versions,
)
from lrkit.cli.setup import (
    resolved_config,
    setup,
)
from lrkit.config import RANGE_TEST
from lrkit.finder import RangeTestInterrupted
from lrkit.range_test_result import finite_or_none, json_ready
from lrkit.report import rich_table


def add_command(commands: argparse._SubParsersAction) -> None:
    find = add_command_to(
        commands,
        "find",
        "range test; prints the suggestions, writes the plot",
        "Run the learning-rate range test and print every rule's suggestion. "
        "Writes lr_find.png and lr_find.json into --out.",
    )
    add_data(find)
    add_model(find)
    add_range_test(find)
    add_logging(find)
    find.add_argument("--mode", choices=("exp", "linear"), default=RANGE_TEST.mode)
    find.add_argument(
        "--div-thresh",
        type=DIV_THRESH,
        default=RANGE_TEST.div_thresh,
        help="stop when the loss rises (x - 1) times its fall (or its noise) above the best",
    )
    find.add_argument("--val", action="store_true", help="measure the loss on validation batches")
    find.add_argument("--repeats", type=REPEATS, default=1, help="runs on other data orders")
    find.set_defaults(run=run_find)


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
    options, dls, learn = setup(args, console)
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
        with Heartbeat(console, "range test"):  # in a log: a line every few seconds
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
        record["config"] = {**resolved_config(args), **record.get("config", {})}
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
    # the command's options, defaults resolved, beside the range test's own settings
    record["config"] = {**resolved_config(args), **record.get("config", {})}
    record["model"] = {
        "arch": record["config"]["arch"],
        "groups": learn.n_groups,
        "frozen_idx": learn.frozen_idx,
    }
    record["versions"] = versions()
    (args.out / "lr_find.json").write_text(json.dumps(record, indent=2))
    console.print(table)
    for note in found.warnings:
        console.print(f"[yellow]warning:[/] {note}")
    console.print(f"wrote {args.out / 'lr_find.png'} and {args.out / 'lr_find.json'}")
    return record
