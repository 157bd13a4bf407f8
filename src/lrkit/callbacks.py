"""Callbacks: a fixed list of hooks the Learner calls during `fit`, and the stock callbacks.

The protocol is small on purpose. A callback subclasses `Callback` and overrides any of

    before_fit, before_epoch, before_batch, after_batch, after_epoch, after_fit

each called with the Learner. During a fit the Learner exposes `epoch`, `n_epoch`, `iter`
(batch index in the epoch), `n_iter` (batches per epoch, None when unknown), `batch_loss`
(the last training loss, float), `epoch_log` (dict of the finished epoch: "epoch",
"train_loss", "valid_loss", one entry per metric, "time" in seconds) and `stop`. A callback
ends training by setting `learn.stop = True` (and `learn.stop_reason`): after the current
batch when set in `after_batch`, before the next epoch when set in `after_epoch`. No
exceptions are used for control flow. `after_fit` runs even when training stops early.

One hook lies outside fit: `after_lr_find(learn, result)`, called by `learn.lr_find()` with the
range test's LRFindResult, for loggers.
"""

from __future__ import annotations

import csv
import math
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from matplotlib.figure import Figure
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lrkit import plots
from lrkit.history import FitRecord
from lrkit.report import plural

if TYPE_CHECKING:
    from lrkit.learner import Learner
    from lrkit.range_test_result import LRFindResult

HOOKS = ("before_fit", "before_epoch", "before_batch", "after_batch", "after_epoch", "after_fit")


class Callback:
    """Base class: every hook is a no-op; override the ones you need."""

    order: int = 0  # callbacks run in ascending order, ties in the order they were added
    main_process_only: bool = False  # under torchrun, run only on rank 0 (output, files)

    def before_fit(self, learn: Learner) -> None:
        """Called once before the first epoch."""

    def before_epoch(self, learn: Learner) -> None:
        """Called at the start of each epoch, model in train mode."""

    def before_batch(self, learn: Learner) -> None:
        """Called before each training batch, after the schedule set lr and momentum."""

    def after_batch(self, learn: Learner) -> None:
        """Called after each optimizer step (or accumulation step); `learn.batch_loss` is set."""

    def after_epoch(self, learn: Learner) -> None:
        """Called after validation; `learn.epoch_log` holds the epoch's results."""

    def after_fit(self, learn: Learner) -> None:
        """Called once at the end, also after an early stop or an interrupt."""

    def after_lr_find(self, learn: Learner, result: LRFindResult) -> None:
        """Called by `learn.lr_find()` with its result, after everything was restored."""


def format_time(seconds: float) -> str:
    """mm:ss (or h:mm:ss), as fastai's table shows it."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _format_value(key: str, value: Any) -> str:
    """One table cell: epochs as ints, time as mm:ss, numbers with 6 decimals, None as '-'."""
    if value is None:
        return "-"
    if key == "time":
        return format_time(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


class Recorder(Callback):
    """Records per batch the lr of every group, the momentum and the loss; per epoch the log.

    `lrs`, `moms`, `losses`, `log` and `iters_per_epoch` hold the last fit, as fastai's do;
    `fits` holds a FitRecord for every fit of this learner in order (fine_tune's frozen and
    unfrozen stages, say), which `plot_losses` and `plot_schedule` draw one after the other,
    each change (e.g. "unfreeze") marked. `clear()` forgets the earlier fits.
    """

    order = -10

    def __init__(self) -> None:
        self.fits: list[FitRecord] = []

    def _last(self) -> FitRecord:
        return self.fits[-1] if self.fits else FitRecord(0, 0, None)

    @property
    def lrs(self) -> list[list[float]]:
        """The last fit's lr per batch and group."""
        return self._last().lrs

    @property
    def moms(self) -> list[float | None]:
        """The last fit's momentum per batch."""
        return self._last().moms

    @property
    def losses(self) -> list[float]:
        """The last fit's training loss per batch."""
        return self._last().losses

    @property
    def log(self) -> list[dict[str, Any]]:
        """The last fit's epoch log."""
        return self._last().log

    @property
    def iters_per_epoch(self) -> list[int]:
        """The last fit's batch count per finished epoch."""
        return self._last().iters_per_epoch

    def clear(self) -> None:
        """Forget every recorded fit."""
        self.fits = []

    def before_fit(self, learn: Learner) -> None:
        self.fits.append(FitRecord(learn.frozen_idx, learn.n_groups, learn.n_iter))

    def before_epoch(self, learn: Learner) -> None:
        self._epoch_start = len(self.losses)

    def after_batch(self, learn: Learner) -> None:
        stage = self.fits[-1]
        stage.lrs.append([group["lr"] for group in learn.opt.param_groups])
        stage.moms.append(learn.momentum)
        stage.losses.append(learn.batch_loss)

    def after_epoch(self, learn: Learner) -> None:
        stage = self.fits[-1]
        stage.log.append(dict(learn.epoch_log))
        stage.iters_per_epoch.append(len(stage.losses) - self._epoch_start)

    def values(self, key: str) -> list[Any]:
        """One column of the last fit's epoch log, e.g. `values("valid_loss")`."""
        return [row.get(key) for row in self.log]

    def plot_losses(self, path: str | Path | None = None) -> Figure:
        """Training loss (smoothed, raw faintly behind) and validation loss against the epoch,
        every recorded fit one after the other, changes between fits marked."""
        return plots.plot_losses(self.fits, path)

    def plot_schedule(self, path: str | Path | None = None) -> Figure:
        """Learning rate of every group and the momentum against the epoch, every recorded fit
        one after the other, changes between fits marked."""
        return plots.plot_schedule(self.fits, path)


