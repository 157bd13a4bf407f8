"""Feeding presized uint8 items to the model: dataset, crop-position sampler, batch loader.

The sampler draws the shuffle order and each item's presize crop position from one seeded
generator, so the dataset itself is a pure function of (index, u, v): the same batches come
out whatever the number of worker processes. The batch loader moves each uint8 batch to the
device and runs the batch transform there.
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from lrkit.data.augment import BatchTransform
from lrkit.data.cache import PresizeCache
from lrkit.data.decode import load_rgb
from lrkit.data.presize import PresizeConfig, crop_square, presize_image


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
        self._warned = False

    def __len__(self) -> int:
        return len(self.paths)

    def pixels(self, i: int, u: float = 0.5, v: float = 0.5) -> np.ndarray:
        """(S, S, 3) uint8 presized square of item `i` at crop position (u, v)."""
        if self.cache is not None:
            region = self.cache.region(i)
            if region is not None:
                return np.array(crop_square(region, u, v))
        try:
            return presize_image(load_rgb(self.paths[i], self.cfg.presize), self.cfg, u, v)
        except Exception as err:  # never crash mid-epoch: a grey square stands in, said once
            if not self._warned:
                warnings.warn(f"{self.paths[i]}: {err}; a grey image stands in", stacklevel=2)
                self._warned = True
            return np.full((self.cfg.presize, self.cfg.presize, 3), 128, dtype=np.uint8)

    def __getitem__(
        self, item: tuple[int, float, float] | int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        i, u, v = item if isinstance(item, tuple) else (item, 0.5, 0.5)
        x = torch.from_numpy(self.pixels(i, u, v)).permute(2, 0, 1)  # (3, S, S) uint8
        return x, self.targets[i]


class CropSampler(Sampler):
    """Yields (index, u, v): shuffled with random crop positions, or in order and centred."""

    def __init__(self, n: int, shuffle: bool, generator: torch.Generator | None = None) -> None:
        self.n, self.shuffle, self.generator = n, shuffle, generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, float, float]]:
        if not self.shuffle:
            return iter([(i, 0.5, 0.5) for i in range(self.n)])
        order = torch.randperm(self.n, generator=self.generator).tolist()
        uv = torch.rand(self.n, 2, generator=self.generator).tolist()
        return iter([(i, u, v) for i, (u, v) in zip(order, uv, strict=True)])


def seed_worker(worker_id: int) -> None:
    """Seed Python's and numpy's RNGs in a worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class ImageBatches:
    """Ready batches: uint8 from a DataLoader, moved to `device`, transformed there as a batch."""

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
        self.generator = torch.Generator().manual_seed(seed)
        self.aug_generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.sampler = CropSampler(len(dataset), shuffle, self.generator)
        self.loader = DataLoader(
            dataset,
            batch_size=bs,
            sampler=self.sampler,
            num_workers=num_workers,
            drop_last=drop_last,
            generator=self.generator,
            worker_init_fn=seed_worker if num_workers else None,
            pin_memory=self.device.type == "cuda",
            persistent_workers=num_workers > 0,
        )

    @property
    def dataset(self) -> ImageItems:
        return self.loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            yield self.transform(x, self.aug_generator), y
