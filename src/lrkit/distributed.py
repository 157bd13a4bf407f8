"""torchrun / DistributedDataParallel: who we are, exact reductions, and data split by rank.

Every function works without a process group too (one process, rank 0 of 1), so library code
calls them unconditionally. Reductions run on the CPU under gloo and on the current CUDA device
under NCCL (NCCL reduces only CUDA tensors).

Training data is split so every rank takes the same number of steps (DDP needs that): item
loaders through a DistributedSampler (its epoch set every epoch, padded like torch does),
batch-per-entry loaders (lrkit's image loaders) by taking every world-th batch. Validation data
is split into contiguous blocks with no padding and nothing twice, so sums over ranks are the
sums one process would make, and gathering in rank order gives the single-process order.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

T = TypeVar("T")


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


def barrier() -> None:
    """Wait until every rank gets here (nothing without a process group)."""
    if is_distributed():
        dist.barrier()


def on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only (a save, an export); every rank returns its result, or raises its
    error, once rank 0 has finished, so no rank reads a file before it is written."""
    if not is_distributed():
        return fn()
    outcome: tuple[str, Any] | None = None
    if is_main():
        try:
            outcome = ("ok", fn())
        except Exception as error:  # every rank must learn that rank 0 failed, not hang
            outcome = ("error", error)
    box = [outcome]
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def gather(value: Any) -> list[Any]:
    """`value` from every rank, in rank order (one process: `[value]`)."""
    if not is_distributed():
        return [value]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def local_device(device: torch.device | str | None = None) -> torch.device:
    """`device`, or CUDA when there is a GPU and else the CPU; under torchrun a bare "cuda" is
    this process's GPU, cuda:LOCAL_RANK (made the current device)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type != "cuda" or not is_distributed():
        return device
    if device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank())))
    torch.cuda.set_device(device)
    return device


def wrap_ddp(model: nn.Module, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """`model` in DistributedDataParallel (its trainable parameters as they are now; rank 0's
    weights and buffers are copied to every rank). With `sync_bn` the BatchNorm layers are
    made SyncBatchNorm first (same parameter objects), which needs CUDA. Raises ValueError."""
    if sync_bn:
        if device.type != "cuda":
            raise ValueError(
                f"sync_bn needs a CUDA device per process (got {device}); SyncBatchNorm does not "
                "run on the CPU, so train without it there"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


class PickSampler(Sampler):
    """The entries of another sampler at the positions in `keep` (a range), drawn in full each
    time so that any random generator it uses advances as it would on a single process."""

    def __init__(self, inner: Any, keep: range) -> None:
        self.inner, self.keep = inner, keep

    def __len__(self) -> int:
        return len(self.keep)

    def __iter__(self) -> Iterator[Any]:
        for position, entry in enumerate(self.inner):
            if position in self.keep:
                yield entry


def _shared_seed(loader: DataLoader) -> int:
    """Rank 0's shuffle seed (its loader generator's seed, else torch's), the same everywhere."""
    generator = loader.generator
    seed = generator.initial_seed() if generator is not None else torch.initial_seed()
    seed %= 2**31
    return int(all_sum([float(seed) if is_main() else 0.0])[0])


def _rebuild(loader: DataLoader, **change: Any) -> DataLoader:
    """A DataLoader like `loader` (dataset, workers, collate, ...) with `change` applied."""
    workers = loader.num_workers
    settings = dict(
        batch_size=loader.batch_size,
        num_workers=workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor if workers else None,
        persistent_workers=loader.persistent_workers,
        multiprocessing_context=loader.multiprocessing_context if workers else None,
    )
    settings.update(change)
    return DataLoader(loader.dataset, **settings)


def _split_dataloader(loader: DataLoader, train: bool) -> DataLoader:
    world, me = world_size(), rank()
    if loader.batch_size is not None:  # batches made from items: split the items
        if train:
            sampler = DistributedSampler(
                loader.dataset,
                num_replicas=world,
                rank=me,
                shuffle=isinstance(loader.sampler, RandomSampler),
                seed=_shared_seed(loader),
                drop_last=loader.drop_last,
            )
        else:
            sampler = PickSampler(loader.sampler, block(len(loader.sampler), me, world))
        return _rebuild(loader, sampler=sampler)
    # the sampler (or a custom batch sampler) yields one entry per batch: split the batches
    custom = loader.batch_sampler is not None
    inner = loader.batch_sampler if custom else loader.sampler
    n = len(inner)
    keep = range(me, n - n % world, world) if train else block(n, me, world)
    picked = PickSampler(inner, keep)
    if custom:
        return _rebuild(loader, batch_size=1, batch_sampler=picked, drop_last=False)
    return _rebuild(loader, sampler=picked)


