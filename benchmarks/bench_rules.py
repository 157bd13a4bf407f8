"""Which suggestion rule leads to the lowest error? Regret of every rule against an lr grid.

For each task a grid of learning rates is trained with `--seeds` training seeds (seed = weight
init and data order); the grid lr with the lowest mean validation error is the reference.
Then `--range-tests` range tests (each on a fresh model with its own seed and data order) give
every rule's suggestion, and each suggestion is trained with the same training seeds. A rule's
regret on one range test is the mean error (over the seeds) at its lr minus the best grid
mean error, in points of error rate. Runs at an equal lr and seed are trained once and shared
(the range test's lrs sit on one exponential sweep, so rules and range tests often agree).

Tasks (real Fashion-MNIST data, from `lrkit.demo.demo_arrays`):
- fashion-cnn: `lrkit.models.simple_cnn` from scratch, fit_one_cycle on a subset;
- fashion-mlp: flatten -> 256 -> 10 MLP from scratch, fit_one_cycle on the same subset;
- transfer: the demo's body pretrained on classes 0-4 (`lrkit.demo.pretrained_body`, cached),
  frozen, and a new head trained for classes 5-9 on a few hundred images.

A run counts as diverged, as in `lrkit.compare`, when training stopped on a non-finite loss or
gradient, a final loss is not finite, or the final training loss is above the untrained loss
(here: the run's own first-batch loss, taken before any step). Diverged runs keep their error
(the model as training left it) in the regret. Errors are reproducible run to run for one
`--threads` value; the default of one thread keeps a shared 2-core machine from thrashing.

    .venv/bin/python benchmarks/bench_rules.py [--range-tests 5] [--seeds 3]
        [--tasks fashion-cnn,fashion-mlp,transfer] [--quick] [--threads 1] [--out FILE]

Prints per task the grid and per rule: median suggested lr, median distance in decades from
the best grid lr, mean and worst regret, range tests whose regret is above 5 points, diverged
runs; then mean regret per rule over tasks. `auto` on a curve it finds unusable gives no lr
(counted under "no lr"). benchmarks/rule_study.py is the wider study behind `auto`.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

import lrkit
from lrkit import Learner, LRFindResult, error_rate, suggest, vision_learner
from lrkit.compare import divergence
from lrkit.data.fashion import CLASSES, array_dataloaders
from lrkit.data.subset import balanced_subset
from lrkit.demo import DemoConfig, demo_arrays, demo_network, pretrained_body
from lrkit.models import simple_cnn
from lrkit.range_test_result import json_ready

TASKS = ("fashion-cnn", "fashion-mlp", "transfer")
Split = tuple[np.ndarray, np.ndarray]  # uint8 images (N, 28, 28), int64 labels (N,)


def log_grid(lo: float, hi: float, n: int) -> tuple[float, ...]:
    """`n` log-spaced learning rates from `lo` to `hi`, both included."""
    return tuple(float(lr) for lr in np.geomspace(lo, hi, n))


@dataclass(frozen=True)
class BenchConfig:
    """Everything the measurement depends on; saved with the raw results."""

    tasks: tuple[str, ...] = TASKS
    range_tests: int = 5  # range tests per task, each on its own seed and data order
    seeds: int = 3  # training seeds per lr (0..seeds-1), shared by grid and rules
    range_test_seed: int = 100  # range test r runs with seed range_test_seed + r
    grid: tuple[float, ...] = log_grid(1e-4, 1.0, 9)  # half-decade steps
    num_it: int = 100  # range-test steps (sweep 1e-7 -> 10, lrkit's defaults)
    bs: int = 64
    n_train: int = 4000  # fashion-cnn / fashion-mlp: class-balanced, all 10 classes
    n_valid: int = 2000  # from the test split
    cnn_epochs: int = 2
    mlp_epochs: int = 2
    mlp_hidden: int = 256
    transfer_train: int = 500  # labelled images of classes 5-9 for the new head
    transfer_valid: int = 1000
    head_epochs: int = 4
    quick_body: bool = True  # the demo's --quick body (4000 images, 2 epochs; cached)
    threads: int = 1  # torch intra-op threads
    data_path: str | None = None  # Fashion-MNIST folder; None: Debian package, cache or bundled

    def quick(self) -> BenchConfig:
        """A ~1-minute smoke run: 2 range tests, 1 seed, a decade grid, less data and epochs."""
        return replace(
            self,
            range_tests=2,
            seeds=1,
            grid=log_grid(1e-4, 1.0, 5),
            n_train=2000,
            n_valid=1000,
            cnn_epochs=1,
            head_epochs=2,
        )


@dataclass(frozen=True)
class Task:
    """A training recipe: `make(seed)` builds a seeded learner; fit_one_cycle for `epochs`."""

    name: str
    description: str
    make: Callable[[int], Learner]
    epochs: int


@dataclass
class Run:
    """One training run at one lr and seed, and how it ended."""

    lr: float
    seed: int
    error: float  # validation error rate in [0, 1] of the final model
    valid_loss: float | None
    train_loss: float | None  # mean over the last epoch; None when it stopped mid-epoch
    untrained_loss: float | None  # the first batch's loss, before any step
    diverged: bool
    note: str
    seconds: float


@dataclass
class TaskResult:
    """The grid, the range tests' suggestions and every run of one task."""

    task: str
    description: str
    grid: list[float]
    range_tests: list[dict[str, Any]] = field(default_factory=list)
    runs: dict[tuple[str, int], Run] = field(default_factory=dict)  # (lr key, seed) -> run

    def run(self, lr: float, seed: int) -> Run:
        """The run at `lr` (to 10 significant digits) and `seed`."""
        return self.runs[(lr_key(lr), seed)]


