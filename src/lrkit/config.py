"""Every default stated once: one frozen dataclass per concern, read by the library and CLI.

Library signatures take their defaults from the instances below (`RANGE_TEST.num_it`,
`DATA.presize`, ...), and the command line's options take theirs from the same instances, so
`lrkit.lr_find(...)` and `lrkit find ...` run the same test unless told otherwise. Results save
the resolved config they ran with (`dataclasses.asdict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REPEATS = 3  # lr_find_repeated: range tests from the same weights on different data orders


@dataclass(frozen=True)
class RangeTestConfig:
    """The settings of one range test; saved with its result."""

    start_lr: float = 1e-7  # learning rate of the first step
    end_lr: float = 10.0  # learning rate the sweep would reach at step num_it
    num_it: int = 100  # optimizer steps at most
    mode: str = "exp"  # "exp": geometric steps; "linear": equal steps
    beta: float = 0.98  # smoothing of the loss (debiased exponential moving average)
    div_thresh: float | None = 4.0  # stop once the smoothed loss rises (div_thresh - 1) x the
    # curve's scale above its best; see `has_diverged` (None: never stop on divergence)
    accum_steps: int = 1  # batches whose gradients are averaged in each optimizer step
    val_batches: int = 4  # with a val_loader: how many of its batches make the fixed set
    grad_clip: float | None = None  # max gradient norm, None for no clipping

    def check(self) -> None:
        """Refuse impossible settings before anything is touched."""
        if not (self.start_lr > 0 and math.isfinite(self.end_lr)):
            raise ValueError(
                f"start_lr must be > 0 and end_lr finite, got start_lr={self.start_lr}, "
                f"end_lr={self.end_lr}"
            )
        if self.start_lr >= self.end_lr:
            raise ValueError(
                f"start_lr ({self.start_lr:g}) must be below end_lr ({self.end_lr:g}): the range "
                "test sweeps upwards"
            )
        if isinstance(self.num_it, bool) or not isinstance(self.num_it, int):
            raise ValueError(f"num_it must be a whole number of steps, got {self.num_it!r}")
        if self.num_it < 10:
            raise ValueError(
                f"num_it={self.num_it} is too few: the suggestion rules drop the first 10% and "
                "the last 5 points; use num_it >= 10 (100 is typical)"
            )
        if self.mode not in ("exp", "linear"):
            raise ValueError(f"mode must be 'exp' or 'linear', got {self.mode!r}")
        if not 0 <= self.beta < 1:
            raise ValueError(f"beta must be in [0, 1), got {self.beta}")
        if self.div_thresh is not None and self.div_thresh <= 1:
            raise ValueError(
                f"div_thresh must be > 1 (or None to never stop), got {self.div_thresh}"
            )
        if self.accum_steps < 1:
            raise ValueError(f"accum_steps must be >= 1, got {self.accum_steps}")
        if self.val_batches < 1:
            raise ValueError(f"val_batches must be >= 1, got {self.val_batches}")


@dataclass(frozen=True)
class DataConfig:
    """How the image pipeline (`image_dataloaders`, `csv_dataloaders`, the dataset recipes)
    makes loaders when not told otherwise."""

    valid_pct: float = 0.5  # share of the items a random split holds out for validation
    seed: int = 73  # the random split, the shuffle order and the augmentation draws
    presize: int = 460  # pixels: each image is presized once to a square of this side
    size: int = 224  # pixels: the side of the model's input (training and validation)
    min_scale: float = 0.75  # smallest share of the presized square a random crop keeps
    bs: int = 32  # images per batch


RANGE_TEST = RangeTestConfig()
DATA = DataConfig()
