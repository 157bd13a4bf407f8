"""One epoch of `Learner.fit_one_cycle` against a bare PyTorch loop doing the same work.

Both sides train the same small CNN from the same initial weights on the same synthetic
batches (same order) with AdamW (fastai's betas/eps, weight decay 0.01), set the one-cycle lr
and momentum of every param group before each batch, read the loss every batch (as any loop
that logs does) and validate once at the end with accuracy. The Learner runs with its
progress bar on, rendered to a terminal-like sink so the drawing work is really done. Runs
are interleaved in one process (A B, B A, ...); the medians of wall time are compared, and
the median of the per-repeat ratios and the ratio of CPU times are printed beside it, since
on a shared machine the load drifts between runs.

    .venv/bin/python benchmarks/bench_fit.py [--repeats 5] [--items 4096] [--bs 64] [--threads N]

Prints the medians and the ratio Learner / bare loop (target <= 1.05).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from dataclasses import dataclass

import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lrkit import DataLoaders, Learner, ProgressCallback, accuracy
from lrkit.schedule import one_cycle_lr, one_cycle_mom, progress


@dataclass
class BenchConfig:
    repeats: int = 5  # timed runs per side
    items: int = 4096  # training images (32x32 RGB)
    valid_items: int = 1024
    bs: int = 64
    lr_max: float = 3e-3
    seed: int = 0


def make_model() -> nn.Module:
    """A small CNN: three conv blocks and a linear head, about 25k parameters."""

    def block(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
        )

    return nn.Sequential(
        block(3, 16),
        nn.MaxPool2d(2),  # (B, 16, 16, 16)
        block(16, 32),
        nn.MaxPool2d(2),  # (B, 32, 8, 8)
        block(32, 64),
        nn.AdaptiveAvgPool2d(1),  # (B, 64, 1, 1)
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def make_loaders(config: BenchConfig) -> tuple[DataLoader, DataLoader]:
    gen = torch.Generator().manual_seed(config.seed)
    n = config.items + config.valid_items
    x = torch.randn(n, 3, 32, 32, generator=gen)
    # Learnable labels (a fixed rule of the pixels), so equal accuracies mean equal training.
    channel_means = x.mean(dim=(2, 3))  # (n, 3)
    y = (channel_means @ torch.randn(3, 10, generator=gen)).argmax(dim=1)
    train = TensorDataset(x[: config.items], y[: config.items])
    valid = TensorDataset(x[config.items :], y[config.items :])
    return DataLoader(train, batch_size=config.bs), DataLoader(valid, batch_size=config.bs)


def make_opt(params, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)


def bare_loop(model: nn.Module, train: DataLoader, valid: DataLoader, lr_max: float) -> float:
    """The reference: one epoch of one-cycle training and a validation pass, by hand."""
    opt = make_opt(model.parameters(), lr_max)
    loss_fn = nn.CrossEntropyLoss()
    total = len(train)
    losses = []
    model.train()
    for step, (x, y) in enumerate(train):
        pct = progress(step, total)
        mom = one_cycle_mom(pct)
        for group in opt.param_groups:
            group["lr"] = one_cycle_lr(pct, lr_max)
            group["betas"] = (mom, group["betas"][1])
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    preds, targets = [], []
    with torch.no_grad():
        for x, y in valid:
            preds.append(model(x))
            targets.append(y)
    return float(accuracy(torch.cat(preds), torch.cat(targets)))


def learner_fit(
    model: nn.Module, train: DataLoader, valid: DataLoader, lr_max: float, sink
) -> float:
    """The same epoch through the Learner, progress bar on."""
    console = Console(file=sink, force_terminal=True, width=100)
    learn = Learner(
        model,
        DataLoaders(train, valid),
        nn.CrossEntropyLoss(),
        metrics=[accuracy],
        opt=lambda groups: make_opt(groups, lr_max),
        device="cpu",
        progress=False,
        cbs=[ProgressCallback(console)],
    )
    learn.fit_one_cycle(1, lr_max)
    return learn.recorder.log[-1]["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=BenchConfig.repeats)
    parser.add_argument("--items", type=int, default=BenchConfig.items)
    parser.add_argument("--bs", type=int, default=BenchConfig.bs)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    config = BenchConfig(repeats=args.repeats, items=args.items, bs=args.bs)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(config.seed)
    initial = make_model()
    train, valid = make_loaders(config)
    times: dict[str, list[float]] = {"bare": [], "learner": []}  # wall-clock seconds
    cpu: dict[str, list[float]] = {"bare": [], "learner": []}  # process CPU seconds
    accs: dict[str, list[float]] = {"bare": [], "learner": []}
    with open(os.devnull, "w") as sink:
        # warm-up, untimed: first-call allocations and kernel selection
        bare_loop(copy.deepcopy(initial), train, valid, config.lr_max)
        learner_fit(copy.deepcopy(initial), train, valid, config.lr_max, sink)
        for repeat in range(config.repeats):
            order = ["bare", "learner"] if repeat % 2 == 0 else ["learner", "bare"]
            for side in order:
                model = copy.deepcopy(initial)
                start, start_cpu = time.perf_counter(), time.process_time()
                if side == "bare":
                    acc = bare_loop(model, train, valid, config.lr_max)
                else:
                    acc = learner_fit(model, train, valid, config.lr_max, sink)
                times[side].append(time.perf_counter() - start)
                cpu[side].append(time.process_time() - start_cpu)
                accs[side].append(acc)

    bare, learner = statistics.median(times["bare"]), statistics.median(times["learner"])
    print(f"config: {config}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"batches per epoch: {len(train)}")
    for side in ("bare", "learner"):
        runs = ", ".join(f"{t:.3f}" for t in times[side])
        print(f"{side:8s} median {statistics.median(times[side]):.3f} s  runs [{runs}]")
    print(f"valid accuracy: bare {accs['bare'][0]:.4f}, learner {accs['learner'][0]:.4f}")
    # Each repeat's pair ran back to back, so its ratio cancels slow drifts of machine load.
    paired = [t / u for t, u in zip(times["learner"], times["bare"], strict=True)]
    cpu_ratio = statistics.median(cpu["learner"]) / statistics.median(cpu["bare"])
    print(f"paired ratios: [{', '.join(f'{r:.3f}' for r in paired)}]")
    print(f"ratio learner / bare: {learner / bare:.3f} (medians of wall time; target <= 1.05)")
    print(f"median paired ratio: {statistics.median(paired):.3f}; CPU-time ratio: {cpu_ratio:.3f}")


if __name__ == "__main__":
    main()
