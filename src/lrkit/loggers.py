"""Experiment logging: TensorBoard and Weights & Biases callbacks that log the same things.

What is logged, under the same names in both:

    once            the config: the learner's settings (model, optimizer, weight decay, layer
                    groups, training options, data sizes) updated with the `config` given
    every batch     train/loss (the batch's loss as the Recorder records it), lr/group_<g> and
                    mom/group_<g> per param group (momentum: SGD's, or Adam's beta1)
    every fit       fit/n_epoch and fit/frozen_groups (how many layer groups are frozen)
    every epoch     train/epoch_loss, valid/loss, valid/<metric>, epoch (epochs done in all)
    every lr_find   the curve (lr, smoothed and raw loss), each rule's suggestion, the figure

The step is the number of training batches seen by this callback, counted over all its fits,
so fine_tune's frozen and unfrozen stages follow each other on one axis; epoch values are
logged at the step of their last batch. A range test run by `learn.lr_find()` on a learner
holding the callback is logged through the `after_lr_find` hook; one run elsewhere is logged
with `log_lr_find(result)`. The n-th range test is logged under the prefix "lr_find" (n = 1)
or "lr_find_<n>".

The packages are optional (`pip install 'lrkit[tensorboard]'`, `'lrkit[wandb]'`) and imported
only when a callback starts logging, so `import lrkit` never needs them. Under
torch.distributed only rank 0 logs; the other ranks' callbacks do nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import numbers
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch.distributed as dist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lrkit.callbacks import Callback
from lrkit.metrics import metric_name

if TYPE_CHECKING:
    from lrkit.learner import Learner
    from lrkit.range_test_result import LRFindResult

WANDB_MODES = ("online", "offline", "disabled", "shared")


def require(package: str, extra: str, owner: str) -> None:
    """ImportError (one line, naming the extra) when `package` is not installed."""
    if importlib.util.find_spec(package) is None:
        raise ImportError(
            f"{owner} needs the {package} package, which is not installed: "
            f"pip install 'lrkit[{extra}]'"
        )


def is_rank_zero() -> bool:
    """True outside torch.distributed and on its rank 0."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def group_momentum(group: dict[str, Any]) -> float | None:
    """A param group's momentum: Adam's beta1, SGD's momentum, None when it has neither."""
    if "betas" in group:
        return float(group["betas"][0])
    return float(group["momentum"]) if "momentum" in group else None


def learner_config(learn: Learner) -> dict[str, Any]:
    """The settings of `learn` worth recording with a run (JSON-ready values)."""
    opt = learn.opt_spec if isinstance(learn.opt_spec, str) else type(learn.opt).__name__
    options = learn.options
    return {
        "model": type(learn.model).__name__,
        "n_params": sum(p.numel() for p in learn.model.parameters()),
        "loss_fn": getattr(learn.loss_fn, "__name__", type(learn.loss_fn).__name__),
        "opt": opt,
        "wd": learn.wd,
        "n_groups": learn.n_groups,
        "metrics": [metric_name(m) for m in learn.metrics],
        "device": str(learn.device),
        "batch_size": getattr(learn.dls.train, "batch_size", None),
        "n_train": learn.dls.n_train,
        "n_valid": learn.dls.n_valid,
        "n_classes": learn.dls.c,
        "multi_label": learn.dls.multi_label,
        "accum_steps": options.accum_steps,
        "grad_clip": options.grad_clip,
        "mixed_precision": options.mixed_precision,
        "channels_last": options.channels_last,
        "train_bn": options.train_bn,
    }


def figure_pixels(fig: Figure) -> np.ndarray:
    """(H, W, 3) uint8 rendering of a matplotlib Figure."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    """The entries that are real numbers (None, text and NaN left out)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = float(value)
    return out


