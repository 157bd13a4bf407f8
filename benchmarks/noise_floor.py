"""The regret a rule pays even when it lands right next to the best learning rate.

The open suite's oracle (`../shared/quality/score.py`) is the lowest of twelve noisy means
(training seeds 0-2) on a half-decade grid. A rule that trains at any other lr, even a close
one, is measured against that lucky draw, so no rule scores 0 in expectation. This trains each
task on an eighth-decade grid within half a decade of its best half-decade point (the suite's
recipe and seeds, `rule_study.train`, cached with the study's runs) and prints each point's
regret, then the mean regret over the points within an eighth and within a quarter of a decade
of the best: what a rule landing there, anywhere, would score on average.

    PYTHONPATH=src .venv/bin/python benchmarks/noise_floor.py [--tasks open|all|T1,S2] [--workers 2]

Caches: as rule_study.py ($LRQ_RESULTS, default /tmp/quality/results).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

import rule_study as study

STEPS = range(-4, 5)  # eighth-decade steps around the best half-decade point


def best_half_decade(task: str, runs: dict[str, float]) -> tuple[float, float]:
    """(lr, mean error) of the best half-decade grid point, the suite's oracle."""
    means = {
        lr: float(np.mean([runs[study.key(task, lr, s)] for s in study.TRAIN_SEEDS]))
        for lr in study.HALF
        if all(study.key(task, lr, s) in runs for s in study.TRAIN_SEEDS)
    }
    if not means:
        raise SystemExit(f"{task}: no half-decade grid in the cache; run rule_study.py collect")
    lr = min(means, key=means.__getitem__)
    return lr, means[lr]


def around(best: float) -> list[float]:
    """The eighth-decade grid within half a decade of `best`, rounded as cached lrs are."""
    return [float(f"{best * 10 ** (k / 8):.6e}") for k in STEPS]


def report(task: str, runs: dict[str, float]) -> dict[str, float]:
    """Print one task's regrets around its best lr; returns the band means."""
    best_lr, best_err = best_half_decade(task, runs)
    print(f"\n{task}: best half-decade point {best_lr:.3g} at {best_err:.2f} % (mean of 3 seeds)")
    print(f"{'lr':>9s} {'decades':>8s} {'mean %':>8s} {'regret':>8s}   per seed")
    regret = {}
    for k, lr in zip(STEPS, around(best_lr), strict=True):
        errs = [runs[study.key(task, lr, s)] for s in study.TRAIN_SEEDS]
        regret[k] = float(np.mean(errs)) - best_err
        seeds = " / ".join(f"{e:.2f}" for e in errs)
        print(f"{lr:9.3g} {k / 8:+8.3f} {np.mean(errs):8.2f} {regret[k]:+8.2f}   {seeds}")
    bands = {}
    for name, width in (("1/8", 1), ("1/4", 2), ("1/2", 4)):
        inside = [regret[k] for k in STEPS if abs(k) <= width and k != 0]
        bands[name] = float(np.mean(inside))
        print(f"  landing within {name} decade of it (the point itself excluded): mean regret "
              f"{bands[name]:+.2f}, best {min(inside):+.2f}, worst {max(inside):+.2f}")  # fmt: skip
    return bands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="open", help="open, all, or names (T1,S2)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    named = {"open": study.OPEN, "all": study.ALL_TASKS}
    names = list(named.get(args.tasks) or args.tasks.split(","))
    runs = study.load_runs()
    for name in names:
        study.get_task(name)  # build cached task data once, before the workers start
    jobs = [
        (study.train, task, lr, seed)
        for task in names
        for lr in around(best_half_decade(task, runs)[0])
        for seed in study.TRAIN_SEEDS
        if study.key(task, lr, seed) not in runs
    ]
    study.run_jobs(jobs, args.workers)
    runs = study.load_runs()
    bands = {task: report(task, runs) for task in names}
    print("\nmean regret of a rule landing within a band around each task's best lr:")
    for name in ("1/8", "1/4", "1/2"):
        values = [bands[task][name] for task in names]
        each = " ".join(f"{task} {value:+.2f}" for task, value in zip(names, values, strict=True))
        print(f"  {name} decade: {each}  mean {np.mean(values):+.2f}")
    if not all(math.isfinite(v) for b in bands.values() for v in b.values()):
        raise SystemExit("a band has no finite regret: see the runs above")


if __name__ == "__main__":
    main()
