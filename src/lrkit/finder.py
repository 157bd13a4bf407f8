"""The learning-rate range test: train for a few steps with a growing lr and record the loss.

A plain loop inside try/finally. Before the first step everything the loop can change is
snapshotted (see `snapshot.py`); in `finally` it is restored bit-for-bit, also on errors and
Ctrl-C, so training after `lr_find` is identical to training without it.
"""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.utils.data import SequentialSampler

from lrkit import distributed
from lrkit.batch import ForwardFn
from lrkit.config import RANGE_TEST, REPEATS, RangeTestConfig
from lrkit.layer_groups import eval_mode
from lrkit.range_test_result import LRFindResult, RepeatedLRFind
from lrkit.snapshot import LoaderStates, TrainingSnapshot, loader_generators, optimizer_params
from lrkit.step import StepOptions, TrainStep, window_size


def sweep_lr(step: int, config: RangeTestConfig) -> float:
    """The lr at `step` of the sweep: start * (end/start)^(step/num_it), or linear."""
    progress = step / config.num_it
    if config.mode == "exp":
        return config.start_lr * (config.end_lr / config.start_lr) ** progress
    return config.start_lr + (config.end_lr - config.start_lr) * progress


MIN_POINTS_TO_DIVERGE = 6  # the smoothed loss of fewer points is a mean of a handful of batches
START_POINTS = 10  # the curve's start level is the median of its first raw losses
SUSTAINED_POINTS = 8  # a blow-up: this many latest raw losses all lie above the bar


def has_diverged(raw_losses: Sequence[float], losses: Sequence[float], div_thresh: float) -> bool:
    """Whether the curve so far has blown up: its last smoothed loss, and each of its last
    `SUSTAINED_POINTS` raw losses, lie more than (div_thresh - 1) x scale above the best
    smoothed loss.

    `raw_losses` and `losses` (smoothed) are the curve so far, same length, in loss units.
    best: the lowest smoothed loss from point `MIN_POINTS_TO_DIVERGE` on (the smoothing's
    warm-up, a mean of a few batches, is not a level to compare with: first points lower than
    the rest never stop the test). scale = max(fall, noise): fall is how far the smoothed
    curve came down to its best from the start level, the median of the first `START_POINTS`
    raw losses (a few spikes at the start move it little); noise is the standard deviation of
    the raw losses around the smoothed curve, over the points before the latest run of raw
    losses above the best (so the blow-up itself is not counted as noise, while a few hard
    batches among many easy ones are). A hard batch is one raw loss: the bar asks for a
    sustained rise, so isolated hard batches never stop a flat curve. Every term is a
    difference of losses, so adding a constant to the loss changes nothing (a loss near or
    below zero stops where the same loss shifted up would), and scaling the loss scales both
    sides alike. Nothing stops before `MIN_POINTS_TO_DIVERGE` points. A curve that falls from
    2.3 to 0.5 stops, with div_thresh 4, once its smoothed loss climbs past 0.5 + 3 x 1.8; an
    exponential rise stops `SUSTAINED_POINTS` to ~15 points after it starts.
    """
    n = len(losses)
    if n < MIN_POINTS_TO_DIVERGE:
        return False
    raw = np.asarray(raw_losses, dtype=np.float64)
    smoothed = np.asarray(losses, dtype=np.float64)
    best = float(smoothed[MIN_POINTS_TO_DIVERGE - 1 :].min())
    fall = max(float(np.median(raw[:START_POINTS])) - best, 0.0)
    at_or_below = np.flatnonzero(raw <= best)
    run = n - (int(at_or_below[-1]) + 1) if len(at_or_below) else n  # latest raw losses > best
    if run < SUSTAINED_POINTS or run == n:
        return False
    residuals = raw[: n - run] - smoothed[: n - run]
    noise = float(np.std(residuals))
    bar = best + (div_thresh - 1) * max(fall, noise)
    return bool(smoothed[-1] > bar and raw[-SUSTAINED_POINTS:].min() > bar)


