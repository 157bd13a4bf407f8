"""Freezing layer groups: which parameters train, and which norm layers stay in eval mode.

Freezing sets `requires_grad`, so frozen layers cost no gradient. With `train_bn` the
BatchNorm parameters of frozen groups keep training (fastai's default); without it every
normalisation layer with running statistics in a frozen group is frozen whole and kept in eval.
"""

from __future__ import annotations

from torch import nn

from lrkit.layer_groups import bn_parameter_ids, norm_layers_within


def freeze_to(
    model: nn.Module,
    layer_groups: list[list[nn.Parameter]],
    n: int,
    train_bn: bool,
    frozen_bn: list[nn.Module],
) -> list[nn.Module]:
    """Freeze groups [0, n) and train groups [n, len); negative n counts back.

    `frozen_bn` are the norm layers frozen until now; returns those frozen from now on (empty
    with `train_bn`), already in eval mode, while layers no longer frozen get back the model's
    mode. Raises ValueError when n leaves no group training or the model has a single group.
    """
    n_groups = len(layer_groups)
    index = n + n_groups if n < 0 else n
    if n_groups == 1 and n != 0:
        raise ValueError(
            "this model has a single layer group, so freezing all but the last group would "
            "freeze nothing; pass a splitter (e.g. lambda m: [m.body, m.head]) to split it"
        )
    if not 0 <= index < n_groups:
        raise ValueError(
            f"freeze_to({n}) is out of range for {n_groups} layer groups: use 0 to "
            f"{n_groups - 1} (or -1 to -{n_groups - 1}) so one group still trains"
        )
    keep = bn_parameter_ids(model) if train_bn else set()
    for group_index, params in enumerate(layer_groups):
        for param in params:
            param.requires_grad_(group_index >= index or id(param) in keep)
    frozen = {id(p) for params in layer_groups[:index] for p in params}
    now = [] if train_bn else norm_layers_within(model, frozen)
    for layer in frozen_bn:
        if all(layer is not kept for kept in now):
            layer.train(model.training)  # unfrozen: back to the model's mode
    for layer in now:
        layer.eval()
    return now


def frozen_index(model: nn.Module, layer_groups: list[list[nn.Parameter]], train_bn: bool) -> int:
    """Index of the first trainable layer group (BatchNorm not counted when `train_bn`)."""
    bn = bn_parameter_ids(model) if train_bn else set()
    for index, params in enumerate(layer_groups):
        if any(p.requires_grad for p in params if id(p) not in bn):
            return index
    return len(layer_groups)
