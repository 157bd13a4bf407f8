"""glibc's default malloc against `lrkit.tune_malloc()`, side by side, on the Pets workflow.

Each run is a fresh process (the allocator's state is process-wide): the bench_vs_fastai
loaders (Pets sample, presize 192, size 160, bs 32, 0 workers, 2 threads), a pretrained
EfficientNet-Lite0 learner, the head's held range test as fine_tune(n, "auto") runs it
(`lrkit.stages.AUTO_HEAD_TEST`), then one epoch of the unfrozen network (fit_one_cycle). The
two settings alternate (default, tuned, tuned, default, ...) so the machine's load falls on
both alike; the ratios are tuned / default.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_malloc.py [--pairs 2]   # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(tuned: bool) -> dict[str, float]:
    import torch

    import lrkit
    from bench_vs_fastai import lrkit_pets_loaders
    from lrkit.stages import AUTO_HEAD_TEST

    applied = lrkit.tune_malloc() if tuned else False
    torch.set_num_threads(2)
    dls = lrkit_pets_loaders(0)
    torch.manual_seed(0)
    learn = lrkit.vision_learner(dls, "efficientnet_lite0", pretrained="imagenet", progress=False)
    start = time.perf_counter()
    found = learn.lr_find(**AUTO_HEAD_TEST, progress=False)
    range_test = time.perf_counter() - start
    learn.unfreeze()
    start = time.perf_counter()
    learn.fit_one_cycle(1, 1e-4)
    epoch = time.perf_counter() - start
    return {"applied": applied, "range_test_s": range_test, "epoch_s": epoch,
            "steps": len(found.lrs)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2, help="runs of each setting")
    parser.add_argument("--worker", choices=["default", "tuned"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker == "tuned")))
        return
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    env.pop("GLIBC_TUNABLES", None)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src"), str(HERE)])
    order = [
        ("default", "tuned") if i % 2 == 0 else ("tuned", "default") for i in range(args.pairs)
    ]
    runs: dict[str, list[dict]] = {"default": [], "tuned": []}
    for mode in [mode for pair in order for mode in pair]:
        done = subprocess.run(
            [sys.executable, __file__, "--worker", mode], env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"{mode} run failed:\n{done.stderr[-2000:]}")
        runs[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{mode:8s} {runs[mode][-1]}", flush=True)
    if not all(run["applied"] for run in runs["tuned"]):
        raise SystemExit("tune_malloc() did not apply here (not glibc, or the environment chose)")
    for key in ("range_test_s", "epoch_s"):
        default = statistics.fmean(run[key] for run in runs["default"])
        tuned = statistics.fmean(run[key] for run in runs["tuned"])
        ratio = tuned / default
        print(f"{key}: default {default:.1f}, tuned {tuned:.1f}, tuned / default {ratio:.2f}")


if __name__ == "__main__":
    main()