def lr_key(lr: float) -> str:
    """A cache key for an lr: equal to 10 significant digits means the same run."""
    return f"{lr:.10g}"


# ---------------------------------------------------------------- tasks


def class_subset(
    arrays: dict[str, np.ndarray], split: str, n: int, classes: range, seed: int
) -> Split:
    """A class-balanced subset of `split` restricted to `classes`, labels renumbered from 0."""
    x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
    inside = np.flatnonzero(np.isin(y, list(classes)))
    keep = inside[balanced_subset(y[inside], min(n, len(inside)), seed)]
    return x[keep], (y[keep] - classes.start).astype(np.int64)


def make_tasks(
    config: BenchConfig, arrays: dict[str, np.ndarray], console: Console
) -> dict[str, Task]:
    """The three recipes on fixed data subsets; only the seed changes between runs."""
    all_classes, new_classes = range(10), range(5, 10)
    train = class_subset(arrays, "train", config.n_train, all_classes, seed=0)
    valid = class_subset(arrays, "test", config.n_valid, all_classes, seed=1)
    head_train = class_subset(arrays, "train", config.transfer_train, new_classes, seed=0)
    head_valid = class_subset(arrays, "test", config.transfer_valid, new_classes, seed=1)

    def loaders(train: Split, valid: Split, classes: range, seed: int) -> lrkit.DataLoaders:
        vocab = [CLASSES[c] for c in classes]
        return array_dataloaders(train, valid, vocab=vocab, bs=config.bs, seed=seed)

    def from_scratch(network: Callable[[], nn.Module]) -> Callable[[int], Learner]:
        def make(seed: int) -> Learner:
            torch.manual_seed(seed)  # weight init; the loaders' generator gets the same seed
            dls = loaders(train, valid, all_classes, seed)
            return Learner(
                network(),
                dls,
                nn.CrossEntropyLoss(),
                metrics=[error_rate],
                device="cpu",
                progress=False,
            )

        return make

    def mlp() -> nn.Module:
        return nn.Sequential(
            nn.Flatten(),  # (B, 1, 28, 28) -> (B, 784)
            nn.Linear(28 * 28, config.mlp_hidden),
            nn.ReLU(),
            nn.Linear(config.mlp_hidden, 10),
        )

    tasks = {
        "fashion-cnn": Task(
            "fashion-cnn",
            f"simple_cnn from scratch, {config.n_train} train / {config.n_valid} valid images, "
            f"fit_one_cycle {config.cnn_epochs} epoch(s)",
            from_scratch(lambda: simple_cnn(num_classes=10)),
            config.cnn_epochs,
        ),
        "fashion-mlp": Task(
            "fashion-mlp",
            f"MLP 784-{config.mlp_hidden}-10 from scratch, {config.n_train} train / "
            f"{config.n_valid} valid images, fit_one_cycle {config.mlp_epochs} epoch(s)",
            from_scratch(mlp),
            config.mlp_epochs,
        ),
    }
    if "transfer" in config.tasks:
        demo = DemoConfig(quick=config.quick_body, data_path=config.data_path)
        body = pretrained_body(arrays, demo, console)

        def transfer(seed: int) -> Learner:
            torch.manual_seed(seed)  # the new head's init and dropout
            dls = loaders(head_train, head_valid, new_classes, seed)
            # a weights file as `pretrained` freezes the body: only the head (and BN) trains
            return vision_learner(
                dls,
                demo_network,
                pretrained=body,
                metrics=[error_rate],
                device="cpu",
                progress=False,
            )

        tasks["transfer"] = Task(
            "transfer",
            f"frozen body pretrained on classes 0-4 ({body.name}), new head for classes 5-9, "
            f"{config.transfer_train} train / {config.transfer_valid} valid images, "
            f"fit_one_cycle {config.head_epochs} epoch(s)",
            transfer,
            config.head_epochs,
        )
    return {name: tasks[name] for name in config.tasks}