def cycle(loader: Iterable, name: str) -> Iterator[Any]:
    """Batches from `loader`, starting again at the end, for loaders shorter than the test."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError(f"{name} yielded no batches: give it at least one batch")


def _loader_is_empty(loader: Iterable) -> bool:
    try:
        return len(loader) == 0  # type: ignore[arg-type]
    except TypeError:
        return False


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _progress_bar(show: bool | None) -> Progress | None:
    if not distributed.is_main():
        return None  # one bar per launch: rank 0's
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return None
    return Progress(
        TextColumn("lr_find"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lr {task.fields[lr]:.2e}  loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),  # progress never mixes into a program's stdout
        transient=True,
    )


class _Stepper:
    """One range-test step: `accum_steps` batches through the shared `TrainStep`; returns the
    window's mean unscaled loss, averaged over ranks so every rank records the same curve."""

    def __init__(self, train_step: TrainStep, config: RangeTestConfig) -> None:
        self.train_step, self.config = train_step, config
        self.optimizer = train_step.optimizer
        self.params = optimizer_params(self.optimizer)
        self.stepped = True  # False once a step was refused for a non-finite gradient

    def step(self, batches: Iterator[Any]) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        window = window_size(0, None, self.config.accum_steps)  # cycled: every window is full
        for _ in range(window):
            loss = self.train_step.loss(next(batches))
            self.train_step.backward(loss, window)
            total += loss.item()
        loss_value = distributed.mean_over_ranks(total / window)
        if not math.isfinite(loss_value):
            return loss_value  # never step on a NaN: the caller stops here
        norm = self.train_step.apply(self.params)
        self.stepped = self.train_step.scaler is not None or math.isfinite(norm)
        return loss_value

    @torch.no_grad()
    def validation_loss(self, val_set: list[Any]) -> float:
        with eval_mode(self.train_step.model):
            loss = float(np.mean([self.train_step.loss(batch).item() for batch in val_set]))
        return distributed.mean_over_ranks(loss)  # every rank stops at the same step


def lr_find(
    model: nn.Module,
    train_loader: Iterable,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
    start_lr: float = RANGE_TEST.start_lr,
    end_lr: float = RANGE_TEST.end_lr,
    num_it: int = RANGE_TEST.num_it,
    mode: str = RANGE_TEST.mode,
    beta: float = RANGE_TEST.beta,
    div_thresh: float | None = RANGE_TEST.div_thresh,
    *,
    val_loader: Iterable | None = None,
    val_batches: int = RANGE_TEST.val_batches,
    accum_steps: int = 1,
    autocast_dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    forward: ForwardFn | None = None,
    snapshot: str = "memory",
    grad_clip: float | None = None,
    progress: bool | None = None,
    train_mode: Callable[[nn.Module], Any] | None = None,
) -> LRFindResult:
    """Run the learning-rate range test and leave model, optimizer, RNGs and loaders untouched.

    The lr grows from `start_lr` to `end_lr` over `num_it` optimizer steps; every param group
    of `optimizer` (AdamW over the trainable parameters when None) is scaled by the same
    factor so discriminative ratios are kept, and the recorded lr is the last group's. With
    `val_loader` the loss is measured on its first `val_batches` batches after each step.
    The test stops early when the loss is not finite, or as diverged once the smoothed loss
    rises more than (`div_thresh` - 1) x the curve's scale above its best (see `has_diverged`:
    the same stop for the loss plus any constant; None never stops on divergence).
    `forward(model, batch) -> (prediction, target)` adapts other batch layouts; batches are
    moved to `device` (default: where the model's parameters are; the model is not moved).
    `snapshot="disk"` keeps the copy in a temporary file instead of CPU memory.
    `train_mode(model)` puts the model in training mode (default `model.train()`; the Learner
    keeps its frozen BatchNorm layers in eval mode).
    """
    config = RangeTestConfig(
        start_lr=start_lr,
        end_lr=end_lr,
        num_it=num_it,
        mode=mode,
        beta=beta,
        div_thresh=div_thresh,
        accum_steps=accum_steps,
        val_batches=val_batches,
        grad_clip=grad_clip,
    )
    config.check()
    if snapshot not in ("memory", "disk"):
        raise ValueError(f"snapshot must be 'memory' or 'disk', got {snapshot!r}")
    if isinstance(train_loader, Iterator):  # never call iter() here: it draws from the RNG
        raise ValueError(
            "train_loader is a one-shot iterator: the range test cycles it and must leave it as "
            "it found it; pass a re-iterable (a DataLoader or a list of batches)"
        )
    if _loader_is_empty(train_loader):
        raise ValueError("train_loader is empty: the range test needs at least one batch")
    if val_loader is not None and _loader_is_empty(val_loader):
        raise ValueError("val_loader is empty: pass None or a loader with at least one batch")
    if optimizer is None:
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not any(True for _ in model.parameters()):
            raise ValueError("the model has no parameters at all: there is nothing to train")
        if not trainable:
            raise ValueError("the model has no trainable parameters (all requires_grad=False)")
        optimizer = torch.optim.AdamW(trainable, lr=start_lr)
    elif not any(p.requires_grad for g in optimizer.param_groups for p in g["params"]):
        raise ValueError("the optimizer holds no trainable parameters (all requires_grad=False)")
    device = torch.device(device) if device is not None else _model_device(model)

    options = StepOptions(accum_steps, grad_clip, autocast_dtype)
    stepper = _Stepper(TrainStep(model, optimizer, loss_fn, device, options, forward), config)
    loaders = [train_loader] + ([val_loader] if val_loader is not None else [])
    saved = TrainingSnapshot.capture(model, optimizer, loaders, to_disk=snapshot == "disk")
    try:
        (train_mode or nn.Module.train)(model)
        return _sweep(stepper, train_loader, val_loader, progress)
    finally:
        saved.restore()