class ProgressCallback(Callback):
    """A rich progress bar per epoch and a results table; one line per epoch when not a terminal."""

    order = 100
    main_process_only = True

    def __init__(self, console: Console | None = None, refresh_s: float = 0.25) -> None:
        self.console = console if console is not None else Console()
        self.refresh_s = refresh_s  # seconds between redraws of the bar
        self._live: Live | None = None

    def before_fit(self, learn: Learner) -> None:
        self.interactive = self.console.is_terminal
        self._columns: list[str] | None = None
        if not self.interactive:
            return
        self._table = Table(show_edge=False, header_style="bold")
        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._task = None
        # Redrawn from the training thread at most every `refresh_s`: no background thread
        # competing with the model for the CPU.
        self._live = Live(
            Group(self._table, self._progress), console=self.console, auto_refresh=False
        )
        self._live.start(refresh=True)
        self._last_draw = time.perf_counter()

    def before_epoch(self, learn: Learner) -> None:
        if not self.interactive:
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(
            f"epoch {learn.epoch + 1}/{learn.n_epoch}", total=learn.n_iter, loss="-"
        )

    def after_batch(self, learn: Learner) -> None:
        if not self.interactive:
            return
        self._progress.update(self._task, advance=1, loss=f"{learn.batch_loss:.4f}")
        now = time.perf_counter()
        if now - self._last_draw >= self.refresh_s:
            self._live.refresh()
            self._last_draw = now

    def after_epoch(self, learn: Learner) -> None:
        row = learn.epoch_log
        if self._columns is None:
            self._columns = list(row)
            if self.interactive:
                for key in self._columns:
                    self._table.add_column(key, justify="right")
        cells = [_format_value(key, row.get(key)) for key in self._columns]
        if self.interactive:
            self._table.add_row(*cells)
            self._live.refresh()
        else:
            line = "  ".join(
                f"{key} {cell}" for key, cell in zip(self._columns, cells, strict=True)
            )
            self.console.print(line, highlight=False, soft_wrap=True)

    def after_fit(self, learn: Learner) -> None:
        if self._live is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._live.refresh()
            self._live.stop()
            self._live = None
        if learn.stop_reason:
            self.console.print(f"stopped: {learn.stop_reason}", highlight=False)


class _Monitor:
    """Tracks the best value of one epoch-log column; mode "auto" minimises losses and errors."""

    def __init__(self, monitor: str, mode: str, min_delta: float) -> None:
        if mode == "auto":
            mode = "min" if ("loss" in monitor or "error" in monitor) else "max"
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
        self.monitor, self.mode, self.min_delta = monitor, mode, abs(min_delta)
        self.best: float | None = None
        self._warned = False

    def reset(self) -> None:
        self.best, self._warned = None, False

    def read(self, log: dict[str, Any], owner: str) -> float | None:
        """The monitored value, None (with one warning) when there is no validation data."""
        if self.monitor not in log:
            raise ValueError(
                f"{owner} monitors {self.monitor!r}, which is not in the epoch log; "
                f"choose one of {sorted(k for k in log if k not in ('epoch', 'time'))}"
            )
        value = log[self.monitor]
        if value is None or not math.isfinite(value):
            if not self._warned:
                warnings.warn(
                    f"{owner}: {self.monitor} is not available, ignoring it", stacklevel=2
                )
                self._warned = True
            return None
        return float(value)

    def improved(self, value: float) -> bool:
        """Record `value` and say whether it beats the best so far by more than min_delta."""
        if self.best is None:
            better = True
        elif self.mode == "min":
            better = value < self.best - self.min_delta
        else:
            better = value > self.best + self.min_delta
        if better:
            self.best = value
        return better


