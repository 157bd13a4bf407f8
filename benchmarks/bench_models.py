"""Forward + backward images/s of lrkit's resnet18/50 against a reference ResNet built here.

The reference is a second, independent definition of the same network (blocks as
`nn.Sequential` branches, written in this file); it gets lrkit's weights copied in, and its
logits are checked to match before anything is timed, so both sides do the same arithmetic.
Each setting (arch, image size, fp32 or bf16 autocast, channels_last off/on) times one
training step (forward, cross-entropy, backward; no optimizer) on one random batch, the two
sides interleaved (A B B A ...) after a warm-up step each. Other jobs on a shared machine
only ever slow a step down, so the best step of each side is compared (best-of-N), and the
median of the per-pair ratios is printed beside it; read the ratios, not absolute numbers.

    .venv/bin/python benchmarks/bench_models.py [--archs resnet18 resnet50] [--sizes 64 224]
        [--repeats 3] [--threads N] [--bs64 32] [--bs224 8]

Prints best images/s per side and the ratios lrkit / reference (1.0 = the same speed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from lrkit.models import resnet18, resnet50


@dataclass
class BenchConfig:
    archs: tuple[str, ...] = ("resnet18", "resnet50")
    sizes: tuple[int, ...] = (64, 224)
    repeats: int = 5  # timed steps per side and setting
    bs64: int = 32  # batch size at 64 px
    bs224: int = 8  # batch size at 224 px
    seed: int = 0


# ---------------------------------------------------------------- the reference ResNet


def conv_bn(c_in: int, c_out: int, k: int, stride: int, relu: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    return [*layers, nn.ReLU(inplace=True)] if relu else layers


class RefBlock(nn.Module):
    """relu(branch(x) + shortcut(x)); the branch is basic (3x3, 3x3) or bottleneck (1, 3, 1)."""

    def __init__(self, c_in: int, width: int, stride: int, bottleneck: bool) -> None:
        super().__init__()
        c_out = width * 4 if bottleneck else width
        if bottleneck:
            branch = [
                *conv_bn(c_in, width, 1, 1, True),
                *conv_bn(width, width, 3, stride, True),
                *conv_bn(width, c_out, 1, 1, False),
            ]
        else:
            branch = [*conv_bn(c_in, width, 3, stride, True), *conv_bn(width, width, 3, 1, False)]
        self.branch = nn.Sequential(*branch)
        project = stride != 1 or c_in != c_out
        self.shortcut = nn.Sequential(*conv_bn(c_in, c_out, 1, stride, False)) if project else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.branch(x) + identity)


def reference_resnet(depths: tuple[int, ...], bottleneck: bool, classes: int = 1000) -> nn.Module:
    """Stem, four stages, pool, linear, as one nn.Sequential."""
    layers: list[nn.Module] = [
        *conv_bn(3, 64, 7, 2, True),
        nn.MaxPool2d(3, stride=2, padding=1),  # (B, 64, H/4, W/4)
    ]
    c_in = 64
    for stage, (width, depth) in enumerate(zip((64, 128, 256, 512), depths, strict=True)):
        for index in range(depth):
            stride = 2 if stage > 0 and index == 0 else 1
            layers.append(RefBlock(c_in, width, stride, bottleneck))
            c_in = width * 4 if bottleneck else width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, classes)]  # (B, classes)
    return nn.Sequential(*layers)


ARCHS = {
    "resnet18": (resnet18, lambda: reference_resnet((2, 2, 2, 2), bottleneck=False)),
    "resnet50": (resnet50, lambda: reference_resnet((3, 4, 6, 3), bottleneck=True)),
}


def copy_weights(source: nn.Module, target: nn.Module) -> None:
    """Copy tensors in definition order (same layers, other names), checking every shape."""
    src, dst = list(source.state_dict().values()), target.state_dict()
    if len(src) != len(dst):
        raise RuntimeError(f"{len(src)} tensors in lrkit's model, {len(dst)} in the reference")
    for (name, tensor), value in zip(dst.items(), src, strict=True):
        if tensor.shape != value.shape:
            raise RuntimeError(f"reference {name}: shape {tuple(tensor.shape)} != {value.shape}")
        tensor.copy_(value)


# ---------------------------------------------------------------- timing


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> None:
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast:
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    model.zero_grad(set_to_none=True)


def timed(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> float:
    start = time.perf_counter()
    train_step(model, x, y, bf16)
    return time.perf_counter() - start


def bench_setting(
    arch: str, size: int, bf16: bool, channels_last: bool, config: BenchConfig
) -> tuple[float, float, float]:
    """Best images/s of lrkit and of the reference, and the median per-pair speed ratio."""
    make_lrkit, make_ref = ARCHS[arch]
    torch.manual_seed(config.seed)
    ours, ref = make_lrkit().train(), make_ref().train()
    copy_weights(ours, ref)
    bs = config.bs64 if size <= 64 else config.bs224
    gen = torch.Generator().manual_seed(config.seed)
    x = torch.randn(bs, 3, size, size, generator=gen)
    y = torch.randint(0, 1000, (bs,), generator=gen)
    with torch.no_grad():  # same computation: same logits (eval mode: BN running stats)
        diff = (ours.eval()(x) - ref.eval()(x)).abs().max().item()
    if diff > 1e-3:
        raise RuntimeError(f"{arch}: lrkit and reference logits differ by {diff}")
    ours.train(), ref.train()
    if channels_last:
        ours = ours.to(memory_format=torch.channels_last)
        ref = ref.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    for model in (ours, ref):  # warm-up: one-off allocations and kernel choice
        train_step(model, x, y, bf16)
    times: dict[str, list[float]] = {"lrkit": [], "reference": []}
    for repeat in range(config.repeats):
        order = [("lrkit", ours), ("reference", ref)]
        for name, model in order if repeat % 2 == 0 else order[::-1]:
            times[name].append(timed(model, x, y, bf16))
    pairs = [r / o for o, r in zip(times["lrkit"], times["reference"], strict=True)]
    return bs / min(times["lrkit"]), bs / min(times["reference"]), statistics.median(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(BenchConfig.archs), choices=ARCHS)
    parser.add_argument("--sizes", nargs="+", type=int, default=list(BenchConfig.sizes))
    parser.add_argument("--repeats", type=int, default=BenchConfig.repeats)
    parser.add_argument("--bs64", type=int, default=BenchConfig.bs64)
    parser.add_argument("--bs224", type=int, default=BenchConfig.bs224)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    config = BenchConfig(tuple(args.archs), tuple(args.sizes), args.repeats, args.bs64, args.bs224)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
        f"forward+backward, best of {config.repeats} interleaved steps per side"
    )
    header = f"{'arch':9} {'px':>4} {'dtype':5} {'layout':13} {'bs':>3} "
    print(header + f"{'lrkit img/s':>12} {'ref img/s':>10} {'ratio':>6} {'pairs':>6}")
    ratios = []
    for arch in config.archs:
        for size in config.sizes:
            for bf16 in (False, True):
                for channels_last in (False, True):
                    ours, ref, pairs = bench_setting(arch, size, bf16, channels_last, config)
                    ratios.append(ours / ref)
                    bs = config.bs64 if size <= 64 else config.bs224
                    layout = "channels_last" if channels_last else "contiguous"
                    print(
                        f"{arch:9} {size:>4} {'bf16' if bf16 else 'fp32':5} {layout:13} {bs:>3} "
                        f"{ours:>12.1f} {ref:>10.1f} {ours / ref:>6.3f} {pairs:>6.3f}",
                        flush=True,
                    )
    print(f"median over settings of the best-of ratio: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
