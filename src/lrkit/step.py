"""THE training step, shared by the Learner's fit loop and the range test.

forward -> loss -> (scaled) backward -> accumulate -> [unscale, average over ranks, clip,
finite check] -> optimizer step. Precision names ("fp32", "bf16", "fp16") are turned into an
autocast dtype and a gradient scaler here and nowhere else.

Gradient accumulation: the batches of one window each add their share of the window's mean
loss to the gradients, so the optimizer step sees the mean gradient over the batches that
are actually in the window. A window is `accum_steps` batches, except the last one of an
epoch whose length is not a multiple of `accum_steps`: it holds only the rest, and its step
must not be scaled down for the batches it does not have.

Under torch.distributed every decision that ends a loop (a non-finite loss or gradient) is
taken on values that are equal on every rank, so all ranks stop at the same batch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lrkit import distributed
from lrkit.batch import ForwardFn, default_forward, to_device

# precision name -> autocast dtype (None: plain fp32, no autocast); the one mapping in lrkit
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}


def precision_name(spec: str | torch.dtype | None) -> str | None:
    """The canonical name of a precision: None for fp32 (None, "fp32", torch.float32), "bf16"
    or "fp16" (also "bfloat16", "float16", "half" and the torch dtypes). Raises ValueError."""
    if spec is None:
        return None
    if isinstance(spec, torch.dtype):
        names = [name for name, dtype in PRECISIONS.items() if dtype == spec]
        name = names[0] if names else ("fp32" if spec == torch.float32 else None)
    else:
        name = _ALIASES.get(str(spec).lower(), str(spec).lower())
    if name not in PRECISIONS:
        raise ValueError(f"mixed_precision must be None, 'fp32', 'bf16' or 'fp16', got {spec!r}")
    return None if name == "fp32" else name


def autocast_dtype(precision: str | torch.dtype | None) -> torch.dtype | None:
    """The dtype autocast runs in for `precision`, None for plain fp32."""
    name = precision_name(precision)
    return None if name is None else PRECISIONS[name]


def autocast(precision: str | torch.dtype | None, device: torch.device):
    """The autocast context of `precision` on `device` (a null context for fp32)."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str | torch.dtype | None, device: torch.device):
    """A GradScaler for fp16 on CUDA (fp16 gradients underflow without one); None otherwise
    (bf16 and fp32 need none; fp16 autocast on the CPU runs unscaled)."""
    if precision_name(precision) == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


@dataclass
class StepOptions:
    """How each optimizer step is taken; the defaults are plain fp32 steps."""

    accum_steps: int = 1  # batches whose gradients add up before one optimizer step
    grad_clip: float | None = None  # max global L2 norm of the gradients, None = no clipping
    mixed_precision: str | None = None  # None/"fp32", "bf16" (any device) or "fp16" (CUDA)

    def __post_init__(self) -> None:
        if self.accum_steps < 1:
            raise ValueError(f"accum_steps must be >= 1, got {self.accum_steps}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        self.mixed_precision = precision_name(self.mixed_precision)


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


def check_scalar_loss(loss: Any) -> torch.Tensor:
    """`loss` as a 0-d tensor; ValueError when loss_fn returned something else."""
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(
            f"loss_fn must return a scalar tensor, got {shape}; reduce it (e.g. reduction='mean')"
        )
    return loss.reshape(())


def all_finite(value: float) -> bool:
    """Whether `value` is finite on every rank (one process: whether it is finite)."""
    return not distributed.any_rank(not math.isfinite(value))


def _wrapped_in_ddp(model: nn.Module) -> bool:
    inner = getattr(model, "_orig_mod", model)  # torch.compile keeps the module it compiled
    return isinstance(inner, DistributedDataParallel) or isinstance(model, DistributedDataParallel)


class TrainStep:
    """One model, optimizer and loss under one set of `StepOptions`.

    `loss(batch)` runs the forward pass under autocast; `backward(loss, window)` adds the
    batch's share to the gradients; `apply(params)` finishes a window: unscale (fp16), average
    the gradients over ranks when the model is not wrapped in DDP, clip, check, step, clear.
    `options` is read at every call, so changing it between steps takes effect. `prepare(batch)`
    runs on each batch after it is moved to `device` (e.g. channels_last).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        device: torch.device,
        options: StepOptions,
        forward: ForwardFn | None = None,
        prepare: Callable[[Any], Any] | None = None,
    ) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.device, self.options = device, options
        self.forward = forward if forward is not None else default_forward
        self.prepare = prepare
        self.scaler = grad_scaler(options.mixed_precision, device)
        self.sync_grads = distributed.is_distributed() and not _wrapped_in_ddp(model)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's autocast context (validation uses it too)."""
        return autocast(self.options.mixed_precision, self.device)

    def loss(self, batch: Any) -> torch.Tensor:
        """The scalar loss of one batch (moved to the device, prepared, under autocast)."""
        batch = to_device(batch, self.device, non_blocking=True)
        if self.prepare is not None:
            batch = self.prepare(batch)
        with self.autocast():
            prediction, target = self.forward(self.model, batch)
            return check_scalar_loss(self.loss_fn(prediction, target))

    def backward(self, loss: torch.Tensor, window: int) -> None:
        """Add this batch's share of its window's mean loss to the gradients."""
        backward_share(loss, window, self.scaler)

    def apply(self, params: list[torch.Tensor]) -> float:
        """Finish the window: the global gradient norm (after averaging, before clipping).

        Gradients are averaged over ranks (by DDP or here), so the norm, and the decision to
        step, is the same on every rank. The optimizer steps unless the norm is not finite (no
        fp16 scaler: the caller stops); with the fp16 scaler an overflowing step is skipped by
        the scaler, which lowers its scale, and training goes on. The gradients are cleared
        either way.
        """
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.sync_grads:
            distributed.average_gradients(params)
        if self.options.grad_clip is not None:
            norm = float(nn.utils.clip_grad_norm_(params, self.options.grad_clip))
        else:
            norm = float(nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif math.isfinite(norm):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm
