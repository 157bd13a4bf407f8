"""`DataLoaders`: a train and a valid loader that travel together, with their vocabulary."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrkit.data.preprocess import Preprocess, Stats

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def length_or_none(obj: Any) -> int | None:
    """len(obj), or None for objects without a length (iterables, streams)."""
    try:
        return len(obj)
    except TypeError:
        return None


def drops_last_train_batch(n_items: int, bs: int) -> bool:
    """Whether a training loader drops its last, partial batch: yes once one full batch exists.

    A last batch of one image breaks BatchNorm in training mode, and a tiny batch is a noisy
    step; with shuffling, every item still gets its turn over the epochs.
    """
    return n_items >= bs


class DataLoaders:
    """A train loader, an optional valid loader and the class names (`vocab`).

    Plain PyTorch DataLoaders (or any re-iterable of batches) are welcome; the image pipeline
    returns this same class with `vocab` filled in, and `preprocess`: the frozen record of what
    validation does to one image (presize, size, stats), which an export keeps so that
    `predict` makes the same input of an image file. `stats` given alone become that record's
    mean/std; given with `preprocess`, they must agree (ValueError).
    """

    def __init__(
        self,
        train: Iterable,
        valid: Iterable | None = None,
        vocab: Sequence[str] | None = None,
        multi_label: bool = False,
        stats: tuple[Sequence[float], Sequence[float]] | None = None,
        junk: Sequence[Any] = (),
        preprocess: Preprocess | None = None,
    ) -> None:
        self.train = train
        self.valid = valid
        self.vocab = list(vocab) if vocab is not None else None
        self.multi_label = multi_label
        if preprocess is None:
            preprocess = Preprocess().with_stats(stats) if stats is not None else None
        elif stats is not None and preprocess.stats != Preprocess().with_stats(stats).stats:
            raise ValueError(
                f"stats {stats} disagree with the preprocessing's {preprocess.stats}; give one"
            )
        self.preprocess = preprocess  # None: nothing known of how an input is made
        # Files the image pipeline left out, as (path, reason) records.
        self.junk = list(junk)

    @property
    def stats(self) -> Stats | None:
        """Per-channel (mean, std) the batches were normalised with; show_batch undoes it."""
        return self.preprocess.stats if self.preprocess is not None else None

    @stats.setter
    def stats(self, stats: tuple[Sequence[float], Sequence[float]] | None) -> None:
        """Record new normalisation stats (the loaders themselves are not changed)."""
        self.preprocess = (self.preprocess or Preprocess()).with_stats(stats)

    @property
    def n_train(self) -> int | None:
        """Number of training items, when the loader's dataset has a length."""
        return length_or_none(getattr(self.train, "dataset", None))

    @property
    def n_valid(self) -> int | None:
        """Number of validation items (0 without a valid loader)."""
        if self.valid is None:
            return 0
        return length_or_none(getattr(self.valid, "dataset", None))

    @property
    def c(self) -> int | None:
        """Number of classes, from the vocabulary."""
        return len(self.vocab) if self.vocab is not None else None

    def show_batch(
        self, path: str | Path | None = None, n: int = 9, split: str = "train"
    ) -> Figure:
        """A grid of the first `n` images of one batch with their labels; PNG when `path` is given.

        Random states of the loader (shuffle, augmentation) are restored afterwards, so looking
        at a batch does not change the training that follows.
        """
        from lrkit.data.show import show_batch

        return show_batch(self, path=path, n=n, split=split)

    def __repr__(self) -> str:
        return (
            f"DataLoaders(n_train={self.n_train}, n_valid={self.n_valid}, "
            f"classes={self.c}, multi_label={self.multi_label})"
        )