class RangeTestInterrupted(KeyboardInterrupt):
    """Ctrl-C during a range test: still a KeyboardInterrupt, carrying the curve so far
    (`partial`, an LRFindResult with stop_reason "interrupted", possibly without points)."""

    def __init__(self, partial: LRFindResult, *args: object) -> None:
        super().__init__(*args)  # the original interrupt's message, if it had one
        self.partial = partial


def _sweep(
    stepper: _Stepper, train_loader: Iterable, val_loader: Iterable | None, progress: bool | None
) -> LRFindResult:
    """The loop itself; the caller snapshots and restores around it and sets the mode.

    Raises RangeTestInterrupted (a KeyboardInterrupt) with the curve so far on Ctrl-C."""
    optimizer, config = stepper.optimizer, stepper.config
    # Every group follows the sweep at its own ratio to the last group with a non-zero lr
    # (a zero lr stays zero); with no lr set anywhere, all groups sweep alike.
    nonzero = [g["lr"] for g in optimizer.param_groups if g["lr"]]
    reference = nonzero[-1] if nonzero else None
    ratios = [g["lr"] / reference if reference else 1.0 for g in optimizer.param_groups]
    batches = cycle(train_loader, "train_loader")
    val_set = None
    if val_loader is not None:
        val_iter = iter(val_loader)
        val_set = [b for _, b in zip(range(config.val_batches), val_iter, strict=False)]

    lrs, raw_losses, losses, group_lrs = [], [], [], []
    average, stop_reason = 0.0, "completed"
    bar = _progress_bar(progress)

    def result() -> LRFindResult:  # Ctrl-C may land between the appends: the common length
        n = min(len(lrs), len(raw_losses), len(losses), len(group_lrs))
        return LRFindResult(
            lrs=np.asarray(lrs[:n], dtype=np.float64),
            losses=np.asarray(losses[:n], dtype=np.float64),
            raw_losses=np.asarray(raw_losses[:n], dtype=np.float64),
            group_lrs=np.asarray(group_lrs[:n], dtype=np.float64).reshape(n, len(ratios)),
            num_it=config.num_it,
            start_lr=config.start_lr,
            end_lr=config.end_lr,
            mode=config.mode,
            stop_reason=stop_reason,
            config=asdict(config),
        )

    try:
        with bar if bar is not None else contextlib.nullcontext():
            task = bar.add_task("lr_find", total=config.num_it, lr=0.0, loss=0.0) if bar else None
            for step in range(config.num_it):
                lr = sweep_lr(step, config)
                for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
                    group["lr"] = lr * ratio
                loss = stepper.step(batches)
                if val_set is not None and math.isfinite(loss):
                    loss = stepper.validation_loss(val_set)
                if not math.isfinite(loss):
                    stop_reason = "non-finite loss"
                    break
                average = config.beta * average + (1 - config.beta) * loss
                smoothed = average / (1 - config.beta ** (step + 1))
                lrs.append(lr)
                raw_losses.append(loss)
                losses.append(smoothed)
                group_lrs.append([lr * ratio for ratio in ratios])
                if bar is not None:
                    bar.update(task, advance=1, lr=lr, loss=smoothed)
                if not stepper.stepped:  # the gradient was not finite: the next loss would not be
                    stop_reason = "non-finite loss"
                    break
                if config.div_thresh is not None and has_diverged(
                    raw_losses, losses, config.div_thresh
                ):
                    stop_reason = "diverged"
                    break
    except KeyboardInterrupt as interrupt:
        stop_reason = "interrupted"
        raise RangeTestInterrupted(result(), *interrupt.args) from None
    return result()


def lr_find_repeated(
    model: nn.Module,
    train_loader: Iterable,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
    repeats: int = REPEATS,
    **kwargs: Any,
) -> RepeatedLRFind:
    """`repeats` range tests from the same weights on different data orders, so the spread of
    each rule's suggestion shows how far one run can be trusted.

    Run 0 sees the current data order (it equals a plain `lr_find`); run r >= 1 reseeds
    torch's RNG and the loaders' generators with r. Everything is restored afterwards.
    Keyword arguments are those of `lr_find`.
    """
    if repeats < 2:
        raise ValueError(f"repeats must be >= 2 to measure a spread, got {repeats}")
    if isinstance(getattr(train_loader, "sampler", None), SequentialSampler):
        warnings.warn(
            "train_loader does not shuffle, so every repeat sees the same data order and the "
            "spread measures only dropout and other randomness; pass shuffle=True",
            stacklevel=2,
        )
    loaders = [train_loader, kwargs.get("val_loader")]
    generators = [g for loader in loaders if loader is not None for g in loader_generators(loader)]
    loader_states = LoaderStates.capture(loaders)
    runs = []
    try:
        for run in range(repeats):
            if run > 0:
                torch.manual_seed(run)
                for generator in generators:
                    generator.manual_seed(run)
            runs.append(lr_find(model, train_loader, loss_fn, optimizer, **kwargs))
    finally:
        loader_states.restore()
    return RepeatedLRFind(tuple(runs))