# ---------------------------------------------------------------- measuring


def train(task: Task, lr: float, seed: int) -> Run:
    """Train `task` once at `lr` with `seed` and judge the result as `lrkit.compare` does."""
    learn = task.make(seed)
    began = time.perf_counter()
    with warnings.catch_warnings():  # divergence is recorded below, not warned about per run
        warnings.filterwarnings(
            "ignore", message=".*Try a lower learning rate", category=RuntimeWarning
        )
        learn.fit_one_cycle(task.epochs, lr)
    log = learn.recorder.log
    finished = len(log) == task.epochs
    # A run that stopped early is judged on the model as training left it.
    final = log[-1] if finished else learn.validate()
    valid_loss = final.get("valid_loss")
    train_loss = log[-1]["train_loss"] if finished else None
    first = learn.recorder.losses[:1]  # the first batch's loss, before any step
    reason = divergence(learn, train_loss, valid_loss, first)
    return Run(
        lr=lr,
        seed=seed,
        error=float(final["error_rate"]),
        valid_loss=valid_loss,
        train_loss=train_loss,
        untrained_loss=first[0] if first else None,
        diverged=reason is not None,
        note=reason or "",
        seconds=time.perf_counter() - began,
    )


def range_test(task: Task, index: int, config: BenchConfig) -> dict[str, Any]:
    """One range test on a fresh model with its own seed; every rule's suggestion (None when
    the curve is too short for the rule)."""
    seed = config.range_test_seed + index  # never one of the training seeds 0..seeds-1
    result: LRFindResult = task.make(seed).lr_find(num_it=config.num_it, progress=False)
    suggestions: dict[str, float | None] = {}
    for rule in rules():
        try:
            lr = result.suggest(rule)
        except suggest.CurveTooShortError:
            lr = math.nan
        suggestions[rule] = lr if math.isfinite(lr) else None  # auto: NaN on an unusable curve
    return {
        "seed": seed,
        "suggestions": suggestions,
        "stop_reason": result.stop_reason,
        "points": len(result.lrs),
        "warnings": result.warnings,
        "lrs": result.lrs.tolist(),
        "losses": result.losses.tolist(),
    }


def rules() -> list[str]:
    """Every registered rule, 'auto' included."""
    return suggest.rule_names()


def measure(task: Task, config: BenchConfig) -> TaskResult:
    """Range tests first, then every distinct (lr, seed) the grid and the rules need, once."""
    result = TaskResult(task.name, task.description, list(config.grid))
    for index in range(config.range_tests):
        result.range_tests.append(range_test(task, index, config))
        print(f"[{task.name}] range test {index + 1}/{config.range_tests} done", file=sys.stderr)
    wanted = list(config.grid)
    wanted += [
        lr for test in result.range_tests for lr in test["suggestions"].values() if lr is not None
    ]
    todo: dict[tuple[str, int], float] = {}
    for lr in wanted:
        for seed in range(config.seeds):
            todo.setdefault((lr_key(lr), seed), lr)
    for count, ((key, seed), lr) in enumerate(todo.items(), start=1):
        run = train(task, lr, seed)
        result.runs[(key, seed)] = run
        print(
            f"[{task.name}] run {count}/{len(todo)}: lr {lr:.3e} seed {seed} "
            f"error {100 * run.error:5.2f}%{' DIVERGED' if run.diverged else ''} "
            f"({run.seconds:.1f} s)",
            file=sys.stderr,
        )
    return result


# ---------------------------------------------------------------- summarising


def mean_error(result: TaskResult, lr: float, seeds: int) -> float:
    """Mean validation error (points) over the training seeds at `lr`."""
    return 100 * statistics.fmean(result.run(lr, seed).error for seed in range(seeds))


