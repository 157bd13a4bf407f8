"""How a batch reaches the model: moving it to a device and splitting inputs from targets.

Every training loop in lrkit (the range test, the Learner) goes through `forward_batch`, so a
user whose batches are dicts or whose model takes several inputs passes one `forward` hook
instead of rewriting a loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

# forward(model, batch) -> (prediction, target); the loss is loss_fn(prediction, target).
ForwardFn = Callable[[nn.Module, Any], tuple[Any, Any]]


def to_device(batch: Any, device: torch.device | str | None, non_blocking: bool = False) -> Any:
    """Move every tensor inside `batch` (nested tuples, lists, dicts) to `device`."""
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {key: to_device(value, device, non_blocking) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(value, device, non_blocking) for value in batch))
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        return type(batch)(to_device(value, device, non_blocking) for value in batch)
    return batch


def default_forward(model: nn.Module, batch: Any) -> tuple[Any, Any]:
    """`(x, y)` -> `(model(x), y)`; `(x1, ..., xn, y)` -> `(model(x1, ..., xn), y)`.

    A dict batch must hold "target" (or "y"/"label"); a single other entry goes to the model
    positionally, several go as keyword arguments.
    """
    if isinstance(batch, Mapping):
        for key in ("target", "y", "label", "labels"):
            if key in batch:
                inputs = {name: value for name, value in batch.items() if name != key}
                if len(inputs) == 1:  # a single input goes in positionally
                    return model(*inputs.values()), batch[key]
                return model(**inputs), batch[key]
        raise ValueError(
            f"a dict batch needs a 'target' entry, got keys {sorted(batch)}; "
            "or pass forward=fn(model, batch) -> (prediction, target)"
        )
    if isinstance(batch, Sequence) and len(batch) >= 2:
        *inputs, target = batch
        return model(*inputs), target
    raise ValueError(
        f"a batch must be (inputs..., target), got {type(batch).__name__}; "
        "pass forward=fn(model, batch) -> (prediction, target) for other layouts"
    )


def channels_last_batch(batch: Any) -> Any:
    """4-D floating tensors of a (nested) batch in channels_last memory format."""
    if isinstance(batch, torch.Tensor):
        if batch.ndim == 4 and batch.is_floating_point():
            return batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, dict):
        return {key: channels_last_batch(value) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields"):
        return type(batch)(channels_last_batch(value) for value in batch)
    return batch


def items_in(target: Any) -> int:
    """Items in a batch, from its target; 1 when the target has no length."""
    if isinstance(target, torch.Tensor) and target.ndim > 0:
        return target.shape[0]
    try:
        return len(target) or 1
    except TypeError:
        return 1
