"""`Learner.summary()`: what each top-level module outputs and trains, the groups, the totals.

Output shapes come from one forward pass on a single batch (valid loader first, so no
shuffling sampler is touched) in eval mode without gradients; the global random states and
the loader's generators are restored and live persistent workers serve no batch, so the
summary leaves no trace on training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lrkit.batch import to_device
from lrkit.layer_groups import eval_mode
from lrkit.snapshot import LoaderStates

if TYPE_CHECKING:
    from lrkit.learner import Learner


def _shape(output: Any) -> str:
    """(B, C, H, W)-style shape of a tensor output, or of the first tensor in a tuple/dict."""
    if isinstance(output, torch.Tensor):
        return str(tuple(output.shape))
    if isinstance(output, (list, tuple)) and output:
        return _shape(output[0])
    if isinstance(output, dict) and output:
        return _shape(next(iter(output.values())))
    return "-"


def _output_shapes(learn: Learner, modules: list[tuple[str, nn.Module]]) -> dict[str, str]:
    """Shape of each module's output on one batch; empty when no batch can be drawn."""
    loader = learn.dls.valid if learn.dls.valid is not None else learn.dls.train
    shapes: dict[str, str] = {}

    def recorder(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:  # None: output kept
            shapes.setdefault(name, _shape(output))

        return hook

    handles = [module.register_forward_hook(recorder(name)) for name, module in modules]
    states = LoaderStates.capture([loader])
    try:
        with torch.no_grad(), eval_mode(learn.model):
            batch = next(iter(loader), None)
            if batch is not None:
                learn.forward(learn.model, to_device(batch, learn.device))
    finally:
        states.restore()
        for handle in handles:
            handle.remove()
    return shapes


def summarize(learn: Learner) -> str:
    """The text of `Learner.summary()`."""
    modules = list(learn.model.named_children()) or [(type(learn.model).__name__, learn.model)]
    shapes = _output_shapes(learn, modules)
    rows = [("module", "output shape", "params", "trainable")]
    for name, module in modules:
        params = list(module.parameters())
        n = sum(p.numel() for p in params)
        n_train = sum(p.numel() for p in params if p.requires_grad)
        trainable = (
            "-" if not params else "yes" if n_train == n else "no" if n_train == 0 else "part"
        )
        rows.append((name, shapes.get(name, "-"), f"{n:,}", trainable))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"{type(learn.model).__name__}"]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

    lines.append("")
    frozen = learn.frozen_idx
    lines.append(
        f"layer groups: {learn.n_groups}; frozen up to group {frozen} of {learn.n_groups}"
        + (" (nothing frozen)" if frozen == 0 else "")
    )
    for index, (params, group) in enumerate(
        zip(learn.layer_groups, learn.opt.param_groups, strict=True)
    ):
        n = sum(p.numel() for p in params)
        n_train = sum(p.numel() for p in params if p.requires_grad)
        lines.append(
            f"  group {index}: {len(params)} tensors, {n:,} params, {n_train:,} trainable, "
            f"lr {group['lr']:.3g}"
        )

    all_params = list(learn.model.parameters())
    total = sum(p.numel() for p in all_params)
    trainable_total = sum(p.numel() for p in all_params if p.requires_grad)
    lines.append("")
    lines.append(f"total params: {total:,}")
    lines.append(f"trainable params: {trainable_total:,}")
    lines.append(f"non-trainable params: {total - trainable_total:,}")
    lines.append("")
    opt = learn.opt
    hyper = {
        k: v for k, v in opt.defaults.items() if k in ("betas", "momentum", "eps", "weight_decay")
    }
    lines.append(f"optimizer: {type(opt).__name__} {hyper}")
    lines.append(f"loss: {learn.loss_fn!r}")
    return "\n".join(lines)
