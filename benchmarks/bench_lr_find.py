"""How much slower is `lrkit.lr_find` than a bare PyTorch loop doing the same 100 steps?

Same process, same small CNN (lrkit.models.simple_cnn), same 28x28 batches of 128, same
AdamW and lr sweep; the runs are interleaved and each timing is the median of `--repeats`.
Both loops read the loss with `.item()` every step (the range test needs it to stop on
divergence; a bare loop that logs its loss does the same). Also times snapshot + restore on
their own, and torch-lr-finder's range test + reset() when it is installed.

    .venv/bin/python benchmarks/bench_lr_find.py [--repeats 7] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

import lrkit
from lrkit.models import simple_cnn
from lrkit.snapshot import TrainingSnapshot

STEPS = 100


def make_batches(n_batches: int = 25, bs: int = 128) -> DataLoader:
    """A DataLoader over pre-made batches (batch_size=None passes each through untouched)."""
    generator = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(bs, 1, 28, 28, generator=generator),
            torch.randint(0, 10, (bs,), generator=generator),
        )
        for _ in range(n_batches)
    ]
    return DataLoader(batches, batch_size=None)


def fresh_setup() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = simple_cnn()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-7)


def bare_loop(model, optimizer, batches) -> None:
    """The reference: the same exponential sweep written as plainly as possible."""
    model.train()
    batch_iter = iter(batches)
    for step in range(STEPS):
        for group in optimizer.param_groups:
            group["lr"] = 1e-7 * (10.0 / 1e-7) ** (step / STEPS)
        try:
            x, y = next(batch_iter)
        except StopIteration:
            batch_iter = iter(batches)
            x, y = next(batch_iter)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        loss.item()


def lrkit_run(model, optimizer, batches) -> None:
    lrkit.lr_find(
        model, batches, F.cross_entropy, optimizer, num_it=STEPS, div_thresh=None, progress=False
    )


def snapshot_only(model, optimizer, batches) -> None:
    TrainingSnapshot.capture(model, optimizer, [batches]).restore()


def torch_lr_finder_run(model, optimizer, batches) -> None:
    from torch_lr_finder import LRFinder

    finder = LRFinder(model, optimizer, F.cross_entropy, device="cpu")
    finder.range_test(batches, end_lr=10, num_iter=STEPS, diverge_th=1e30)
    finder.reset()


def time_once(run: Callable, batches) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for one run from fresh weights."""
    model, optimizer = fresh_setup()
    wall, cpu = time.perf_counter(), time.process_time()
    run(model, optimizer, batches)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    runs: dict[str, Callable] = {"bare": bare_loop, "lrkit": lrkit_run, "snapshot": snapshot_only}
    try:
        import torch_lr_finder  # noqa: F401

        runs["torch-lr-finder"] = torch_lr_finder_run
    except ImportError:
        print("torch-lr-finder is not installed: its ratio is skipped")

    batches = make_batches()
    print(f"torch {torch.__version__}, {STEPS} steps, batch 128 of 1x28x28, {args.repeats} repeats")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for run in runs.values():  # warm-up: allocator, kernels, first-call costs
            time_once(run, batches)
        times: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():  # interleaved: drift hits every variant alike
                wall_s, cpu_s = time_once(run, batches)
                times[name].append(wall_s)
                cpu[name].append(cpu_s)
        median = {name: statistics.median(values) for name, values in times.items()}
        print(f"\n{threads} thread(s): median seconds (wall)")
        for name, value in median.items():
            print(f"  {name:<16} {value:8.4f}")
        ratio = median["lrkit"] / median["bare"]
        pairs = zip(times["lrkit"], times["bare"], strict=True)
        paired = statistics.median(a / b for a, b in pairs)
        cpu_ratio = statistics.median(cpu["lrkit"]) / statistics.median(cpu["bare"])
        print(f"  ratio lrkit / bare            {ratio:.3f}  (target <= 1.03)")
        print(f"  median of paired ratios       {paired:.3f}  (each round's lrkit / bare)")
        print(f"  ratio of CPU time             {cpu_ratio:.3f}  (less sensitive to other load)")
        share = median["snapshot"] / median["lrkit"]
        print(f"  snapshot+restore / lrkit run  {100 * share:.2f}%  (target <= 1%)")
        if "torch-lr-finder" in median:
            ratio = median["torch-lr-finder"] / median["bare"]
            print(f"  ratio torch-lr-finder / bare  {ratio:.3f}")


if __name__ == "__main__":
    main()
