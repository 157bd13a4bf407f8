"""GPU checks for a lent CUDA machine (never needed by the project or its tests).

1. `lr_find` leaves no trace on CUDA: every parameter, buffer and optimizer state tensor of a
   resnet18 learner (bf16 autocast, channels_last) is bit-identical after the range test, and
   training afterwards equals training without it.
2. The seed recipe's shape runs on the GPU: vision_learner resnet18 on synthetic 224 px
   images, range test, fit_one_cycle, unfreeze, range test, sliced fit; prints images/s of the
   fit against the model's bare forward+backward throughput on the same batches.
Usage: python benchmarks/gpu_check.py [--deterministic]
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lrkit


def dls(n: int = 512, size: int = 224, bs: int = 64) -> lrkit.DataLoaders:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=gen)
    y = torch.randint(0, 37, (n,), generator=gen)
    train = DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True,
                       generator=torch.Generator().manual_seed(1), drop_last=True)  # fmt: skip
    valid = DataLoader(TensorDataset(x[:128], y[:128]), batch_size=bs)
    return lrkit.DataLoaders(train, valid, vocab=[str(i) for i in range(37)])


def learner(**kwargs) -> lrkit.Learner:
    torch.manual_seed(0)
    return lrkit.vision_learner(dls(), "resnet18", pretrained=False, device="cuda",
                                progress=False, **kwargs)  # fmt: skip


def state(learn) -> dict:
    return copy.deepcopy({"model": learn.model.state_dict(), "opt": learn.opt.state_dict()})


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def run(with_range_test: bool) -> dict:
    """Seed, build, one epoch, (the range test), one more epoch: the state at the end."""
    learn = learner(mixed_precision="bf16", channels_last=True)  # seeds torch (CUDA too)
    learn.fit(1, 1e-3)
    if with_range_test:
        before = state(learn)
        res = learn.lr_find(num_it=30, progress=False)
        print(f"no-trace: state right after lr_find bit-identical: {same(before, state(learn))}; "
              f"auto={res.suggest('auto'):.3g} stop={res.stop_reason}")  # fmt: skip
    learn.fit(1, 1e-3)
    return state(learn)


def no_trace() -> None:
    control = same(run(False), run(False))
    print(f"no-trace: control, two runs without a range test equal: {control}")
    equal = same(run(False), run(True))
    print(f"no-trace: the run with a range test equals the one without: {equal}")


def recipe() -> None:
    learn = learner(mixed_precision="bf16", channels_last=True)
    learn.freeze()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    hi = learn.lr_find(num_it=50, progress=False).suggest("minimum")
    t1 = time.perf_counter()
    learn.fit_one_cycle(2, hi)
    learn.unfreeze()
    hi2 = learn.lr_find(num_it=50, progress=False).suggest("minimum")
    learn.fit_one_cycle(2, slice(hi2 / 100, hi2))
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    n_images = 4 * 512 + 100 * 64  # fit epochs + range-test batches
    print(
        f"recipe: range test 50 it {t1 - t0:.2f}s; whole recipe {t2 - t0:.2f}s, "
        f"{n_images / (t2 - t0):.0f} images/s incl. validation; final {learn.recorder.log[-1]}"
    )
    # the model alone: forward + backward + step on the same batch shape
    model = learn.model.train()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    x = torch.randn(64, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 37, (64,), device="cuda")
    for i in range(40):
        if i == 10:
            torch.cuda.synchronize()
            t3 = time.perf_counter()
        with torch.autocast("cuda", torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    bare = 30 * 64 / (time.perf_counter() - t3)
    print(f"recipe: bare forward+backward+step {bare:.0f} images/s (bf16, channels_last)")


if __name__ == "__main__":
    import os
    import sys

    if "--deterministic" in sys.argv:  # CUDA's atomics-based kernels differ run to run
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    print(torch.__version__, torch.cuda.get_device_name())
    no_trace()
    recipe()
