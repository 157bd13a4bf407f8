"""Feeding presized items to the model: dataset, batch plan, batch builder, batch loader.

The plan (a sampler) draws the shuffle order, each item's presize crop position and one
augmentation seed per batch from one seeded generator. Building a batch is then a pure
function of its plan entry, so the same batches come out whatever the number of worker
processes. On a CPU device each worker builds whole batches, augmentation included, so the
cores work in parallel; on an accelerator the workers hand over uint8 batches and the batch
transform runs there, with a generator seeded from the same per-batch seed.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from lrkit.data.augment import BatchTransform
from lrkit.data.cache import PresizeCache
from lrkit.data.decode import load_rgb
from lrkit.data.presize import PresizeConfig, crop_square, presize_image

Item = tuple[int, float, float]  # (index, u, v): an item and its presize crop position
Plan = tuple[int, list[Item]]  # (augmentation seed, the batch's items)


def default_num_workers() -> int:
    """Worker processes for this machine: one per CPU core, at most 8; none on a single core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    return 0 if cores < 2 else min(cores, 8)


class ImageItems:
    """Items (file paths) with their targets; item (i, u, v) -> (uint8 (3, S, S), target)."""

    def __init__(
        self,
        paths: Sequence[Path],
        targets: torch.Tensor,
        cfg: PresizeConfig,
        cache: PresizeCache | None = None,
    ) -> None:
        self.paths, self.targets, self.cfg, self.cache = list(paths), targets, cfg, cache

    def __len__(self) -> int:
        return len(self.paths)

    def pixels(self, i: int, u: float = 0.5, v: float = 0.5) -> np.ndarray:
        """(S, S, 3) uint8 presized square of item `i` at crop position (u, v).

        From the cache this is a read-only view into the memory map (no copy). Raises
        ImageDecodeError when the file cannot be decoded.
        """
        if self.cache is not None:
            region = self.cache.region(i)
            if region is not None:
                return crop_square(region, u, v)
        # no stand-in image ever: a file that fails here (changed since the decode check)
        # raises ImageDecodeError naming it
        return presize_image(load_rgb(self.paths[i], self.cfg.presize), self.cfg, u, v)

    def batch_pixels(self, items: Sequence[Item], out: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, S, S) pixels of `items`, written into `out` (any dtype) or a new uint8 tensor.

        Each square is copied once, converted to `out`'s dtype on the way. A new tensor takes
        the layout the pixels come in: channels_last from the cache, planes when decoded.
        """
        if out is None:
            out = torch.empty(
                (len(items), 3, self.cfg.presize, self.cfg.presize),
                dtype=torch.uint8,
                memory_format=self.layout,
            )
        view = out.permute(0, 2, 3, 1).numpy()  # (B, S, S, 3) view of the same memory
        for k, (i, u, v) in enumerate(items):
            view[k] = self.pixels(i, u, v)
        return out

    @property
    def layout(self) -> torch.memory_format:
        """Memory layout the pixels come in (copies that keep it are several times faster)."""
        return torch.channels_last if self.cache is not None else torch.contiguous_format

    def __getitem__(self, item: Item | int) -> tuple[torch.Tensor, torch.Tensor]:
        i, u, v = item if isinstance(item, tuple) else (item, 0.5, 0.5)
        x = torch.from_numpy(np.array(self.pixels(i, u, v))).permute(2, 0, 1)  # (3, S, S) uint8
        return x, self.targets[i]


class BatchPlan(Sampler):
    """Yields one (seed, items) per batch: shuffled items with random crop positions, or in
    order and centred; the seed is the batch's own augmentation seed."""

    def __init__(
        self,
        n: int,
        bs: int,
        shuffle: bool,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if bs < 1:
            raise ValueError(f"batch size must be at least 1, got {bs}")
        self.n, self.bs, self.shuffle, self.drop_last = n, bs, shuffle, drop_last
        self.generator = generator

    def __len__(self) -> int:
        return self.n // self.bs if self.drop_last else -(-self.n // self.bs)

    def __iter__(self) -> Iterator[Plan]:
        # A generator on purpose: nothing is drawn until the first batch is asked for.
        # DataLoader calls iter() twice when it starts worker processes and once without,
        # so eager draws here would give other batches with workers than without.
        if self.shuffle:
            order = torch.randperm(self.n, generator=self.generator).tolist()
            uv = torch.rand(self.n, 2, generator=self.generator).tolist()
            items = [(i, u, v) for i, (u, v) in zip(order, uv, strict=True)]
        else:
            items = [(i, 0.5, 0.5) for i in range(self.n)]
        seeds = torch.randint(0, 2**62, (len(self),), generator=self.generator).tolist()
        for b, seed in enumerate(seeds):
            yield seed, items[b * self.bs : (b + 1) * self.bs]


class BatchBuilder:
    """Plan entry -> batch: (float x transformed, y) when `transform` is given, else
    (uint8 x, y, seed) for a transform that runs elsewhere (on an accelerator)."""

    def __init__(self, items: ImageItems, transform: BatchTransform | None) -> None:
        self.items, self.transform = items, transform
        self._scratch: torch.Tensor | None = None  # (B, 3, S, S) float32, reused batch to batch

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_scratch": None}  # each worker allocates its own

    def _float_pixels(self, items: Sequence[Item]) -> torch.Tensor:
        """(B, 3, S, S) float 0..255 in the reused scratch buffer (no allocation per batch)."""
        side, n = self.items.cfg.presize, len(items)
        if self._scratch is None or self._scratch.shape[0] < n:
            shape = (n, 3, side, side)
            self._scratch = torch.empty(shape, memory_format=self.items.layout)
        return self.items.batch_pixels(items, self._scratch[:n])

    def __getitem__(self, plan: Plan) -> tuple[torch.Tensor, ...]:
        seed, items = plan
        y = self.items.targets[[i for i, _, _ in items]]
        if self.transform is None:
            return self.items.batch_pixels(items), y, torch.tensor(seed)
        g = torch.Generator().manual_seed(seed)
        if not self.transform.train:  # validation resizes uint8 (see augment.resize_batch)
            return self.transform(self.items.batch_pixels(items), g), y
        return self.transform(self._float_pixels(items), g), y


def seed_worker(worker_id: int) -> None:
    """Seed Python's and numpy's RNGs in a worker from torch's per-worker seed; one thread.

    One intra-op thread per worker: the workers already fill the cores, more threads only
    fight over them.
    """
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class ImageBatches:
    """Ready batches: float, normalised, augmented when `transform.train`, on `device`.

    On a CPU device the batch transform runs where the batch is built (in the workers); on
    another device it runs there, after the uint8 batch has been moved.
    """

    def __init__(
        self,
        dataset: ImageItems,
        transform: BatchTransform,
        bs: int,
        shuffle: bool,
        seed: int,
        num_workers: int,
        device: torch.device | str | None = None,
        drop_last: bool = False,
    ) -> None:
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.transform = transform
        self.on_device = self.device.type != "cpu"  # transform after the move, not in workers
        self.generator = torch.Generator().manual_seed(seed)
        self.sampler = BatchPlan(len(dataset), bs, shuffle, drop_last, self.generator)
        # The DataLoader draws its workers' base seed from a generator of its own: it draws
        # once per epoch without persistent workers and once in all with them, so sharing
        # the plan's generator would make later epochs depend on the worker count.
        self.worker_generator = torch.Generator().manual_seed(seed + 1)
        self.builder = BatchBuilder(dataset, None if self.on_device else transform)
        self.loader = DataLoader(
            self.builder,
            batch_size=None,  # the builder makes whole batches
            sampler=self.sampler,
            num_workers=num_workers,
            generator=self.worker_generator,
            worker_init_fn=seed_worker if num_workers else None,
            pin_memory=self.device.type == "cuda",
            persistent_workers=num_workers > 0,
        )

    @property
    def dataset(self) -> ImageItems:
        return self.builder.items

    def set_stats(self, stats: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
        """Normalise with per-channel (mean, std) of 0..1 pixels from the next batch on.

        Persistent workers already started hold the old transform; they are stopped, and the
        next iteration starts fresh ones.
        """
        self.transform = dataclasses.replace(self.transform, stats=stats)
        if self.builder.transform is not None:
            self.builder.transform = self.transform
        iterator = self.loader._iterator  # where DataLoader keeps its persistent workers
        if iterator is not None:
            iterator._shutdown_workers()
            self.loader._iterator = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            if not self.on_device:
                yield batch
                continue
            x, y, seed = batch
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            g = torch.Generator(device=self.device).manual_seed(int(seed))
            yield self.transform(x, g), y