def best_grid_lr(result: TaskResult, seeds: int) -> tuple[float, float]:
    """(lr, mean error in points) of the grid lr with the lowest mean error."""
    errors = {lr: mean_error(result, lr, seeds) for lr in result.grid}
    best = min(errors, key=errors.__getitem__)
    return best, errors[best]


def rule_summary(result: TaskResult, rule: str, seeds: int) -> dict[str, Any]:
    """Median lr, median decades from the best grid lr, mean/worst regret, diverged runs."""
    best_lr, best_error = best_grid_lr(result, seeds)
    lrs = [test["suggestions"][rule] for test in result.range_tests]
    answered = [lr for lr in lrs if lr is not None]
    regrets = [mean_error(result, lr, seeds) - best_error for lr in answered]
    runs = [result.run(lr, seed) for lr in answered for seed in range(seeds)]
    return {
        "rule": rule,
        "median_lr": statistics.median(answered) if answered else None,
        "median_decades": (
            statistics.median(math.log10(lr / best_lr) for lr in answered) if answered else None
        ),
        "mean_regret": statistics.fmean(regrets) if regrets else None,
        "worst_regret": max(regrets) if regrets else None,
        "over_5": sum(r > 5 for r in regrets),
        "regrets": regrets,
        "diverged": sum(run.diverged for run in runs),
        "runs": len(runs),
        "no_lr": len(lrs) - len(answered),
    }


def rule_label(rule: str) -> str:
    """The rule's name, marked when 'auto' stands for it."""
    return f"auto ({suggest.AUTO_RULE})" if rule == "auto" else rule


def text_table(rows: list[list[str]]) -> str:
    """Plain text columns: the first left-aligned, the others right-aligned, header ruled."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row: list[str]) -> str:
        right = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "  ".join([row[0].ljust(widths[0]), *right])

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(rows[0]), rule, *(line(row) for row in rows[1:])])


def signed(value: float | None, digits: int = 2) -> str:
    """A number with its sign, or '-' when there is none."""
    return "-" if value is None else f"{value:+.{digits}f}"


def print_task(result: TaskResult, config: BenchConfig) -> list[dict[str, Any]]:
    """The grid and the per-rule table of one task; returns the per-rule summaries."""
    seeds = config.seeds
    print(f"\n== {result.task}: {result.description}")
    grid_rows = [["grid lr", "mean error %", "min", "max", "diverged"]]
    for lr in result.grid:
        runs = [result.run(lr, seed) for seed in range(seeds)]
        errors = [100 * run.error for run in runs]
        grid_rows.append(
            [
                f"{lr:.2e}",
                f"{statistics.fmean(errors):.2f}",
                f"{min(errors):.2f}",
                f"{max(errors):.2f}",
                f"{sum(run.diverged for run in runs)}/{seeds}",
            ]
        )
    print(text_table(grid_rows))
    best_lr, best_error = best_grid_lr(result, seeds)
    print(f"best grid lr {best_lr:.2e}: mean error {best_error:.2f}% over {seeds} seed(s)")
    stops = [test["stop_reason"] for test in result.range_tests]
    print(f"range tests: {len(stops)}, stopped: {', '.join(stops)}")

    summaries = [rule_summary(result, rule, seeds) for rule in rules()]
    rows = [["rule", "median lr", "decades", "mean regret", "worst regret", "> 5", "diverged"]]
    for s in summaries:
        rows.append(
            [
                rule_label(s["rule"]),
                "-" if s["median_lr"] is None else f"{s['median_lr']:.2e}",
                signed(s["median_decades"]),
                signed(s["mean_regret"]),
                signed(s["worst_regret"]),
                f"{s['over_5']}/{len(s['regrets'])}",
                f"{s['diverged']}/{s['runs']}" + (f" ({s['no_lr']} no lr)" if s["no_lr"] else ""),
            ]
        )
    print(f"\nrules ({config.range_tests} range tests x {seeds} seed(s); regret in error points)")
    print(text_table(rows))
    return summaries


def print_overall(per_task: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Mean regret per rule on each task and over all tasks; names the winner."""
    tasks = list(per_task)
    rows = [["rule", *tasks, "mean", "worst", "> 5", "diverged"]]
    overall: dict[str, dict[str, Any]] = {}
    for rule in rules():
        cells = [next(s for s in per_task[task] if s["rule"] == rule) for task in tasks]
        means = [c["mean_regret"] for c in cells if c["mean_regret"] is not None]
        worsts = [c["worst_regret"] for c in cells if c["worst_regret"] is not None]
        overall[rule] = {
            "mean_regret": statistics.fmean(means) if len(means) == len(tasks) else None,
            "worst_regret": max(worsts) if worsts else None,
            "diverged": sum(c["diverged"] for c in cells),
            "runs": sum(c["runs"] for c in cells),
            "over_5": sum(c["over_5"] for c in cells),
            "tests": sum(len(c["regrets"]) for c in cells),
        }
        rows.append(
            [
                rule_label(rule),
                *(signed(c["mean_regret"]) for c in cells),
                signed(overall[rule]["mean_regret"]),
                signed(overall[rule]["worst_regret"]),
                f"{overall[rule]['over_5']}/{overall[rule]['tests']}",
                f"{overall[rule]['diverged']}/{overall[rule]['runs']}",
            ]
        )
    print("\n== overall: mean regret per rule (error points against the best grid lr)")
    print(text_table(rows))
    scored = {r: v["mean_regret"] for r, v in overall.items() if v["mean_regret"] is not None}
    winner = min(scored, key=scored.__getitem__) if scored else None
    auto = overall.get("auto", {})
    if winner is not None:
        print(
            f"lowest mean regret: {winner} ({signed(scored[winner])}, worst "
            f"{signed(overall[winner]['worst_regret'])}); auto: "
            f"{signed(auto.get('mean_regret'))}, worst {signed(auto.get('worst_regret'))}"
        )
    return {"rules": overall, "winner": winner, "auto_rule": suggest.AUTO_RULE}