class ExperimentLogger(Callback, ABC):
    """What the TensorBoard and W&B callbacks share: when and what to log; the subclasses
    say how (`_open`, `_scalars`, `_lr_find`, `_flush`, `_close`).

    `config` adds to (and overrides) the learner's settings; `log_every` logs the batch
    values of every n-th training batch only (epoch values are always logged).
    """

    order = 50  # after the Recorder (-10), before the progress bar (100)

    def __init__(self, config: dict[str, Any] | None = None, log_every: int = 1) -> None:
        if log_every < 1:
            raise ValueError(f"log_every must be >= 1 batch, got {log_every}")
        self.config = dict(config or {})
        self.log_every = log_every
        self.step = 0  # training batches seen, over every fit
        self.epochs_done = 0
        self.lr_finds = 0
        self._state = "new"  # "new" -> "open" (rank 0) or "idle" (other ranks) -> "closed"

    # ------------------------------------------------------------- the backends' part

    @abstractmethod
    def _open(self, config: dict[str, Any]) -> None:
        """Start the run (rank 0 only) and record the resolved `config` once."""

    @abstractmethod
    def _scalars(self, values: dict[str, float], step: int) -> None:
        """Log `values` (name -> number) at training step `step`."""

    @abstractmethod
    def _lr_find(self, prefix: str, result: LRFindResult, step: int) -> None:
        """Log one range test under `prefix`: curve, suggestions, figure, stop reason."""

    def _flush(self) -> None:
        """Make what was logged readable (files written)."""

    @abstractmethod
    def _close(self) -> None:
        """Finish the run and release its files."""

    # ------------------------------------------------------------- the shared part

    def _active(self, learn: Learner | None) -> bool:
        """Open on first use (rank 0 only, the config logged once); False where not logging."""
        if self._state == "new":
            if not is_rank_zero():
                self._state = "idle"
            else:
                config = learner_config(learn) if learn is not None else {}
                self._open({**config, **self.config})
                self._state = "open"
        if self._state == "closed":
            raise RuntimeError(
                f"this {type(self).__name__} was closed; make a new one to log again"
            )
        return self._state == "open"

    def before_fit(self, learn: Learner) -> None:
        if self._active(learn):
            info = {"fit/n_epoch": learn.n_epoch, "fit/frozen_groups": learn.frozen_idx}
            self._scalars(_numbers(info), self.step)

    def after_batch(self, learn: Learner) -> None:
        if not self._active(learn):
            return
        self.step += 1
        if self.step % self.log_every:
            return
        values: dict[str, Any] = {"train/loss": learn.batch_loss}
        for g, group in enumerate(learn.opt.param_groups):
            values[f"lr/group_{g}"] = group["lr"]
            values[f"mom/group_{g}"] = group_momentum(group)
        self._scalars(_numbers(values), self.step)

    def after_epoch(self, learn: Learner) -> None:
        if not self._active(learn):
            return
        self.epochs_done += 1
        values: dict[str, Any] = {"epoch": self.epochs_done}
        for key, value in learn.epoch_log.items():
            if key in ("epoch", "time"):
                continue
            name = {"train_loss": "train/epoch_loss", "valid_loss": "valid/loss"}.get(key)
            values[name or f"valid/{key}"] = value
        values["epoch_time_s"] = learn.epoch_log.get("time")
        self._scalars(_numbers(values), self.step)

    def after_fit(self, learn: Learner) -> None:
        if self._state == "open":
            self._flush()

    def after_lr_find(self, learn: Learner, result: LRFindResult) -> None:
        self.log_lr_find(result, learn)

    def log_lr_find(self, result: LRFindResult, learn: Learner | None = None) -> None:
        """Log a range test's curve, suggestions and figure (the n-th under "lr_find_<n>")."""
        if not self._active(learn):
            return
        self.lr_finds += 1
        prefix = "lr_find" if self.lr_finds == 1 else f"lr_find_{self.lr_finds}"
        self._lr_find(prefix, result, self.step)
        self._flush()

    def close(self) -> None:
        """Finish the run and release its files; later logging raises RuntimeError."""
        if self._state == "open":
            self._close()
        self._state = "closed"

    def __enter__(self) -> ExperimentLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TensorBoardCallback(ExperimentLogger):
    """Logs to TensorBoard event files in `log_dir` (torch.utils.tensorboard.SummaryWriter).

    The config is a markdown table under the text tag "config"; a range test's curve is the
    scalars <prefix>/loss, <prefix>/raw_loss and <prefix>/lr against its iteration, its
    suggestions the scalars <prefix>/suggestion/<rule> and a text table, its figure the image
    <prefix>/plot. Raises ImportError when tensorboard is not installed.
    """

    def __init__(
        self, log_dir: str | Path, config: dict[str, Any] | None = None, log_every: int = 1
    ) -> None:
        require("tensorboard", "tensorboard", "TensorBoardCallback")
        super().__init__(config, log_every)
        self.log_dir = Path(log_dir)
        self.writer: Any = None

    def _open(self, config: dict[str, Any]) -> None:
        tensorboard = importlib.import_module("torch.utils.tensorboard")
        self.writer = tensorboard.SummaryWriter(log_dir=str(self.log_dir))
        rows = "\n".join(f"| {key} | {json.dumps(value)} |" for key, value in config.items())
        self.writer.add_text("config", f"| setting | value |\n|---|---|\n{rows}", 0)

    def _scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def _lr_find(self, prefix: str, result: LRFindResult, step: int) -> None:
        for i, (lr, loss, raw) in enumerate(
            zip(result.lrs, result.losses, result.raw_losses, strict=True)
        ):
            self._scalars(
                _numbers({f"{prefix}/lr": lr, f"{prefix}/loss": loss, f"{prefix}/raw_loss": raw}),
                i,
            )
        suggestions = result.suggestions
        self._scalars(
            _numbers({f"{prefix}/suggestion/{rule}": lr for rule, lr in suggestions.items()}), step
        )
        rows = "\n".join(f"| {rule} | {lr:.3g} |" for rule, lr in suggestions.items())
        text = f"| rule | suggested lr |\n|---|---|\n{rows}\n\n{result.stop_description}"
        self.writer.add_text(f"{prefix}/suggestions", text, step)
        pixels = figure_pixels(result.plot())
        self.writer.add_image(f"{prefix}/plot", pixels, step, dataformats="HWC")

    def _flush(self) -> None:
        self.writer.flush()

    def _close(self) -> None:
        self.writer.close()


