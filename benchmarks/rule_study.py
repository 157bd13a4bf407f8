"""The suggestion-rule study: any rule's regret on many tasks, read off a dense lr -> error grid.

Training is the expensive part, so it is done once: per task, 5 range tests (finder seeds 0-4,
`lrkit.lr_find` 1e-7 -> 10 in 100 steps with the task's optimizer, as the open suite's score.py
does) are recorded, and test errors are measured on a grid of max lrs (half-decade steps 1e-5
... 3.16, plus quarter-decade points between 1e-4 and 1) with training seeds 0-2. A rule's
regret on one range test is then the grid's mean error, interpolated linearly in log10(lr) at
the rule's suggestion, minus the best half-decade grid point's (as score.py; `--ref all`: the
best of the whole grid), in percentage points (a suggestion
outside the grid reads the nearest end; an invalid one (NaN, <= 0, an error) scores the grid's
worst). `verify` trains at real suggestions to check the interpolation.

Tasks: the open suite T1-T3 (../shared/quality/tasks.py; their half-decade points come from its
oracle_open.json) and S1-S9 (study_tasks.py). `auto` was designed on TUNING and checked on
HELD_OUT; S6 failed the first version, the rule was revised for it, and FRESH (S7-S9) was added
afterwards to check the revision on tasks it had not seen.

    PYTHONPATH=src .venv/bin/python benchmarks/rule_study.py collect [--workers 2] [--tasks T1,S2]
    PYTHONPATH=src .venv/bin/python benchmarks/rule_study.py evaluate [--tasks open|tuning|
        held-out|fresh|all|T1,S2] [--rules a,b] [--cut 2.5] [--trained] [-v]
    PYTHONPATH=src .venv/bin/python benchmarks/rule_study.py verify --rule auto

`--num-it N` (collect, evaluate): range tests of N steps instead of fastai's 100, smoothed as
`lrkit.stages.short_test(N)`, cached apart, judged on the same grid: the regret of a cheaper test;
with `--start-lr X` too, over the decades from X to 10 only, at fastai's smoothing.

`--cut K` re-cuts every curve where its smoothed loss first passes K x its lowest so far (another
divergence stop than the recorded one); `--trained` reads real runs at a suggestion where
`verify` made them.

Caches under $LRQ_RESULTS (default /tmp/quality/results): curves/<task>_<seed>.json and
study_runs.jsonl (one line per training run).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent
SUITE = Path(os.environ.get("LRQ_SUITE", HERE.parents[1] / "shared" / "quality"))
sys.path[:0] = [str(SUITE), str(HERE)]

import numpy as np  # noqa: E402
import tasks  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import lrkit  # noqa: E402
import study_tasks  # noqa: E402
from lrkit import suggest  # noqa: E402
from lrkit.range_test_result import LRFindResult  # noqa: E402
from lrkit.stages import short_test  # noqa: E402

OPEN = ("T1", "T2", "T3")
TUNING = ("T1", "T2", "T3", "S1", "S3")
HELD_OUT = ("S2", "S4", "S5", "S6")
FRESH = ("S7", "S8", "S9")  # added to check the rule revised after S6 (study_tasks.py)
ALL_TASKS = TUNING + HELD_OUT + FRESH
FINDER_SEEDS = (0, 1, 2, 3, 4)
TRAIN_SEEDS = (0, 1, 2)
HALF = [10 ** (k / 2) for k in range(-10, 2)]  # 1e-5 ... 3.16
QUARTER = [10 ** (k / 4) for k in range(-15, 0, 2)]  # 10^-3.75 ... 10^-0.25
GRID = sorted(HALF + QUARTER)
CURVES = tasks.RESULTS / "curves"  # curves of NUM_IT steps; other lengths in curves/n<steps>/
NUM_IT = 100  # the range test's length: fastai's lr_find default (--num-it for a cheaper test)
START_LR = 1e-7  # ... and where it starts (score.py's; --start-lr for a narrower sweep)
TRAINED = False  # evaluate --trained: read real runs at a suggestion where `verify` made them
RUNS = tasks.RESULTS / "study_runs.jsonl"


def get_task(name: str) -> tasks.Task:
    if name not in tasks._CACHE:
        make = tasks.TASKS.get(name) or study_tasks.EXTRA[name]
        tasks._CACHE[name] = make()
    return tasks._CACHE[name]


def key(task: str, lr: float, seed: int) -> str:
    return f"{task}|{lr:.6e}|{seed}"


def load_runs() -> dict[str, float]:
    """key -> test error (points) of every cached run, the open suite's oracle grid included."""
    runs: dict[str, float] = {}
    oracle = json.loads((SUITE / "oracle_open.json").read_text())["tasks"]
    for task, entry in oracle.items():
        for point in entry["grid"]:
            for seed, err in zip(TRAIN_SEEDS, point["errs"], strict=True):
                runs[key(task, point["lr"], seed)] = err
    if RUNS.exists():
        for line in RUNS.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError):
                r = json.loads(line)
                runs[key(r["task"], r["lr"], r["seed"])] = r["err"]
    return runs


