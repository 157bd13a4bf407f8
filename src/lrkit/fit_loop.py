"""The Learner's fit loop: epochs of (schedule -> TrainStep -> callbacks), then validation.

Callbacks run at a fixed list of hooks (`lrkit.callbacks.HOOKS`) and stop training through the
learner's `stop` flag. Each batch goes through the one `lrkit.step.TrainStep`; this module only
owns the order of things: the learning-rate schedule, accumulation windows, divergence handling
(a batch whose loss or gradient is not finite leaves no trace) and the epoch log.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lrkit import distributed
from lrkit.callbacks import HOOKS, Callback
from lrkit.data.dataloaders import length_or_none
from lrkit.interrupt import stop_on_interrupt
from lrkit.schedule import progress
from lrkit.step import StepOptions, TrainStep, all_finite, window_size

if TYPE_CHECKING:
    from lrkit.learner import Learner


@dataclass
class TrainOptions(StepOptions):
    """How each batch is trained (see `StepOptions`), plus the model's own settings."""

    channels_last: bool = False  # model and 4-D inputs in NHWC memory format
    compile: bool = False  # run the model through torch.compile for training and validation
    train_bn: bool = True  # BatchNorm parameters stay trainable in frozen groups


# schedule(pct) -> (one lr per group, momentum or None to leave it alone)
Schedule = Callable[[float], tuple[list[float], float | None]]


def run_callbacks(learn: Learner, callbacks: list[Callback], hook: str) -> None:
    """Call `hook` on every callback, in order (under torchrun, output-only ones on rank 0)."""
    assert hook in HOOKS
    main = distributed.is_main()
    for cb in callbacks:
        if main or not getattr(cb, "main_process_only", False):
            getattr(cb, hook)(learn)


def run_fit(learn: Learner, n_epoch: int, schedule: Schedule, cbs: Sequence[Callback]) -> None:
    """Train `n_epoch` epochs following `schedule`; validates after each full epoch.

    Raises ValueError for a negative `n_epoch` or a train loader that is empty or has no length.
    """
    if n_epoch < 0:
        raise ValueError(f"n_epoch must be >= 0, got {n_epoch}")
    loader = learn._share(learn.dls.train, train=True)
    learn.n_iter = length_or_none(loader)
    if learn.n_iter == 0:
        raise ValueError("the train loader yields no batches; check its dataset and batch size")
    if learn.n_iter is None:
        raise ValueError(
            "the train loader has no length, and the schedule needs the number of steps; "
            "wrap it in something with __len__"
        )
    total = n_epoch * learn.n_iter
    callbacks = sorted([*learn.cbs, *cbs], key=lambda cb: cb.order)
    learn.n_epoch, learn.epoch, learn.iter, step = n_epoch, 0, 0, 0
    learn.stop, learn.stop_reason = False, None
    learn.interrupted, learn.diverged = False, False
    learn._warned_no_valid = False
    train_step = learn.train_step()
    with stop_on_interrupt(learn):
        try:
            run_callbacks(learn, callbacks, "before_fit")
            for epoch in range(n_epoch):
                learn.epoch = epoch
                start = time.perf_counter()
                learn._train_mode(learn.model)
                distributed.set_epoch(loader, learn._epochs_run)
                learn._epochs_run += 1
                run_callbacks(learn, callbacks, "before_epoch")
                losses = train_epoch(learn, loader, train_step, callbacks, schedule, step, total)
                distributed.broadcast_buffers(learn.model)  # every rank validates alike
                step += learn.n_iter
                if learn.stop and (learn.interrupted or learn.diverged or learn._mid_epoch):
                    break
                results = learn.validate()
                learn.epoch_log = {
                    "epoch": epoch,
                    "train_loss": sum(losses) / len(losses),
                    **results,
                    "time": time.perf_counter() - start,
                }
                run_callbacks(learn, callbacks, "after_epoch")
                agree_on_stop(learn)
                if learn.stop:
                    break
        finally:
            learn.opt.zero_grad(set_to_none=True)
            run_callbacks(learn, callbacks, "after_fit")


