"""`Learner.summary()`: every layer with its output shape, parameters, trainable state and
layer group (as fastai's `learn.summary()`), then the groups and the frozen state in plain words,
the totals, the optimizer and the loss.

Output shapes come from one forward pass on the first `PROBE_ITEMS` items of one batch (valid
loader first, so no shuffling sampler is touched) in eval mode without gradients; every
module's train/eval mode, the global random states and the loader's generators are put back and
live persistent workers serve no batch, so the summary leaves no trace on training. The batch
dimension is shown at the size of the loader's batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lrkit.batch import to_device
from lrkit.layer_groups import eval_mode
from lrkit.snapshot import LoaderStates

if TYPE_CHECKING:
    from lrkit.learner import Learner

DEPTH = 2  # levels of submodules listed: the model's children, and theirs
PROBE_ITEMS = 2  # items of the first batch the shapes are measured on


@dataclass(frozen=True)
class LayerRow:
    """One module of the summary: `name` its dotted path, `depth` 1 for the model's children,
    `shape` its output's shape as text ("-" when it produced none), `params` its parameter count
    (submodules included), `trainable` how many of them require a gradient, `groups` the layer
    group(s) its parameters lie in ("0", "0-1", "-" without parameters)."""

    name: str
    kind: str
    depth: int
    shape: str
    params: int
    trainable: int
    groups: str

    @property
    def trains(self) -> str:
        """ "yes", "no", "part", or "-" for a module without parameters."""
        if self.params == 0:
            return "-"
        return "yes" if self.trainable == self.params else "no" if self.trainable == 0 else "part"


def listed_modules(model: nn.Module, depth: int = DEPTH) -> list[tuple[str, int, nn.Module]]:
    """(dotted name, depth, module) for the model's children and theirs down to `depth`, each
    parent before its children; the model itself when it has no children."""
    found: list[tuple[str, int, nn.Module]] = []

    def walk(module: nn.Module, prefix: str, level: int) -> None:
        for name, child in module.named_children():
            found.append((f"{prefix}{name}", level, child))
            if level < depth:
                walk(child, f"{prefix}{name}.", level + 1)

    walk(model, "", 1)
    return found or [(type(model).__name__, 1, model)]


def _first_items(batch: Any, k: int) -> Any:
    """The batch cut to its first `k` items (tensors along dim 0, inside tuples/lists/dicts)."""
    if isinstance(batch, torch.Tensor):
        return batch[:k] if batch.dim() else batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(_first_items(item, k) for item in batch)
    if isinstance(batch, dict):
        return {key: _first_items(value, k) for key, value in batch.items()}
    return batch


def _batch_size(batch: Any) -> int | None:
    """Length of the first tensor in the batch (its dim 0), None when there is none."""
    if isinstance(batch, torch.Tensor):
        return len(batch) if batch.dim() else None
    items = batch.values() if isinstance(batch, dict) else batch
    if isinstance(items, (list, tuple, type({}.values()))):
        for item in items:
            size = _batch_size(item)
            if size is not None:
                return size
    return None


def _shape(output: Any, probe: int, full: int | None) -> str:
    """(B, C, H, W)-style shape of a tensor output, or of the first tensor in a tuple/dict; a
    first dimension equal to the probe's size is shown as the full batch's."""
    if isinstance(output, torch.Tensor):
        dims = list(output.shape)
        if dims and full is not None and dims[0] == probe:
            dims[0] = full
        return str(tuple(dims))
    if isinstance(output, (list, tuple)) and output:
        return _shape(output[0], probe, full)
    if isinstance(output, dict) and output:
        return _shape(next(iter(output.values())), probe, full)
    return "-"


def _output_shapes(learn: Learner, modules: list[tuple[str, int, nn.Module]]) -> dict[str, str]:
    """Shape of each module's output on the first items of one batch; empty when no batch can
    be drawn."""
    loader = learn.dls.valid if learn.dls.valid is not None else learn.dls.train
    shapes: dict[str, str] = {}
    sizes: dict[str, int | None] = {"probe": PROBE_ITEMS, "full": None}

    def recorder(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:  # None: output kept
            shapes.setdefault(name, _shape(output, sizes["probe"], sizes["full"]))

        return hook

    handles = [module.register_forward_hook(recorder(name)) for name, _, module in modules]
    states = LoaderStates.capture([loader])
    try:
        with torch.no_grad(), eval_mode(learn.model):
            batch = next(iter(loader), None)
            if batch is not None:
                sizes["full"] = _batch_size(batch)
                sizes["probe"] = min(PROBE_ITEMS, sizes["full"] or PROBE_ITEMS)
                learn.forward(
                    learn.model, to_device(_first_items(batch, PROBE_ITEMS), learn.device)
                )
    finally:
        states.restore()
        for handle in handles:
            handle.remove()
    return shapes


def _group_of(learn: Learner) -> dict[int, int]:
    """id(parameter) -> index of its layer group."""
    return {id(p): index for index, params in enumerate(learn.layer_groups) for p in params}


def layer_rows(learn: Learner, depth: int = DEPTH) -> list[LayerRow]:
    """The summary's layer table as data (for `--json` and tests): one LayerRow per module of
    `listed_modules(learn.model, depth)`, shapes from one probe batch."""
    modules = listed_modules(learn.model, depth)
    shapes = _output_shapes(learn, modules)
    group_of = _group_of(learn)
    rows = []
    for name, level, module in modules:
        params = list(module.parameters())
        groups = sorted({group_of[id(p)] for p in params if id(p) in group_of})
        shown = (
            "-"
            if not groups
            else str(groups[0])
            if len(groups) == 1
            else (f"{groups[0]}-{groups[-1]}")
        )
        rows.append(
            LayerRow(
                name=name,
                kind=type(module).__name__,
                depth=level,
                shape=shapes.get(name, "-"),
                params=sum(p.numel() for p in params),
                trainable=sum(p.numel() for p in params if p.requires_grad),
                groups=shown,
            )
        )
    return rows


def _span(first: int, last: int) -> str:
    return f"group {first}" if first == last else f"groups {first}–{last}"


def frozen_words(learn: Learner) -> str:
    """The frozen state in plain words: "nothing frozen: all 3 groups train", "2 of 3 groups
    frozen (groups 0–1); only the head (group 2) trains", "all 3 groups frozen: nothing
    trains"; "; BatchNorm in the frozen groups still trains" is added where it does
    (train_bn)."""
    n, frozen = learn.n_groups, learn.frozen_idx
    if frozen == 0:
        return "nothing frozen: " + ("the one group trains" if n == 1 else f"all {n} groups train")
    if frozen >= n:
        words = f"all {n} groups frozen: nothing trains"
    else:
        trains = (
            f"only the head ({_span(n - 1, n - 1)}) trains"
            if frozen == n - 1
            else f"{_span(frozen, n - 1)} train"
        )
        words = f"{frozen} of {n} groups frozen ({_span(0, frozen - 1)}); {trains}"
    frozen_params = [p for params in learn.layer_groups[:frozen] for p in params]
    if any(p.requires_grad for p in frozen_params):
        words += "; BatchNorm in the frozen groups still trains"
    return words


def _table(rows: list[tuple[str, ...]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def summarize(learn: Learner, depth: int = DEPTH) -> str:
    """The text of `Learner.summary()`."""
    cells = [("layer", "type", "output shape", "params", "trainable", "group")]
    for row in layer_rows(learn, depth):
        name = "  " * (row.depth - 1) + row.name
        cells.append((name, row.kind, row.shape, f"{row.params:,}", row.trains, row.groups))
    lines = [type(learn.model).__name__, *_table(cells, right={3})]

    lines += ["", f"layer groups: {learn.n_groups}; {frozen_words(learn)}"]
    group_cells = [("", "tensors", "params", "trainable", "lr")]
    for index, (params, group) in enumerate(
        zip(learn.layer_groups, learn.opt.param_groups, strict=True)
    ):
        n = sum(p.numel() for p in params)
        n_train = sum(p.numel() for p in params if p.requires_grad)
        group_cells.append(
            (f"group {index}:", str(len(params)), f"{n:,}", f"{n_train:,}", f"{group['lr']:.3g}")
        )
    lines += ["  " + line for line in _table(group_cells, right={1, 2, 3, 4})]

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