def block(n: int, me: int, world: int) -> range:
    """Rank `me`'s contiguous share of range(n): sizes differ by at most one, nothing twice."""
    size, extra = divmod(n, world)
    start = me * size + min(me, extra)
    return range(start, start + size + (1 if me < extra else 0))


class PickedBatches:
    """The batches of a re-iterable `loader` at the positions in `keep` (a range)."""

    def __init__(self, loader: Iterable, keep: range) -> None:
        self.loader, self.keep = loader, keep

    def __len__(self) -> int:
        return len(self.keep)

    def __iter__(self) -> Iterator[Any]:
        for position, batch in enumerate(self.loader):
            if position in self.keep:
                yield batch


def split_loader(loader: Iterable, train: bool) -> Iterable:
    """This rank's share of `loader` (the loader itself without a process group).

    `train`: an equal number of batches per rank, a different order each epoch (see
    `set_epoch`). Otherwise a contiguous block, no padding. A torch DataLoader is rebuilt with
    a sampler that splits it (batch size per rank kept); a wrapper holding one as `.loader`
    (lrkit's image loaders) gets a copy holding the split one. Raises ValueError for a loader
    without a length.
    """
    if not is_distributed() or world_size() == 1:
        return loader
    if isinstance(loader, DataLoader):
        return _split_dataloader(loader, train)
    inner = getattr(loader, "loader", None)
    if isinstance(inner, DataLoader):
        shard = copy.copy(loader)
        shard.loader = _split_dataloader(inner, train)
        return shard
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(
            f"a {type(loader).__name__} without a length cannot be split between processes; "
            "pass a torch DataLoader"
        ) from None
    me, world = rank(), world_size()
    return PickedBatches(loader, range(me, n - n % world, world) if train else block(n, me, world))


def set_epoch(loader: Iterable, epoch: int) -> None:
    """Give a split loader's DistributedSampler its epoch, so each epoch has its own order."""
    for holder in (loader, getattr(loader, "loader", None)):
        sampler = getattr(holder, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)


class Parallel:
    """A learner's DDP wrapper and the shares of its loaders, made when first needed and kept.

    The wrapper is rebuilt when the set of trainable parameters changes (freeze/unfreeze), as
    DDP only averages the gradients of parameters that were trainable when it was built.
    Without a process group everything is passed through unchanged.
    """

    def __init__(self, sync_bn: bool = False) -> None:
        self.sync_bn = sync_bn
        self._ddp: nn.Module | None = None
        self._key: tuple[int, ...] = ()
        self._shares: dict[tuple[int, bool], tuple[Iterable, Iterable]] = {}

    def model(self, module: nn.Module, device: torch.device) -> nn.Module:
        """`module` wrapped in DDP under torch.distributed, else `module` itself."""
        if not is_distributed():
            return module
        key = (id(module), *(id(p) for p in module.parameters() if p.requires_grad))
        if self._ddp is None or key != self._key:
            self._ddp, self._key = wrap_ddp(module, device, self.sync_bn), key
        return self._ddp

    def loader(self, loader: Iterable, train: bool) -> Iterable:
        """This rank's share of `loader` (see `split_loader`), the same object every time."""
        if not is_distributed():
            return loader
        kept = self._shares.get((id(loader), train))
        if kept is None or kept[0] is not loader:
            kept = (loader, split_loader(loader, train))
            self._shares[(id(loader), train)] = kept
        return kept[1]


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank: each rank's last
    training forward updated them from its own batch, and validation must not depend on that."""
    if not is_distributed():
        return
    device = _reduce_device()
    for buffer in model.buffers():
        moved = buffer if buffer.device == device else buffer.to(device)
        dist.broadcast(moved, src=0)
        if moved is not buffer:
            buffer.copy_(moved)


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (its environment names a rank and world)."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


@contextlib.contextmanager
def torchrun_session() -> Iterator[None]:
    """Inside a torchrun launch without a process group: start one (NCCL when there are GPUs,
    gloo otherwise) for the duration, then end it. Elsewhere: nothing."""
    if is_distributed() or not launched_by_torchrun():
        yield
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def quiet_unless_main() -> Iterator[None]:
    """On ranks other than 0, stdout and stderr go nowhere (rank 0 speaks for the launch)."""
    if is_main():
        yield
        return
    with (
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        yield
