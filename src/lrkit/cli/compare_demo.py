"""`lrkit compare` (one range test, one run per rule) and `lrkit demo` (the whole workflow)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console

from lrkit import suggest
from lrkit.callbacks import Callback
from lrkit.cli.args import (
    EPOCHS,
    EXIT_INTERRUPTED,
    Unfinished,
    UsageError,
    add_data,
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
    pick_device,
    resolved_config,
    setup,
)
from lrkit.compare import CompareConfig, compare_rules, rule_table, write_comparison
from lrkit.demo import DemoConfig, DemoInterrupted, run_demo
from lrkit.finder import RangeTestInterrupted
from lrkit.range_test_result import UnusableCurveError, finite_or_none, json_ready
from lrkit.report import rich_table


def add_command(commands: argparse._SubParsersAction) -> None:
    compare = add_command_to(
        commands,
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


def add_demo_command(commands: argparse._SubParsersAction) -> None:
    demo = add_command_to(
        commands,
        "demo",
        "the whole workflow on real Pets photos, then Fashion-MNIST, offline",
        "Part 1, on the 185 bundled Pets photos and an ImageNet-pretrained efficientnet_lite0: "
        "show_batch, the range test on the frozen body, the rules compared on the head, "
        "fine_tune(base_lr='auto') with the unfrozen curve shown, what the model confuses. "
        "Part 2, on Fashion-MNIST: a range test from scratch and the rules compared. A report "
        "(report.md, report.html) in --out. --quick runs every step smaller.",
    )
    demo.add_argument(
        "--quick", action="store_true", help="smaller subsets, every step shorter (README: times)"
    )
    demo.add_argument(
        "--data", help="folder with the Fashion-MNIST files for part 2 (default: find them)"
    )
    demo.set_defaults(run=run_demo_command)


class EndOfRangeTest(Callback):
    """Stops a heartbeat when the learner's range test returns (compare then trains, and the
    epoch lines take over)."""

    def __init__(self, beat: Heartbeat) -> None:
        self.beat = beat

    def after_lr_find(self, learn: Any, result: Any) -> None:
        self.beat.stop()


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
    options, dls, learn = setup(args, console)
    beat = Heartbeat(console, "range test")  # in a log: a line every few seconds until it ends
    learn.cbs.append(EndOfRangeTest(beat))
    try:
        beat.start()
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
            "config": resolved_config(args),
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
    finally:
        beat.stop()
    extra = {
        "config": resolved_config(args),
        "data": data_summary(options, dls),
        "seed": args.seed,
        "versions": versions(),
    }
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


def run_demo_command(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """`lrkit demo`: the end-to-end workflow, Pets photos then Fashion-MNIST."""
    config = DemoConfig(
        quick=args.quick, seed=args.seed, data_path=args.data, device=str(pick_device(args.device))
    )
    files = ["lr_find.png", "report.md", "report.html", "demo.json", "confusion_matrix.png"]
    pets = ["pets_show_batch.png", "pets_lr_find_frozen.png", "pets_lr_find_unfrozen.png"]
    check_outputs(args.out, files + pets, ["compare", "pets_compare"])
    try:
        return run_demo(config, args.out, console)
    except DemoInterrupted as stop:
        written = ", ".join(map(str, stop.written))
        raise Unfinished(
            f"interrupted (Ctrl-C); wrote {written}", stop.summary, EXIT_INTERRUPTED
        ) from None
