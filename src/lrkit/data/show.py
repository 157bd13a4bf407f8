"""Looking at a batch: fetch one without leaving a trace, undo normalisation, label the images."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from lrkit.snapshot import LoaderStates


@contextlib.contextmanager
def preserved_rng(loader: Iterable) -> Iterator[None]:
    """Inside: iterate `loader` freely; after: its generators, the global RNGs and any live
    persistent workers are as they were (see `lrkit.snapshot.LoaderStates`)."""
    states = LoaderStates.capture([loader])
    try:
        yield
    finally:
        states.restore()


def peek_batch(loader: Iterable) -> Any:
    """The first batch of `loader`, leaving no trace (see `preserved_rng`)."""
    with preserved_rng(loader):
        return next(iter(loader))


def to_display(
    x: torch.Tensor, stats: tuple[Sequence[float], Sequence[float]] | None
) -> np.ndarray:
    """(B, C, H, W) normalised float -> (B, H, W, C) uint8; min-max scaled without stats."""
    x = x.detach().float().cpu()
    if stats is not None:
        mean = torch.tensor(stats[0]).view(1, -1, 1, 1)
        std = torch.tensor(stats[1]).view(1, -1, 1, 1)
        x = x * std + mean
    else:
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (hi - lo).clamp_min(1e-8)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def label_names(y: torch.Tensor, vocab: Sequence[str] | None, multi_label: bool) -> list[str]:
    """Readable labels: a class name, or the names of every positive class joined by ';'."""
    y = y.detach().cpu()
    if multi_label:
        rows = [torch.nonzero(row > 0.5).flatten().tolist() for row in y]
        return [";".join(vocab[i] if vocab else str(i) for i in row) for row in rows]
    return [vocab[int(i)] if vocab else str(int(i)) for i in y]


def show_batch(
    dls: Any, path: str | Path | None = None, n: int = 9, split: str = "train"
) -> Figure:
    """Figure of the first `n` images of a `split` ("train" or "valid") batch with labels."""
    from lrkit.plots import show_batch_figure

    if split not in ("train", "valid"):
        raise ValueError(f'split must be "train" or "valid", got {split!r}')
    loader = dls.train if split == "train" else dls.valid
    if loader is None:
        raise ValueError(f"these DataLoaders have no {split} loader to show")
    try:
        x, y = peek_batch(loader)[:2]
    except StopIteration:  # an empty loader yields no batch at all
        raise ValueError(
            f"the {split} split has no items to show; show the other split, or give this one "
            "items (e.g. valid_pct > 0 for a validation split)"
        ) from None
    images = to_display(x[:n], dls.stats)
    labels = label_names(y[:n], dls.vocab, dls.multi_label)
    return show_batch_figure(images, labels, path=path)