# ---------------------------------------------------------------- jobs (run in workers)


def _init() -> None:
    torch.set_num_threads(1)


def curve_path(task_name: str, fseed: int, num_it: int, start_lr: float = START_LR) -> Path:
    """Where the range test of `num_it` steps from `start_lr` for (task, finder seed) is cached."""
    folder = CURVES / f"n{num_it}" if num_it != NUM_IT else CURVES
    if start_lr != START_LR:
        folder = CURVES / f"n{num_it}_from{start_lr:g}"
    return folder / f"{task_name}_{fseed}.json"


def range_test(task_name: str, fseed: int, num_it: int = NUM_IT, start_lr: float = START_LR) -> str:
    """One range test as score.py runs it (score.py: 100 steps from 1e-7; a shorter one over the
    same decades smooths as `lrkit.stages.short_test` says, one over fewer decades keeps
    fastai's beta); the whole result saved as JSON."""
    path = curve_path(task_name, fseed, num_it, start_lr)
    same_range = start_lr == START_LR
    task = get_task(task_name)
    tasks.set_seed(fseed)
    model = task.make_model()
    opt = tasks.make_opt(task.opt, model.parameters(), 1e-3)
    g = torch.Generator().manual_seed(fseed)
    dl = DataLoader(
        TensorDataset(task.xtr, task.ytr), batch_size=task.bs, shuffle=True, generator=g
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        res = lrkit.lr_find(
            model,
            dl,
            nn.CrossEntropyLoss(),
            optimizer=opt,
            start_lr=start_lr,
            end_lr=10.0,
            **(short_test(num_it) if same_range else {"num_it": num_it}),
        )
    path.write_text(json.dumps(res.to_dict()))
    return str(path)


def train(task_name: str, lr: float, seed: int) -> dict:
    """Train once with the suite's recipe; the run is appended to study_runs.jsonl."""
    task = get_task(task_name)
    tasks.set_seed(seed)
    model = task.make_model()
    loss = tasks.fit(model, task, lr, seed)
    err = 100.0 * tasks.error_rate(model, task)
    record = dict(
        task=task_name,
        lr=float(f"{lr:.6e}"),
        seed=seed,
        err=err,
        train_loss=loss if math.isfinite(loss) else None,
    )
    with open(RUNS, "a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def run_jobs(jobs: list[tuple], workers: int) -> None:
    """Run (function, *args) jobs on `workers` one-thread processes, printing progress."""
    if not jobs:
        return
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init) as ex:
        futures = [ex.submit(fn, *args) for fn, *args in jobs]
        for count, future in enumerate(futures, 1):
            out = future.result()
            print(f"  {count}/{len(jobs)} {out}", file=sys.stderr, flush=True)


def collect(
    task_names: list[str], workers: int, num_it: int = NUM_IT, start_lr: float = START_LR
) -> None:
    curve_path("T1", 0, num_it, start_lr).parent.mkdir(parents=True, exist_ok=True)
    for name in task_names:  # build cached task data once, before the workers start
        get_task(name)
    jobs = [
        (range_test, t, s, num_it, start_lr)
        for t in task_names
        for s in FINDER_SEEDS
        if not curve_path(t, s, num_it, start_lr).exists()
    ]
    run_jobs(jobs, workers)
    runs = load_runs()
    jobs = [
        (train, t, lr, s)
        for t in task_names
        for lr in GRID
        for s in TRAIN_SEEDS
        if key(t, lr, s) not in runs
    ]
    jobs.sort(key=lambda job: job[1] not in ("T2", "T3", "S3", "S5", "S6", "S7", "S8", "S9"))
    run_jobs(jobs, workers)


# ---------------------------------------------------------------- offline evaluation


def grid_means(task: str, runs: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(log10 lr, mean error over the training seeds) at every grid lr measured for `task`."""
    pts = [
        (math.log10(lr), np.mean([runs[key(task, lr, s)] for s in TRAIN_SEEDS]))
        for lr in GRID
        if all(key(task, lr, s) in runs for s in TRAIN_SEEDS)
    ]
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def cut_curve(data: dict, factor: float | None) -> dict:
    """The curve as if the range test had stopped once the smoothed loss rose above `factor`
    times its lowest value so far (a different divergence stop than the recorded one)."""
    if factor is None:
        return data
    losses = np.asarray(data["losses"])
    best = np.minimum.accumulate(losses)
    over = np.flatnonzero((losses > factor * best) & (np.arange(len(losses)) > 0))
    if not len(over):
        return data
    n = over[0] + 1
    out = dict(data)
    for field in ("lrs", "losses", "raw_losses", "group_lrs"):
        out[field] = data[field][:n]
    out["stop_reason"] = "diverged"
    return out


def load_curves(
    task: str, cut: float | None = None, num_it: int = NUM_IT, start_lr: float = START_LR
) -> list[LRFindResult]:
    return [
        LRFindResult.from_dict(
            cut_curve(json.loads(curve_path(task, s, num_it, start_lr).read_text()), cut)
        )
        for s in FINDER_SEEDS
    ]


def suggestion(res: LRFindResult, rule) -> float:
    try:
        lr = float(res.suggest(rule))
    except (ValueError, ArithmeticError):
        return math.nan
    return lr


def regrets(task: str, lrs: list[float], runs: dict[str, float], ref: str = "half") -> np.ndarray:
    """Interpolated error at each lr minus the reference: the best half-decade grid point (as
    the open suite's score.py) or, with ref="all", the best point of the denser grid."""
    x, y = grid_means(task, runs)
    half = np.isin(np.round(x * 2, 6) % 1, [0.0])
    best = y[half].min() if ref == "half" else y.min()
    worst = y.max() - best
    out = []
    for lr in lrs:
        if not (lr > 0 and math.isfinite(lr)):
            out.append(worst)
            continue
        trained = [runs.get(key(task, lr, seed)) for seed in TRAIN_SEEDS]
        if TRAINED and all(err is not None for err in trained):  # verify trained it: use that
            out.append(float(np.mean(trained)) - best)
        else:
            out.append(np.interp(math.log10(lr), x, y) - best)
    return np.array(out)


def candidate_rules() -> dict[str, object]:
    """Registered rules plus the candidates under study (rule_candidates.py)."""
    import rule_candidates

    out: dict[str, object] = {name: name for name in suggest.rule_names()}
    out.update(rule_candidates.CANDIDATES)
    return out


def evaluate(
    task_names: list[str],
    rule_names: list[str] | None,
    cut: float | None,
    verbose: bool,
    ref: str = "half",
    num_it: int = NUM_IT,
    start_lr: float = START_LR,
) -> dict:
    runs = load_runs()
    rules = candidate_rules()
    names = rule_names or list(rules)
    curves = {t: load_curves(t, cut, num_it, start_lr) for t in task_names}
    table = {}
    for name in names:
        per = {}
        for t in task_names:
            lrs = [suggestion(res, rules[name]) for res in curves[t]]
            per[t] = (lrs, regrets(t, lrs, runs, ref))
        table[name] = per
    header = f"{'rule':<16}{'mean':>7}{'worst':>7}{'>5pp':>6} " + " ".join(
        f"{t:>12}" for t in task_names
    )
    print(
        f"regret in points vs the best {'half-decade' if ref == 'half' else 'quarter-decade'} "
        f"grid lr (mean over tasks; worst and share over range tests)"
        f"{'' if cut is None else f'; curves cut at {cut} x lowest'}; range tests of {num_it} "
        f"steps from {start_lr:g}"
    )
    print(header)
    for name, per in table.items():
        allr = np.concatenate([per[t][1] for t in task_names])
        mean = np.mean([per[t][1].mean() for t in task_names])
        cells = " ".join(f"{per[t][1].mean():+6.2f}/{per[t][1].max():+5.1f}" for t in task_names)
        print(f"{name:<16}{mean:+7.2f}{allr.max():+7.2f}{100 * np.mean(allr > 5):5.0f}% {cells}")
        if verbose:
            for t in task_names:
                shown = " ".join(f"{lr:.2e}" for lr in per[t][0])
                print(f"    {t}: {shown}")
    for t in task_names:
        x, y = grid_means(t, runs)
        print(
            f"{t}: best grid lr {10 ** x[np.argmin(y)]:.2e} error {y.min():.2f}  "
            f"({len(x)} grid points), {cost(t, curves[t]):.2f} x its training's steps"
            f"{'  ' + get_task(t).desc if verbose else ''}"
        )
    return table


def cost(task: str, curves: list[LRFindResult]) -> float:
    """The range tests' mean number of steps as a fraction of one training run's steps (the
    range test stops early when the loss diverges)."""
    t = get_task(task)
    steps = t.epochs * math.ceil(len(t.xtr) / t.bs)
    return float(np.mean([len(res.lrs) for res in curves]) / steps)


def verify(task_names: list[str], rule: str, workers: int) -> None:
    """Train at the rule's real suggestions and compare with the interpolated grid."""
    runs = load_runs()
    rules = candidate_rules()
    want = sorted({(t, suggestion(res, rules[rule])) for t in task_names for res in load_curves(t)})
    want = [(t, lr) for t, lr in want if math.isfinite(lr) and lr > 0]
    run_jobs(
        [(train, t, lr, s) for t, lr in want for s in TRAIN_SEEDS if key(t, lr, s) not in runs],
        workers,
    )
    runs = load_runs()
    print(f"{'task':<5}{'lr':>10}{'trained':>9}{'interp':>9}{'diff':>7}")
    diffs = []
    for t, lr in want:
        x, y = grid_means(t, runs)
        real = np.mean([runs[key(t, lr, s)] for s in TRAIN_SEEDS])
        guess = np.interp(math.log10(lr), x, y)
        diffs.append(real - guess)
        print(f"{t:<5}{lr:>10.2e}{real:>9.2f}{guess:>9.2f}{real - guess:>+7.2f}")
    print(
        f"trained - interpolated: mean {np.mean(diffs):+.2f}, "
        f"mean |diff| {np.mean(np.abs(diffs)):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["collect", "evaluate", "verify"])
    parser.add_argument("--tasks", default=",".join(ALL_TASKS))
    parser.add_argument("--rules", default=None, help="comma-separated (default: all)")
    parser.add_argument("--rule", default="auto", help="verify: the rule to train")
    parser.add_argument("--cut", type=float, default=None, help="re-cut curves at K x lowest")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--num-it", type=int, default=NUM_IT, help="range-test length (collect, evaluate)"
    )
    parser.add_argument(
        "--start-lr", type=float, default=START_LR, help="range-test start (collect, evaluate)"
    )
    parser.add_argument("--trained", action="store_true", help="use real runs where there are")
    parser.add_argument(
        "--ref",
        choices=["half", "all"],
        default="half",
        help="regret against the best half-decade lr (as score.py) or any grid lr",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    global TRAINED
    TRAINED = args.trained
    sets = {"open": OPEN, "tuning": TUNING, "held-out": HELD_OUT, "fresh": FRESH, "all": ALL_TASKS}
    names = {name: list(group) for name, group in sets.items()}.get(
        args.tasks, [t for t in args.tasks.split(",") if t]
    )
    if args.command == "collect":
        collect(names, args.workers, args.num_it, args.start_lr)
    elif args.command == "evaluate":
        rules = args.rules.split(",") if args.rules else None
        evaluate(names, rules, args.cut, args.verbose, args.ref, args.num_it, args.start_lr)
    else:
        verify(names, args.rule, args.workers)


if __name__ == "__main__":
    main()
