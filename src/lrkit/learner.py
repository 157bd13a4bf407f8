"""The Learner: a model, its data, loss and optimizer, and the training verbs of fine-tuning.

Layer groups come from a splitter and are checked; the optimizer holds one param group per
layer group, so every learning-rate argument (float, slice, one value per group) maps onto
groups through `schedule.group_lrs`. Freezing sets `requires_grad`, so frozen layers cost no
gradient. The verbs live here; the work is done elsewhere: the loop in `fit_loop.py` (each
batch through the one `step.TrainStep`), Ctrl-C in `interrupt.py`, validation in
`evaluation.py`, the range test in `finder.py`, schedules in `schedule.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrkit import checkpoint, distributed, evaluation, export_file, finder
from lrkit.batch import ForwardFn, channels_last_batch, default_forward
from lrkit.callbacks import Callback, ProgressCallback, Recorder
from lrkit.config import RANGE_TEST, REPEATS
from lrkit.data import DataLoaders
from lrkit.data.preprocess import Preprocess
from lrkit.fit_loop import Schedule, TrainOptions, run_fit
from lrkit.freezing import freeze_to, frozen_index
from lrkit.layer_groups import Splitter, check_layer_groups, one_group
from lrkit.metrics import Metric
from lrkit.optimizers import OptFactory, make_optimizer, momentum_of, set_hypers
from lrkit.prediction import Prediction, as_tensor, predict_tensor
from lrkit.range_test_result import LRFindResult, RepeatedLRFind
from lrkit.schedule import LrSpec, check_lr, group_lrs, one_cycle_lr, one_cycle_mom
from lrkit.stages import DIV, PCT_START, Stage, StageResult, fine_tune_plan, rule_lr, run_stages
from lrkit.step import TrainStep, autocast_dtype
from lrkit.summary import summarize


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
        sync_bn: bool = False,
    ) -> None:
        """Under torchrun (an initialized process group) the model trains in DDP (`sync_bn`:
        with SyncBatchNorm, CUDA only), each rank on its share of the data; see `distributed`."""
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
        self.device = distributed.local_device(device)
        if self.options.mixed_precision == "fp16" and self.device.type != "cuda":
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
        self._parallel = distributed.Parallel(sync_bn)  # DDP and data shares under torchrun
        self._epochs_run = 0  # over all fits: a split loader's epoch, so each has its order
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
        return make_optimizer(self.opt_spec, self.layer_groups, self.lr, self.wd)

    @property
    def n_groups(self) -> int:
        """Number of layer groups."""
        return len(self.layer_groups)

    @property
    def momentum(self) -> float | None:
        """The last param group's momentum (Adam's beta1, SGD's momentum), None if it has none."""
        return momentum_of(self.opt)

    def _set_hypers(self, lrs: list[float], mom: float | None) -> None:
        set_hypers(self.opt, lrs, mom)

    # ----------------------------------------------------------------- freezing

    def freeze_to(self, n: int) -> None:
        """Freeze layer groups [0, n) and train groups [n, n_groups); negative n counts back."""
        self._frozen_bn = freeze_to(
            self.model, self.layer_groups, n, self.options.train_bn, self._frozen_bn
        )

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
        return frozen_index(self.model, self.layer_groups, self.options.train_bn)

    def _train_mode(self, model: nn.Module) -> None:
        """`model.train()`, but the norm layers frozen with train_bn=False stay in eval."""
        model.train()
        for layer in self._frozen_bn:
            layer.eval()

    def _held_frozen(self) -> list[nn.Parameter]:
        """Stop the gradient of the frozen groups' still-trainable parameters (BatchNorm with
        train_bn); returns them, for the caller to give their gradient back."""
        held = [p for params in self.layer_groups[: self.frozen_idx] for p in params]
        held = [p for p in held if p.requires_grad]
        for param in held:
            param.requires_grad_(False)
        return held

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
        pct_start: float = PCT_START,
        div: float = DIV,
        cbs: Sequence[Callback] = (),
        **range_test: Any,
    ) -> list[StageResult]:
        """fastai's recipe: train the head with the body frozen, then all groups at sliced lrs.

        A number: the head at `base_lr` (one cycle, pct_start 0.99), then every group at
        slice(hi / lr_mult, hi) with hi = base_lr / 2 (`pct_start`, `div`), as fastai 2.8.
        A rule name ("valley", ...): a range test before each stage, the head at its suggestion
        hi, then all groups at slice(hi2 / lr_mult, hi2) from a new test. "auto": one range test
        on the frozen body and fastai's steps from its rate (`lrkit.stages.auto_plan`, where the
        choice is measured; its range test is 60 steps from 1e-4 with the body held,
        `lrkit.stages.AUTO_HEAD_TEST`). `lr_mult` None: 100. `range_test` goes to each
        `lr_find` (num_it, start_lr, ...), each option over the stage's own
        (`lrkit.stages.merge_test_options`). Returns what each stage trained at
        (`lrkit.stages.StageResult`). Raises ValueError for a bad rate and UnusableCurveError
        (a ValueError) before training at a NaN suggestion.
        """
        if not isinstance(base_lr, str):
            check_lr(base_lr, "base_lr")  # before freezing: a bad rate changes nothing
        plan = fine_tune_plan(epochs, base_lr, freeze_epochs, lr_mult, pct_start, div)

        def fit(learn: Learner, stage: Stage, lr: LrSpec) -> None:
            learn.fit_one_cycle(stage.epochs, lr, cbs=cbs, **stage.one_cycle)

        return list(run_stages(self, plan, fit, **range_test))

    # ----------------------------------------------------------------- the loop

    def _fit(self, n_epoch: int, schedule: Schedule, cbs: Sequence[Callback]) -> None:
        run_fit(self, n_epoch, schedule, cbs)

    def train_step(self) -> TrainStep:
        """The one training step (`lrkit.step.TrainStep`) on this learner's model and options."""
        prepare = channels_last_batch if self.options.channels_last else None
        return TrainStep(
            self._forward_model(), self.opt, self.loss_fn, self.device, self.options, self.forward,
            prepare,
        )  # fmt: skip

    def _range_test_data(self) -> tuple[nn.Module, Iterable]:
        """The model and train loader a range test runs on: under torchrun DDP and a share."""
        if not distributed.is_distributed():
            return self.model, self.dls.train
        return self._forward_model(), self._share(self.dls.train, train=True)

    def _forward_model(self) -> nn.Module:
        """The model training runs through: in DDP under torchrun, else `_train_model`."""
        return self._parallel.model(self._train_model, self.device)

    def _share(self, loader: Iterable, train: bool) -> Iterable:
        """This process's share of `loader` under torchrun (see `distributed.split_loader`)."""
        return self._parallel.loader(loader, train)

    # ----------------------------------------------------------------- range test

    def lr_find(
        self,
        start_lr: float = RANGE_TEST.start_lr,
        end_lr: float = RANGE_TEST.end_lr,
        num_it: int = RANGE_TEST.num_it,
        mode: str = RANGE_TEST.mode,
        beta: float = RANGE_TEST.beta,
        div_thresh: float | None = RANGE_TEST.div_thresh,
        *,
        use_valid: bool = False,
        val_batches: int = RANGE_TEST.val_batches,
        snapshot: str = "memory",
        progress: bool | None = None,
        hold_frozen: bool = False,
    ) -> LRFindResult:
        """The range test on the learner as it is now; everything is restored afterwards.

        Delegates to `lrkit.lr_find` with this learner's model, train loader, loss, forward hook,
        device and optimizer: frozen groups stay frozen (only `requires_grad` parameters
        train), and every param group is scaled by the same factor, so the ratios between the
        groups' current learning rates are kept; the lr reported is the last group's. With
        `use_valid` the loss is measured on the first `val_batches` validation batches.
        Accumulation, clipping and mixed precision follow the learner's options. Callbacks
        get the result through their `after_lr_find` hook (loggers record the curve).

        `hold_frozen`: the frozen groups' parameters that still train (BatchNorm weights, with
        train_bn) get no gradient during the test, so backpropagation stops at the first
        trainable group; their layers still normalise with batch statistics. On a frozen
        pretrained body a step then costs a fraction of a training step (measured in
        benchmarks/bench_vs_fastai.py), for the curve of the head alone.
        """
        held = self._held_frozen() if hold_frozen else []
        try:
            result = finder.lr_find(
                *self._range_test_data(),
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
        finally:
            for param in held:
                param.requires_grad_(True)
        for cb in sorted(self.cbs, key=lambda cb: cb.order):
            hook = getattr(cb, "after_lr_find", None)  # callbacks written before the hook lack it
            if hook is not None:
                hook(self, result)
        return result

    def lr_find_repeated(
        self,
        repeats: int = REPEATS,
        start_lr: float = RANGE_TEST.start_lr,
        end_lr: float = RANGE_TEST.end_lr,
        num_it: int = RANGE_TEST.num_it,
        mode: str = RANGE_TEST.mode,
        beta: float = RANGE_TEST.beta,
        div_thresh: float | None = RANGE_TEST.div_thresh,
        *,
        use_valid: bool = False,
        val_batches: int = RANGE_TEST.val_batches,
        snapshot: str = "memory",
        progress: bool | None = None,
    ) -> RepeatedLRFind:
        """`repeats` range tests on different data orders: each rule's median and spread."""
        return finder.lr_find_repeated(
            *self._range_test_data(),
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
        return {
            "val_loader": self.dls.valid if use_valid else None,
            "val_batches": val_batches,
            "accum_steps": self.options.accum_steps,
            "autocast_dtype": autocast_dtype(self.options.mixed_precision),
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
            batch = channels_last_batch(batch)
        return self.forward(self._forward_model(), batch)

    # ----------------------------------------------------------------- validation

    def validate(self, loader: Iterable | None = None) -> dict[str, float | None]:
        """Loss and metrics on the validation loader (or `loader`); None values when it is empty.

        The loss is averaged over items (each batch's mean loss weighted by its size), and each
        metric is computed once on the predictions of the whole set.
        """
        return evaluation.validate(self, loader)

    def get_preds(self, loader: Iterable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw model outputs and targets over the validation loader (or `loader`), on the CPU.

        For confusion matrices and error analysis; apply softmax/sigmoid for probabilities.
        """
        return evaluation.get_preds(self, loader)

    # ----------------------------------------------------------------- persistence

    def save(self, path: str | Path, with_opt: bool = True) -> Path:
        """Write the model weights (and optimizer state) to `path`, atomically."""
        opt = self.opt if with_opt else None
        return distributed.on_main(lambda: checkpoint.save_state(self.model, opt, path))

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
        preprocess: Preprocess | dict[str, Any] | None = None,
        pickle_model: bool = False,
        thresh: float = 0.5,
    ) -> Path:
        """Write what `lrkit.load_learner(path).predict(item)` needs; see export_file.export.

        Without `preprocess`, the loaders' record (`dls.preprocess`: presize, size and stats,
        when known) is stored, so image files become inputs as the validation batches did.
        `thresh`: the multi-label decision threshold. Under torchrun rank 0 writes the file.
        """
        if preprocess is None:
            preprocess = self.dls.preprocess
        return distributed.on_main(
            lambda: export_file.export(
                self.model,
                path,
                vocab=self.dls.vocab,
                multi_label=self.dls.multi_label,
                factory=factory,
                kwargs=kwargs,
                preprocess=preprocess,
                pickle_model=pickle_model,
                thresh=thresh,
            )
        )

    def predict(self, item: Any) -> Prediction:
        """Label, class index and probabilities for one item (a tensor or array, no batch dim).

        Image files are lrkit.vision's: see `vision_learner` and `lrkit.load_learner`.
        """
        x = as_tensor(item)
        return predict_tensor(self.model, x, self.dls.vocab, self.dls.multi_label, self.device)

    # ----------------------------------------------------------------- summary

    def summary(self) -> str:
        """Per top-level module: output shape, params, trainable; groups, frozen state, totals."""
        return summarize(self)