class EarlyStopping(Callback):
    """Stops when `monitor` has not improved by more than `min_delta` for `patience` epochs."""

    def __init__(
        self,
        monitor: str = "valid_loss",
        mode: str = "auto",
        patience: int = 3,
        min_delta: float = 0.0,
    ) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1 epoch, got {patience}")
        self._monitor = _Monitor(monitor, mode, min_delta)
        self.patience = patience

    def before_fit(self, learn: Learner) -> None:
        self._monitor.reset()
        self.wait = 0

    def after_epoch(self, learn: Learner) -> None:
        value = self._monitor.read(learn.epoch_log, "EarlyStopping")
        if value is None:
            return
        if self._monitor.improved(value):
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            learn.stop = True
            learn.stop_reason = (
                f"early stopping: {self._monitor.monitor} has not improved on "
                f"{self._monitor.best:.6f} for {plural(self.wait, 'epoch')}"
            )


class SaveBestModel(Callback):
    """Saves the model (`learn.save`) whenever `monitor` improves; loads the best one at the end."""

    def __init__(
        self,
        path: str | Path,
        monitor: str = "valid_loss",
        mode: str = "auto",
        min_delta: float = 0.0,
        with_opt: bool = False,
        load_best: bool = True,
    ) -> None:
        self.path = Path(path)
        self._monitor = _Monitor(monitor, mode, min_delta)
        self.with_opt, self.load_best = with_opt, load_best
        self.best_epoch: int | None = None

    @property
    def best(self) -> float | None:
        """The best monitored value seen in the last fit."""
        return self._monitor.best

    def before_fit(self, learn: Learner) -> None:
        self._monitor.reset()
        self.best_epoch = None

    def after_epoch(self, learn: Learner) -> None:
        value = self._monitor.read(learn.epoch_log, "SaveBestModel")
        if value is not None and self._monitor.improved(value):
            learn.save(self.path, with_opt=self.with_opt)
            self.best_epoch = learn.epoch

    def after_fit(self, learn: Learner) -> None:
        if self.load_best and self.best_epoch is not None:
            learn.load(self.path, with_opt=self.with_opt)


class CSVLogger(Callback):
    """Writes the epoch log to a CSV file, one flushed row per epoch, so a crash loses nothing.

    `stage` (e.g. "frozen", "unfrozen") fills a first column, so the rows of several fits
    appended to one file say which fit they belong to.
    """

    main_process_only = True

    def __init__(self, path: str | Path, append: bool = False, stage: str | None = None) -> None:
        self.path = Path(path)
        self.append = append
        self.stage = stage
        self._file: TextIO | None = None

    def before_fit(self, learn: Learner) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        has_rows = self.append and self.path.exists() and self.path.stat().st_size > 0
        self._file = self.path.open("a" if self.append else "w", newline="", encoding="utf-8")
        self._writer: csv.DictWriter | None = None
        self._needs_header = not has_rows

    def after_epoch(self, learn: Learner) -> None:
        if self._file is None:
            return
        row = {k: ("" if v is None else v) for k, v in learn.epoch_log.items()}
        if self.stage is not None:
            row = {"stage": self.stage, **row}
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=list(row))
            if self._needs_header:
                self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()

    def after_fit(self, learn: Learner) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


LOGGERS = ("TensorBoardCallback", "WandbCallback")  # defined in lrkit.loggers


def __getattr__(name: str) -> Any:
    """`lrkit.callbacks.TensorBoardCallback` and `.WandbCallback`, from lrkit.loggers (which
    builds on this module, so it is imported on first use rather than at the top)."""
    if name in LOGGERS:
        from lrkit import loggers

        return getattr(loggers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