def raw_record(
    config: BenchConfig,
    source: str,
    results: list[TaskResult],
    summaries: dict[str, list[dict[str, Any]]],
    overall: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """Config, versions, every range test and run, and the summaries, JSON-ready."""
    return json_ready(
        {
            "config": asdict(config),
            "versions": {
                "lrkit": lrkit.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "data_source": source,
            "tasks": [
                {
                    "task": r.task,
                    "description": r.description,
                    "grid": r.grid,
                    "best_grid_lr": best_grid_lr(r, config.seeds)[0],
                    "range_tests": r.range_tests,
                    "runs": [asdict(run) for run in r.runs.values()],
                    "rules": summaries[r.task],
                }
                for r in results
            ],
            "overall": overall,
            "seconds": seconds,
        }
    )


def parse_config(argv: list[str] | None = None) -> tuple[BenchConfig, Path | None]:
    """The command line as a BenchConfig, and the JSON output path if any."""
    defaults = BenchConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--range-tests", type=int, default=None, help="range tests per task")
    parser.add_argument("--seeds", type=int, default=None, help="training seeds per lr")
    parser.add_argument("--tasks", default=",".join(defaults.tasks), help="comma-separated")
    parser.add_argument("--quick", action="store_true", help="a ~1-minute smoke run")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch threads")
    parser.add_argument("--data", default=None, help="Fashion-MNIST folder (default: found)")
    parser.add_argument("--out", type=Path, default=None, help="write all raw results as JSON")
    args = parser.parse_args(argv)
    tasks = tuple(name.strip() for name in args.tasks.split(",") if name.strip())
    unknown = [name for name in tasks if name not in TASKS]
    if unknown or not tasks:
        parser.error(f"unknown tasks {unknown}; choose from {', '.join(TASKS)}")
    config = defaults.quick() if args.quick else defaults
    config = replace(config, tasks=tasks, threads=args.threads, data_path=args.data)
    if args.range_tests is not None:
        config = replace(config, range_tests=args.range_tests)
    if args.seeds is not None:
        config = replace(config, seeds=args.seeds)
    if config.range_tests < 1 or config.seeds < 1:
        parser.error("--range-tests and --seeds must be >= 1")
    return config, args.out


def main(argv: list[str] | None = None) -> None:
    """Measure every task, print the tables, and write the raw JSON when asked."""
    config, out = parse_config(argv)
    began = time.perf_counter()
    torch.set_num_threads(config.threads)
    console = Console(stderr=True, soft_wrap=True)
    arrays, source = demo_arrays(config.data_path)
    print(f"config: {config}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; data: {source}")
    tasks = make_tasks(config, arrays, console)
    results = [measure(task, config) for task in tasks.values()]
    summaries = {result.task: print_task(result, config) for result in results}
    overall = print_overall(summaries)
    seconds = time.perf_counter() - began
    print(f"\nwall time {seconds:.0f} s")
    if out is not None:
        record = raw_record(config, source, results, summaries, overall, seconds)
        out.write_text(json.dumps(record, indent=2, allow_nan=False))
        print(f"raw results: {out}")


if __name__ == "__main__":
    main()
