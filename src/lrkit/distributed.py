"""torchrun / DistributedDataParallel: who we are, and exact reductions across processes.

Every function works without a process group too (one process, rank 0 of 1), so library code
calls them unconditionally. Reductions run on the CPU under gloo and on the current CUDA device
under NCCL (NCCL reduces only CUDA tensors).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether a torch.distributed process group is initialized (e.g. by a torchrun script)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process is the one that prints, logs, saves and exports (rank 0)."""
    return rank() == 0


def _reduce_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum of `values` over all ranks, in float64 (the values themselves alone)."""
    if not is_distributed():
        return [float(v) for v in values]
    total = torch.tensor(values, dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.tolist()


def mean_over_ranks(value: float) -> float:
    """`value` averaged over all ranks, so every rank records the same number."""
    if not is_distributed():
        return value
    return all_sum([value])[0] / world_size()


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on at least one: a stop all ranks agree on."""
    if not is_distributed():
        return flag
    return all_sum([1.0 if flag else 0.0])[0] > 0


def average_gradients(params: list[torch.Tensor]) -> None:
    """Replace each parameter's gradient by its mean over ranks (for a model not wrapped in
    DistributedDataParallel, which averages by itself). A missing gradient counts as zeros on
    the ranks that have none only when some rank has one; all ranks must pass the same list."""
    if not is_distributed() or world_size() == 1:
        return
    has = all_sum([0.0 if p.grad is None else 1.0 for p in params])
    n = world_size()
    for param, count in zip(params, has, strict=True):
        if count == 0:
            continue
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        grad = param.grad
        buffer = grad if grad.device == _reduce_device() else grad.to(_reduce_device())
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        buffer /= n
        if buffer is not grad:
            grad.copy_(buffer)
