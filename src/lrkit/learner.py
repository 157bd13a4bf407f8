"""The Learner: a model, its data, loss and optimizer, and the training verbs of fine-tuning.

Layer groups come from a splitter and are checked; the optimizer holds one param group per
layer group, so every learning-rate argument (float, slice, one value per group) maps onto
groups through `schedule.group_lrs`. Freezing sets `requires_grad`, so frozen layers cost no
gradient. The loop is plain: schedule -> forward -> loss -> backward -> (clip) -> step, with
callbacks at a fixed list of hooks and a `stop` flag instead of exceptions.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

from lrkit import checkpoint, export_file, finder, interpret
from lrkit.batch import ForwardFn, default_forward, to_device
from lrkit.callbacks import HOOKS, Callback, ProgressCallback, Recorder
from lrkit.data import DataLoaders
from lrkit.data.dataloaders import length_or_none
from lrkit.layer_groups import (
    Splitter,
    bn_parameter_ids,
    check_layer_groups,
    eval_mode,
    norm_layers_within,
    one_group,
)
from lrkit.metrics import Metric, metric_name
from lrkit.predictor import Prediction, predict
from lrkit.range_test_result import LRFindResult, RepeatedLRFind
from lrkit.schedule import LrSpec, check_lr, group_lrs, one_cycle_lr, one_cycle_mom, progress
from lrkit.stages import LR_MULT, Stage, fine_tune_plan, rule_lr, run_stages
from lrkit.step import backward_share, window_size
from lrkit.summary import summarize

# schedule(pct) -> (one lr per group, momentum or None to leave it alone)
Schedule = Callable[[float], tuple[list[float], float | None]]
OptFactory = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]


@dataclass
class TrainOptions:
    """How each batch is trained; the defaults are plain fp32 steps."""

    accum_steps: int = 1  # batches whose gradients add up before one optimizer step
    grad_clip: float | None = None  # max global L2 norm of the gradients, None = no clipping
    mixed_precision: str | None = None  # None, "bf16" (autocast, any device) or "fp16" (CUDA)
    channels_last: bool = False  # model and 4-D inputs in NHWC memory format
    compile: bool = False  # run the model through torch.compile for training and validation
    train_bn: bool = True  # BatchNorm parameters stay trainable in frozen groups

    def __post_init__(self) -> None:
        if self.accum_steps < 1:
            raise ValueError(f"accum_steps must be >= 1, got {self.accum_steps}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.mixed_precision not in (None, "bf16", "fp16"):
            raise ValueError(
                f"mixed_precision must be None, 'bf16' or 'fp16', got {self.mixed_precision!r}"
            )


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _channels_last(batch: Any) -> Any:
    """4-D floating tensors of a (nested) batch in channels_last memory format."""
    if isinstance(batch, torch.Tensor):
        if batch.ndim == 4 and batch.is_floating_point():
            return batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, dict):
        return {key: _channels_last(value) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields"):
        return type(batch)(_channels_last(value) for value in batch)
    return batch


def _batch_size(target: Any) -> int:
    """Items in a batch, from its target; 1 when the target has no length."""
    if isinstance(target, torch.Tensor) and target.ndim > 0:
        return target.shape[0]
    return length_or_none(target) or 1


class Learner:
    """Trains `model` on `dls` with `loss_fn`: fit, fit_one_cycle, fine_tune, freeze, lr_find."""

    def __init__(
        self,
        model: nn.Module,
        dls: DataLoaders | tuple[Iterable, Iterable | None],
        loss_fn: Callable[[Any, Any], torch.Tensor],
        metrics: Sequence[Metric] = (),
        splitter: Splitter | None = None,
        opt: str | OptFactory = "adamw",
        lr: float = 1e-3,
        wd: float = 0.01,
        device: torch.device | str | None = None,
        cbs: Sequence[Callback] = (),
        forward: ForwardFn | None = None,
        progress: bool = True,
        accum_steps: int = 1,
        grad_clip: float | None = None,
        mixed_precision: str | None = None,
        channels_last: bool = False,
        compile: bool = False,
        train_bn: bool = True,
    ) -> None:
        if not isinstance(dls, DataLoaders):
            if isinstance(dls, tuple) and len(dls) == 2:
                dls = DataLoaders(*dls)
            else:
                raise TypeError(
                    f"dls must be an lrkit.DataLoaders or a (train, valid) pair, "
                    f"got {type(dls).__name__}"
                )
        self.options = TrainOptions(
            accum_steps, grad_clip, mixed_precision, channels_last, compile, train_bn
        )
        self.device = torch.device(device) if device is not None else _default_device()
        if mixed_precision == "fp16" and self.device.type != "cuda":
            raise ValueError(
                f"mixed_precision='fp16' needs a CUDA device (got {self.device}); use 'bf16' on CPU"
            )
        self.model = model.to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.dls = dls
        self.loss_fn = loss_fn
        self.metrics = list(metrics)
        self.forward = forward if forward is not None else default_forward
        self.splitter = splitter if splitter is not None else one_group
        self.layer_groups = check_layer_groups(self.model, self.splitter(self.model))
        self.opt_spec, self.wd, self.lr = opt, wd, lr
        self.opt = self._make_opt()
        self._frozen_bn: list[nn.Module] = []  # kept in eval mode while frozen (train_bn=False)
        self.recorder = Recorder()
        self.cbs: list[Callback] = [self.recorder, *cbs]
        self.show_progress = progress
        if progress:
            self.cbs.append(ProgressCallback())
        self._train_model = torch.compile(self.model) if compile else self.model
        self._scaler = torch.amp.GradScaler("cuda") if mixed_precision == "fp16" else None
        # state a fit exposes to callbacks (see lrkit.callbacks)
        self.epoch, self.n_epoch, self.iter, self.n_iter = 0, 0, 0, None
        self.batch_loss: float = math.nan
        self.epoch_log: dict[str, Any] = {}
        self.stop, self.stop_reason = False, None
        self.interrupted, self.diverged = False, False
        self._warned_no_valid, self._mid_epoch = False, False

    # ----------------------------------------------------------------- optimizer and groups

    def _make_opt(self) -> torch.optim.Optimizer:
        """One optimizer param group per layer group, each starting at `self.lr`."""
        groups = [{"params": params, "lr": self.lr} for params in self.layer_groups]
        if callable(self.opt_spec):
            opt = self.opt_spec(groups)
            got = [[id(p) for p in group["params"]] for group in opt.param_groups]
            if got != [[id(p) for p in params] for params in self.layer_groups]:
                raise ValueError(
                    f"the optimizer factory must keep the {self.n_groups} param groups it is "
                    f"given (one per layer group), got {len(got)} groups of sizes "
                    f"{[len(g) for g in got]}; build it as factory(groups) -> Optimizer(groups)"
                )
            return opt
        name = self.opt_spec.lower()
        if name == "adamw":  # fastai's Adam defaults: beta2 0.99, eps 1e-5, decoupled decay
            return torch.optim.AdamW(groups, betas=(0.9, 0.99), eps=1e-5, weight_decay=self.wd)
        if name == "adam":
            return torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-5, weight_decay=self.wd)
        if name == "sgd":
            return torch.optim.SGD(groups, lr=self.lr, momentum=0.9, weight_decay=self.wd)
        raise ValueError(
            f"unknown optimizer {self.opt_spec!r}: use 'adamw', 'adam', 'sgd' or a callable "
            "taking the list of param groups"
        )

    @property
    def n_groups(self) -> int:
        """Number of layer groups."""
        return len(self.layer_groups)

    @property
    def momentum(self) -> float | None:
        """The last param group's momentum (Adam's beta1, SGD's momentum), None if it has none."""
        group = self.opt.param_groups[-1]
        if "betas" in group:
            return float(group["betas"][0])
        return float(group["momentum"]) if "momentum" in group else None

    def _set_hypers(self, lrs: list[float], mom: float | None) -> None:
        for group, lr in zip(self.opt.param_groups, lrs, strict=True):
            group["lr"] = lr
            if mom is None:
                continue
            if "betas" in group:
                group["betas"] = (mom, group["betas"][1])
            elif group.get("momentum", 0) > 0:  # plain SGD (momentum 0) stays plain
                group["momentum"] = mom

    # ----------------------------------------------------------------- freezing

    def freeze_to(self, n: int) -> None:
        """Freeze layer groups [0, n) and train groups [n, n_groups); negative n counts back."""
        index = n + self.n_groups if n < 0 else n
        if self.n_groups == 1 and n != 0:
            raise ValueError(
                "this model has a single layer group, so freezing all but the last group would "
                "freeze nothing; pass a splitter (e.g. lambda m: [m.body, m.head]) to split it"
            )
        if not 0 <= index < self.n_groups:
            raise ValueError(
                f"freeze_to({n}) is out of range for {self.n_groups} layer groups: use 0 to "
                f"{self.n_groups - 1} (or -1 to -{self.n_groups - 1}) so one group still trains"
            )
        keep = bn_parameter_ids(self.model) if self.options.train_bn else set()
        for group_index, params in enumerate(self.layer_groups):
            for param in params:
                param.requires_grad_(group_index >= index or id(param) in keep)
        frozen = {id(p) for params in self.layer_groups[:index] for p in params}
        previous = self._frozen_bn
        self._frozen_bn = [] if self.options.train_bn else norm_layers_within(self.model, frozen)
        for layer in previous:
            if all(layer is not kept for kept in self._frozen_bn):
                layer.train(self.model.training)  # unfrozen: back to the model's mode
        for layer in self._frozen_bn:
            layer.eval()

    def freeze(self) -> None:
        """Freeze all layer groups but the last (the head).

        With train_bn=True (the default) the BatchNorm layers of the frozen groups keep
        training: their affine parameters stay trainable and their running statistics follow
        the data. With train_bn=False every normalisation layer with running statistics in a
        frozen group (BatchNorm, SyncBatchNorm, LazyBatchNorm, InstanceNorm with
        track_running_stats) is frozen whole: no gradient, and eval mode while frozen (also
        after the model.train() each epoch makes), so its running statistics stay as they are.
        A layer without parameters (affine=False) belongs to the group of the nearest module
        before it, in `model.modules()` order, that has parameters: the module containing it
        or the layer it follows (see `lrkit.layer_groups.norm_layers_within`). `unfreeze()`
        gives them back the model's mode.
        """
        self.freeze_to(-1)

    def unfreeze(self) -> None:
        """Make every layer group trainable."""
        self.freeze_to(0)

    @property
    def frozen_idx(self) -> int:
        """Index of the first trainable layer group (BatchNorm not counted when train_bn)."""
        bn = bn_parameter_ids(self.model) if self.options.train_bn else set()
        for index, params in enumerate(self.layer_groups):
            if any(p.requires_grad for p in params if id(p) not in bn):
                return index
        return self.n_groups

    def _train_mode(self, model: nn.Module) -> None:
        """`model.train()`, but the norm layers frozen with train_bn=False stay in eval."""
        model.train()
        for layer in self._frozen_bn:
            layer.eval()

    def _trainable(self) -> list[nn.Parameter]:
        return [p for params in self.layer_groups for p in params if p.requires_grad]

    # ----------------------------------------------------------------- training verbs

    def fit(self, n_epoch: int, lr: LrSpec = 1e-3, cbs: Sequence[Callback] = ()) -> None:
        """Train `n_epoch` epochs at a constant learning rate per group (float, slice or list)."""
        lrs = group_lrs(lr, self.n_groups)
        self._fit(n_epoch, lambda pct: (lrs, None), cbs)

    def fit_one_cycle(
        self,
        n_epoch: int,
        lr_max: LrSpec = 1e-3,
        div: float = 25.0,
        div_final: float = 1e5,
        pct_start: float = 0.25,
        moms: tuple[float, float, float] = (0.95, 0.85, 0.95),
        cbs: Sequence[Callback] = (),
    ) -> None:
        """One-cycle: per group lr_max/div -> lr_max -> lr_max/div_final; momentum the other way.

        `lr_max` a rule name ("auto", ...): a range test first (`lrkit.stages.rule_lr`)."""
        if isinstance(lr_max, str):
            lr_max = rule_lr(self, lr_max)
        lr_maxs = group_lrs(lr_max, self.n_groups)
        if not 0.0 <= pct_start <= 1.0:
            raise ValueError(f"pct_start must lie in [0, 1], got {pct_start!r}")

        def schedule(pct: float) -> tuple[list[float], float]:
            lrs = [one_cycle_lr(pct, peak, div, div_final, pct_start) for peak in lr_maxs]
            return lrs, one_cycle_mom(pct, moms, pct_start)

        self._fit(n_epoch, schedule, cbs)

    def fine_tune(
        self,
        epochs: int,
        base_lr: float | str = 2e-3,
        freeze_epochs: int = 1,
        lr_mult: float | None = None,
        pct_start: float = 0.3,
        div: float = 5.0,
        cbs: Sequence[Callback] = (),
    ) -> None:
        """fastai's recipe: train the head with the body frozen, then all groups at sliced lrs.

        `base_lr` a rule name ("auto", "valley", ...): a range test before each stage, the head
        at its suggestion hi, then all groups at slice(hi2 / lr_mult, hi2) from a new test
        (`lrkit.stages.fine_tune_plan`; default one-cycle settings); "auto" chooses the head's
        rate and the spread itself (`lrkit.stages.auto_plan`). `lr_mult` None: 100, or the auto
        plan's own. Raises UnusableCurveError (a ValueError) before training at a NaN suggestion.
        """
        if isinstance(base_lr, str):

            def fit(learn: Learner, stage: Stage, lr: LrSpec) -> None:
                learn.fit_one_cycle(stage.epochs, lr, cbs=cbs)

            for _ in run_stages(self, fine_tune_plan(epochs, base_lr, freeze_epochs, lr_mult), fit):
                pass  # each stage trains as the loop asks for it
            return
        check_lr(base_lr, "base_lr")  # before freezing: a bad rate changes nothing
        if freeze_epochs > 0:
            self.freeze()
            self.fit_one_cycle(freeze_epochs, slice(base_lr), pct_start=0.99, cbs=cbs)
            if self.interrupted or self.diverged:
                return
        base_lr /= 2
        lr_mult = LR_MULT if lr_mult is None else lr_mult
        self.unfreeze()
        self.fit_one_cycle(
            epochs, slice(base_lr / lr_mult, base_lr), pct_start=pct_start, div=div, cbs=cbs
        )

    # ----------------------------------------------------------------- the loop

    def _fit(self, n_epoch: int, schedule: Schedule, cbs: Sequence[Callback]) -> None:
        if n_epoch < 0:
            raise ValueError(f"n_epoch must be >= 0, got {n_epoch}")
        self.n_iter = length_or_none(self.dls.train)
        if self.n_iter == 0:
            raise ValueError("the train loader yields no batches; check its dataset and batch size")
        if self.n_iter is None:
            raise ValueError(
                "the train loader has no length, and the schedule needs the number of steps; "
                "wrap it in something with __len__"
            )
        total = n_epoch * self.n_iter
        callbacks = sorted([*self.cbs, *cbs], key=lambda cb: cb.order)
        self.n_epoch, self.epoch, self.iter, step = n_epoch, 0, 0, 0
        self.stop, self.stop_reason = False, None
        self.interrupted, self.diverged = False, False
        self._warned_no_valid = False
        with self._stop_on_interrupt():
            try:
                self._run(callbacks, "before_fit")
                for epoch in range(n_epoch):
                    self.epoch = epoch
                    start = time.perf_counter()
                    self._train_mode(self.model)
                    self._run(callbacks, "before_epoch")
                    losses = self._train_epoch(callbacks, schedule, step, total)
                    step += self.n_iter
                    if self.stop and (self.interrupted or self.diverged or self._mid_epoch):
                        break
                    results = self.validate()
                    self.epoch_log = {
                        "epoch": epoch,
                        "train_loss": sum(losses) / len(losses),
                        **results,
                        "time": time.perf_counter() - start,
                    }
                    self._run(callbacks, "after_epoch")
                    if self.stop:
                        break
            finally:
                self.opt.zero_grad(set_to_none=True)
                self._run(callbacks, "after_fit")

    def _train_epoch(
        self, callbacks: list[Callback], schedule: Schedule, step: int, total: int
    ) -> list[float]:
        """One pass over the train loader; returns the batch losses."""
        losses: list[float] = []
        trainable = self._trainable()
        if not trainable:
            raise ValueError("no parameter requires a gradient; unfreeze a layer group first")
        self._mid_epoch = False
        pending = 0
        # Buffers (BatchNorm running stats) as they were before the batch: a batch whose loss or
        # gradient is not finite must not leave its statistics behind.
        buffers = list(self.model.buffers())
        saved = [b.detach().clone() for b in buffers]
        for index, batch in enumerate(self.dls.train):
            self.iter = index
            lrs, mom = schedule(progress(step + index, total))
            self._set_hypers(lrs, mom)
            self._run(callbacks, "before_batch")
            for copy, buffer in zip(saved, buffers, strict=True):
                copy.copy_(buffer)
            loss = self._forward_loss(batch)
            value = float(loss.detach())
            if not math.isfinite(value):
                self._diverge(f"the loss is {value}", index, buffers, saved)
                break
            # each batch adds its share of the mean over the batches its window really holds
            window = window_size(index, self.n_iter, self.options.accum_steps)
            backward_share(loss, window, self._scaler)
            pending += 1
            if pending == window:
                pending = 0
                if not self._step(trainable, index):
                    self._restore(buffers, saved)
                    break
            self.batch_loss = value
            losses.append(value)
            self._run(callbacks, "after_batch")
            if self.stop:
                self._mid_epoch = index + 1 < self.n_iter
                break
        else:
            if pending and not self._step(trainable, self.iter):  # the epoch's leftover batches
                return losses
        return losses

    def _forward_loss(self, batch: Any) -> torch.Tensor:
        batch = to_device(batch, self.device, non_blocking=True)
        if self.options.channels_last:
            batch = _channels_last(batch)
        with self._autocast():
            pred, target = self.forward(self._train_model, batch)
            return self.loss_fn(pred, target)

    def _step(self, trainable: list[nn.Parameter], index: int) -> bool:
        """Clip, check and apply the gradients; False (and stop) when they are not finite."""
        if self._scaler is not None:
            self._scaler.unscale_(self.opt)
        grads = [p.grad for p in trainable if p.grad is not None]
        if self.options.grad_clip is not None:
            norm = nn.utils.clip_grad_norm_(trainable, self.options.grad_clip)
        else:
            norm = nn.utils.get_total_norm(grads)
        if self._scaler is not None:  # fp16: the scaler skips overflowing steps by itself
            self._scaler.step(self.opt)
            self._scaler.update()
        elif not math.isfinite(float(norm)):
            self._diverge(f"the gradient norm is {float(norm)}", index)
            return False
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return True

    @staticmethod
    def _restore(buffers: list[torch.Tensor], saved: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for buffer, copy in zip(buffers, saved, strict=True):
                buffer.copy_(copy)

    def _diverge(
        self,
        what: str,
        index: int,
        buffers: list[torch.Tensor] | None = None,
        saved: list[torch.Tensor] | None = None,
    ) -> None:
        if buffers is not None and saved is not None:
            self._restore(buffers, saved)
        self.opt.zero_grad(set_to_none=True)
        self.stop, self.diverged = True, True
        self.stop_reason = (
            f"{what} at epoch {self.epoch}, batch {index} (both counted from 0); training "
            "stopped before that step, so the model keeps the weights of the last finite step. "
            "Try a lower learning rate (learn.lr_find()) or gradient clipping."
        )
        warnings.warn(self.stop_reason, RuntimeWarning, stacklevel=4)

    def _autocast(self) -> contextlib.AbstractContextManager:
        precision = self.options.mixed_precision
        if precision is None:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _run(self, callbacks: list[Callback], hook: str) -> None:
        assert hook in HOOKS
        for cb in callbacks:
            getattr(cb, hook)(self)

    @contextlib.contextmanager
    def _stop_on_interrupt(self) -> Iterator[None]:
        """Ctrl-C sets the stop flag (the batch finishes); a second Ctrl-C raises at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)
        if previous is None:  # installed outside Python; fall back to the usual behaviour
            previous = signal.default_int_handler

        def handler(signum: int, frame: Any) -> None:
            if self.interrupted:
                signal.signal(signal.SIGINT, previous)
                raise KeyboardInterrupt
            self.stop, self.interrupted = True, True
            self.stop_reason = (
                f"interrupted (Ctrl-C) at epoch {self.epoch}, batch {self.iter}; the model "
                "keeps the weights after that batch and can be used, saved or trained further"
            )

        signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    # ----------------------------------------------------------------- range test

    def lr_find(
        self,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_it: int = 100,
        mode: str = "exp",
        beta: float = 0.98,
        div_thresh: float | None = 4.0,
        *,
        use_valid: bool = False,
        val_batches: int = 4,
        snapshot: str = "memory",
        progress: bool | None = None,
    ) -> LRFindResult:
        """The range test on the learner as it is now; everything is restored afterwards.

        Delegates to `lrkit.lr_find` with this learner's model, train loader, loss, forward hook,
        device and optimizer: frozen groups stay frozen (only `requires_grad` parameters
        train), and every param group is scaled by the same factor, so the ratios between the
        groups' current learning rates are kept; the lr reported is the last group's. With
        `use_valid` the loss is measured on the first `val_batches` validation batches.
        Accumulation, clipping and mixed precision follow the learner's options. Callbacks
        get the result through their `after_lr_find` hook (loggers record the curve).
        """
        result = finder.lr_find(
            self.model,
            self.dls.train,
            self.loss_fn,
            self.opt,
            start_lr,
            end_lr,
            num_it,
            mode,
            beta,
            div_thresh,
            **self._finder_options(use_valid, val_batches, snapshot, progress),
        )
        for cb in sorted(self.cbs, key=lambda cb: cb.order):
            hook = getattr(cb, "after_lr_find", None)  # callbacks written before the hook lack it
            if hook is not None:
                hook(self, result)
        return result

    def lr_find_repeated(
        self,
        repeats: int = 3,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_it: int = 100,
        mode: str = "exp",
        beta: float = 0.98,
        div_thresh: float | None = 4.0,
        *,
        use_valid: bool = False,
        val_batches: int = 4,
        snapshot: str = "memory",
        progress: bool | None = None,
    ) -> RepeatedLRFind:
        """`repeats` range tests on different data orders: each rule's median and spread."""
        return finder.lr_find_repeated(
            self.model,
            self.dls.train,
            self.loss_fn,
            self.opt,
            repeats,
            start_lr=start_lr,
            end_lr=end_lr,
            num_it=num_it,
            mode=mode,
            beta=beta,
            div_thresh=div_thresh,
            **self._finder_options(use_valid, val_batches, snapshot, progress),
        )

    def _finder_options(
        self, use_valid: bool, val_batches: int, snapshot: str, progress: bool | None
    ) -> dict[str, Any]:
        """The range test's keyword arguments that follow this learner's own options."""
        if use_valid and self.dls.valid is None:
            raise ValueError("use_valid=True needs a validation loader: DataLoaders(train, valid)")
        precision = self.options.mixed_precision
        return {
            "val_loader": self.dls.valid if use_valid else None,
            "val_batches": val_batches,
            "accum_steps": self.options.accum_steps,
            "autocast_dtype": {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}[
                precision
            ],
            "device": self.device,
            "forward": self._finder_forward,
            "snapshot": snapshot,
            "grad_clip": self.options.grad_clip,
            "train_mode": self._train_mode,
            "progress": progress
            if progress is not None
            else (None if self.show_progress else False),
        }

    def _finder_forward(self, model: nn.Module, batch: Any) -> tuple[Any, Any]:
        """The learner's forward hook on its (possibly compiled) model, inputs as in training."""
        if self.options.channels_last:
            batch = _channels_last(batch)
        return self.forward(self._train_model, batch)

    # ----------------------------------------------------------------- validation

    def validate(self, loader: Iterable | None = None) -> dict[str, float | None]:
        """Loss and metrics on the validation loader (or `loader`); None values when it is empty.

        The loss is averaged over items (each batch's mean loss weighted by its size), and each
        metric is computed once on the predictions of the whole set.
        """
        loader = self.dls.valid if loader is None else loader
        names = ["valid_loss", *(metric_name(m) for m in self.metrics)]
        empty = dict.fromkeys(names)
        if loader is None or length_or_none(loader) == 0:
            self._warn_no_valid()
            return empty
        total_loss, count, preds, targets = self._evaluate(loader, keep=bool(self.metrics))
        if count == 0:
            self._warn_no_valid()
            return empty
        results: dict[str, float | None] = {"valid_loss": total_loss / count}
        if self.metrics:
            all_preds, all_targets = torch.cat(preds), torch.cat(targets)
            for metric in self.metrics:
                results[metric_name(metric)] = float(metric(all_preds, all_targets))
        return results

    def get_preds(self, loader: Iterable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw model outputs and targets over the validation loader (or `loader`), on the CPU.

        For confusion matrices and error analysis; apply softmax/sigmoid for probabilities.
        """
        loader = self.dls.valid if loader is None else loader
        if loader is None:
            raise ValueError("there is no validation loader; pass get_preds(loader)")
        _, count, preds, targets = self._evaluate(loader, keep=True, cpu=True)
        if count == 0:
            raise ValueError("the loader yields no batches, so there is nothing to predict")
        return torch.cat(preds), torch.cat(targets)

    def _evaluate(
        self, loader: Iterable, keep: bool, cpu: bool = False
    ) -> tuple[float, int, list[torch.Tensor], list[torch.Tensor]]:
        """Summed loss (per item), item count and, with `keep`, the outputs and targets."""
        total_loss, count = 0.0, 0
        preds: list[torch.Tensor] = []
        targets: list[torch.Tensor] = []
        with eval_mode(self.model), torch.no_grad(), self._autocast():
            for batch in loader:
                batch = to_device(batch, self.device, non_blocking=True)
                if self.options.channels_last:
                    batch = _channels_last(batch)
                pred, target = self.forward(self._train_model, batch)
                n = _batch_size(target)
                total_loss += float(self.loss_fn(pred, target)) * n
                count += n
                if keep:
                    preds.append(pred.float().cpu() if cpu else pred.float())
                    targets.append(target.cpu() if cpu else target)
        return total_loss, count, preds, targets

    def _warn_no_valid(self) -> None:
        if not self._warned_no_valid:
            warnings.warn(
                "no validation data: training without validation (valid_loss and metrics "
                "are None); pass a valid loader to DataLoaders to measure them",
                UserWarning,
                stacklevel=4,
            )
            self._warned_no_valid = True

    # ----------------------------------------------------------------- persistence

    def save(self, path: str | Path, with_opt: bool = True) -> Path:
        """Write the model weights (and optimizer state) to `path`, atomically."""
        return checkpoint.save_state(self.model, self.opt if with_opt else None, path)

    def load(self, path: str | Path, with_opt: bool = True, strict: bool = True) -> None:
        """Read weights (and optimizer state, when saved) written by `save`."""
        checkpoint.load_state(
            self.model, self.opt if with_opt else None, path, self.device, strict=strict
        )

    def export(
        self,
        path: str | Path,
        factory: Callable[..., nn.Module] | str | None = None,
        kwargs: dict[str, Any] | None = None,
        preprocess: dict[str, Any] | None = None,
        pickle_model: bool = False,
    ) -> Path:
        """Write what `lrkit.load_learner(path).predict(item)` needs; see export_file.export.

        Without `preprocess`, the normalisation stats of `dls.stats` (when set) are stored, so
        image files are normalised as the batches were; add "size" to resize them too.
        """
        if preprocess is None and getattr(self.dls, "stats", None) is not None:
            mean, std = self.dls.stats
            preprocess = {"mean": [float(m) for m in mean], "std": [float(v) for v in std]}
        return export_file.export(
            self.model,
            path,
            vocab=self.dls.vocab,
            multi_label=self.dls.multi_label,
            factory=factory,
            kwargs=kwargs,
            preprocess=preprocess,
            pickle_model=pickle_model,
        )

    def predict(self, item: Any, preprocess: dict[str, Any] | None = None) -> Prediction:
        """Label, class index and probabilities for one item (a tensor without batch dim)."""
        return predict(
            self.model, item, self.dls.vocab, self.dls.multi_label, preprocess, self.device
        )

    def show_results(
        self, path: str | Path | None = None, n: int = 9, loader: Iterable | None = None
    ) -> Figure:
        """First `n` validation images titled actual/predicted (see lrkit.interpret)."""
        return interpret.show_results(self, path, n, loader)

    # ----------------------------------------------------------------- summary

    def summary(self) -> str:
        """Per top-level module: output shape, params, trainable; groups, frozen state, totals."""
        return summarize(self)
