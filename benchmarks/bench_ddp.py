"""Scaling of one `Learner.fit` epoch with 1 and 2 processes (DDP), on the CPU and on GPUs.

The same small CNN and the same synthetic data set; with 2 processes each rank trains on half
of it (DistributedSampler), batch size per rank kept, so an ideal speed-up is 2x. Each run
does one warm-up epoch, then times one epoch (rank 0's wall clock, after a barrier). Processes
are started the way torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR/PORT on 127.0.0.1);
the CPU runs use gloo with `--threads` threads per process, the GPU runs NCCL with one GPU per
process (when at least 2 are visible; one GPU gets the 1-process number only).

    .venv/bin/python benchmarks/bench_ddp.py [--items 2048] [--bs 64] [--threads 1]

Prints seconds per epoch for 1 and 2 processes and the speed-up t1 / t2.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

SRC = Path(__file__).resolve().parents[1] / "src"


def model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip


def worker(items: int, bs: int, device: str) -> None:
    """One rank (or the only process): warm-up epoch, timed epoch; rank 0 prints JSON."""
    from lrkit import DataLoaders, Learner, distributed

    with distributed.torchrun_session():
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(items, 3, 32, 32, generator=gen)  # (N, 3, 32, 32) synthetic images
        y = torch.randint(0, 10, (items,), generator=gen)
        train = DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True, generator=gen)
        torch.manual_seed(0)
        learn = Learner(model(), DataLoaders(train), nn.CrossEntropyLoss(), device=device,
                        progress=False)  # fmt: skip
        warnings.simplefilter("ignore")  # "no validation data"
        learn.fit(1, 1e-3)
        distributed.barrier()
        if learn.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        learn.fit(1, 1e-3)
        if learn.device.type == "cuda":
            torch.cuda.synchronize()
        distributed.barrier()
        seconds = time.perf_counter() - start
        if distributed.is_main():
            print(json.dumps({"seconds": seconds, "world": distributed.world_size()}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(n: int, args: argparse.Namespace, device: str) -> float:
    """Seconds of one epoch with `n` processes."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(SRC))
    port = free_port()
    code = f"import bench_ddp; bench_ddp.worker({args.items}, {args.bs}, {device!r})"
    rendezvous = {"WORLD_SIZE": str(n), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    procs = []
    for rank in range(n):
        ranked = {"RANK": str(rank), "LOCAL_RANK": str(rank), "GLOO_SOCKET_IFNAME": "lo"}
        command = [sys.executable, "-c", code]
        rank_env = dict(env, **rendezvous, **ranked) if n > 1 else env
        cwd = Path(__file__).parent
        procs.append(
            subprocess.Popen(command, env=rank_env, cwd=cwd, stdout=subprocess.PIPE, text=True)
        )
    outputs = [proc.communicate()[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise SystemExit(f"a worker failed: {[proc.returncode for proc in procs]}")
    return json.loads(outputs[0].strip().splitlines()[-1])["seconds"]


def report(label: str, args: argparse.Namespace, device: str, can_two: bool) -> None:
    one = launch(1, args, device)
    if not can_two:
        print(f"{label}: 1 process {one:.2f} s/epoch (2 processes need 2 devices)")
        return
    two = launch(2, args, device)
    print(f"{label}: 1 process {one:.2f} s/epoch, 2 processes {two:.2f} s/epoch, "
          f"speed-up {one / two:.2f}x (ideal 2x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2048)
    parser.add_argument("--bs", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per CPU process")
    args = parser.parse_args()
    print(f"{args.items} items, batch {args.bs} per process, {os.cpu_count()} CPU cores")
    report(f"CPU (gloo, {args.threads} thread(s) per process)", args, "cpu", True)
    if torch.cuda.is_available():
        report("CUDA (NCCL)", args, "cuda", torch.cuda.device_count() >= 2)


if __name__ == "__main__":
    main()