class WandbCallback(ExperimentLogger):
    """Logs to a Weights & Biases run, started when logging starts and ended by `close()`.

    `project`, `mode` ("online", "offline", "disabled"; None: wandb's default or WANDB_MODE),
    `name` and `dir` go to `wandb.init` with the config, and so do `init_kwargs`. A range
    test's curve is the table <prefix>/curve (lr, loss, raw_loss), its figure the image
    <prefix>/plot, its suggestions <prefix>/suggestion/<rule> in the run's summary. Raises
    ImportError when wandb is not installed, ValueError for an unknown mode.
    """

    def __init__(
        self,
        project: str | None = None,
        mode: str | None = None,
        name: str | None = None,
        dir: str | Path | None = None,
        config: dict[str, Any] | None = None,
        log_every: int = 1,
        **init_kwargs: Any,
    ) -> None:
        require("wandb", "wandb", "WandbCallback")
        if mode is not None and mode not in WANDB_MODES:
            raise ValueError(f"W&B mode must be one of {', '.join(WANDB_MODES)}, got {mode!r}")
        super().__init__(config, log_every)
        self.init_kwargs = {"project": project, "mode": mode, "name": name, **init_kwargs}
        if dir is not None:
            Path(dir).mkdir(parents=True, exist_ok=True)
            self.init_kwargs["dir"] = str(dir)
        self.run: Any = None

    def _open(self, config: dict[str, Any]) -> None:
        self._wandb = importlib.import_module("wandb")
        self.run = self._wandb.init(config=config, **self.init_kwargs)

    def _scalars(self, values: dict[str, float], step: int) -> None:
        if values:
            self.run.log(values, step=step)

    def _lr_find(self, prefix: str, result: LRFindResult, step: int) -> None:
        rows = [
            [float(lr), float(loss), float(raw)]
            for lr, loss, raw in zip(result.lrs, result.losses, result.raw_losses, strict=True)
        ]
        table = self._wandb.Table(columns=["lr", "loss", "raw_loss"], data=rows)
        image = self._wandb.Image(figure_pixels(result.plot()), caption="range test")
        self.run.log({f"{prefix}/curve": table, f"{prefix}/plot": image}, step=step)
        summary = {f"{prefix}/suggestion/{rule}": lr for rule, lr in result.suggestions.items()}
        summary[f"{prefix}/stop_reason"] = result.stop_reason
        self.run.summary.update(
            {k: v for k, v in summary.items() if not isinstance(v, float) or math.isfinite(v)}
        )

    def _close(self) -> None:
        self.run.finish()