def train_epoch(
    learn: Learner,
    loader: Iterable,
    train_step: TrainStep,
    callbacks: list[Callback],
    schedule: Schedule,
    step: int,
    total: int,
) -> list[float]:
    """One pass over the train loader from global step `step` of `total`; the batch losses."""
    losses: list[float] = []
    trainable = learn._trainable()
    if not trainable:
        raise ValueError("no parameter requires a gradient; unfreeze a layer group first")
    learn._mid_epoch = False
    pending = 0
    # Buffers (BatchNorm running stats) as they were before the batch: a batch whose loss or
    # gradient is not finite must not leave its statistics behind.
    buffers = list(learn.model.buffers())
    saved = [b.detach().clone() for b in buffers]
    for index, batch in enumerate(loader):
        learn.iter = index
        lrs, mom = schedule(progress(step + index, total))
        learn._set_hypers(lrs, mom)
        run_callbacks(learn, callbacks, "before_batch")
        for copy, buffer in zip(saved, buffers, strict=True):
            copy.copy_(buffer)
        loss = train_step.loss(batch)
        value = float(loss.detach())
        if not all_finite(value):  # every rank stops at the same batch, before its backward
            what = f"the loss is {value}"
            if math.isfinite(value):
                what = "the loss of another process is not finite"
            diverge(learn, what, index, buffers, saved)
            break
        # each batch adds its share of the mean over the batches its window really holds
        window = window_size(index, learn.n_iter, learn.options.accum_steps)
        train_step.backward(loss, window)
        pending += 1
        if pending == window:
            pending = 0
            if not _apply(learn, train_step, trainable, index):
                restore(buffers, saved)
                break
        learn.batch_loss = value
        losses.append(value)
        run_callbacks(learn, callbacks, "after_batch")
        agree_on_stop(learn)
        if learn.stop:
            learn._mid_epoch = index + 1 < learn.n_iter
            break
    else:
        if pending:  # the epoch's leftover batches
            _apply(learn, train_step, trainable, learn.iter)
    return losses


def agree_on_stop(learn: Learner) -> None:
    """Under torchrun: when any rank stopped (Ctrl-C, a callback), every rank stops here too,
    with the same flags, so no rank waits for the others in a collective."""
    if not distributed.is_distributed():
        return
    flags = [float(learn.stop), float(learn.interrupted), float(learn.diverged)]
    stop, interrupted, diverged = (total > 0 for total in distributed.all_sum(flags))
    if stop and not learn.stop:
        learn.stop_reason = "another process stopped training"
    learn.stop, learn.interrupted, learn.diverged = stop, interrupted, diverged


def _apply(learn: Learner, train_step: TrainStep, trainable: list, index: int) -> bool:
    """The window's optimizer step; False (and stop) when its gradient is not finite."""
    norm = train_step.apply(trainable)
    if train_step.scaler is None and not math.isfinite(norm):
        diverge(learn, f"the gradient norm is {norm}", index)
        return False
    return True


def restore(buffers: list[torch.Tensor], saved: list[torch.Tensor]) -> None:
    """Copy `saved` back into `buffers`, in place."""
    with torch.no_grad():
        for buffer, copy in zip(buffers, saved, strict=True):
            buffer.copy_(copy)


def diverge(
    learn: Learner,
    what: str,
    index: int,
    buffers: list[torch.Tensor] | None = None,
    saved: list[torch.Tensor] | None = None,
) -> None:
    """Stop training before the step at batch `index` of this epoch, with a warning saying why."""
    if buffers is not None and saved is not None:
        restore(buffers, saved)
    learn.opt.zero_grad(set_to_none=True)
    learn.stop, learn.diverged = True, True
    learn.stop_reason = (
        f"{what} at epoch {learn.epoch}, batch {index} (both counted from 0); training "
        "stopped before that step, so the model keeps the weights of the last finite step. "
        "Try a lower learning rate (learn.lr_find()) or gradient clipping."
    )
    warnings.warn(learn.stop_reason, RuntimeWarning, stacklevel=5)
