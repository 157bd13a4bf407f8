"""The pieces of a training step that the Learner and the range test share.

Gradient accumulation: the batches of one window each add their share of the window's mean
loss to the gradients, so the optimizer step sees the mean gradient over the batches that
are actually in the window. A window is `accum_steps` batches, except the last one of an
epoch whose length is not a multiple of `accum_steps`: it holds only the rest, and its step
must not be scaled down for the batches it does not have.
"""

from __future__ import annotations

import torch


def window_size(index: int, n_batches: int | None, accum_steps: int) -> int:
    """How many batches the accumulation window of batch `index` holds (counted from 0).

    `n_batches` is the epoch's length; None for an endless stream (the range test cycles its
    loader), where every window is full, as it is past the length a loader announced. Raises
    ValueError for accum_steps < 1 or a negative index.
    """
    if accum_steps < 1:
        raise ValueError(f"accum_steps must be >= 1, got {accum_steps}")
    if index < 0:
        raise ValueError(f"batch index must be >= 0, got {index}")
    if n_batches is None or index >= n_batches:
        return accum_steps
    start = index - index % accum_steps
    return min(accum_steps, n_batches - start)


def backward_share(
    loss: torch.Tensor, window: int, scaler: torch.amp.GradScaler | None = None
) -> None:
    """Backward of one batch's share of its window's mean loss: `loss / window`, through the
    fp16 gradient scaler when there is one. Gradients add up over the window's batches."""
    share = loss / window if window > 1 else loss
    (scaler.scale(share) if scaler is not None else share).backward()
