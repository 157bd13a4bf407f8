"""Body + head: a network cut at its global pool, and a fresh head for the task's classes.

`create_body` keeps the network's children up to (not including) the last child that is or
holds a pooling layer, under their own names (`body.layer1...`), so layer groups can be
picked by name. It assumes, as fastai does, that the network's forward runs its children in
order, which holds for ResNets (lrkit's, torchvision's, timm's), lrkit's EfficientNet-Lite
(whose body is then its `forward_features`) and most CNNs.
`vision_model(arch, n_out, ...)` rebuilds the same structure from plain values, which is what
`export` stores so that `load_learner` can make the model again.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from lrkit.models.efficientnet import (
    efficientnet_lite0,
    efficientnet_lite1,
    efficientnet_lite2,
    efficientnet_lite3,
    efficientnet_lite4,
)
from lrkit.models.head import new_head
from lrkit.models.resnet import (
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnet_small,
)

ARCHS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
    "resnet_small": resnet_small,
    "efficientnet_lite0": efficientnet_lite0,
    "efficientnet_lite1": efficientnet_lite1,
    "efficientnet_lite2": efficientnet_lite2,
    "efficientnet_lite3": efficientnet_lite3,
    "efficientnet_lite4": efficientnet_lite4,
}
POOL_NAME = re.compile(r"Pool(ing)?[123]d$")  # MaxPool2d, AdaptiveAvgPool2d, SelectAdaptivePool2d


class VisionModel(nn.Module):
    """`head(body(x))`: body = a network up to its global pool, head = pool + classifier."""

    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _is_pool(module: nn.Module) -> bool:
    return any(POOL_NAME.search(type(m).__name__) for m in module.modules())


def create_body(model: nn.Module, cut: int | None = None) -> nn.Sequential:
    """The model's first `cut` children (default: up to its last pooling child), names kept."""
    children = list(model.named_children())
    if cut is None:
        pools = [i for i, (_, child) in enumerate(children) if _is_pool(child)]
        if not pools:
            raise ValueError(
                f"{type(model).__name__} has no child that pools, so where its body ends is "
                "unclear; pass cut=<number of children to keep>"
            )
        cut = pools[-1]
    if not 0 < cut <= len(children):
        raise ValueError(f"cut={cut} is out of range for a model with {len(children)} children")
    return nn.Sequential(OrderedDict(children[:cut]))


def body_features(body: nn.Module, in_chans: int = 3, size: int = 64) -> int:
    """Channels of the body's output, from one forward pass on zeros in eval mode."""
    was_training = body.training
    body.eval()
    try:
        with torch.no_grad():
            param = next(body.parameters(), None)
            x = torch.zeros(
                1, in_chans, size, size, device=param.device if param is not None else None
            )
            return int(body(x).shape[1])  # (1, C, h, w)
    finally:
        body.train(was_training)


def vision_model(
    arch: str = "resnet50",
    n_out: int = 1000,
    in_chans: int = 3,
    lin_ftrs: int | None = 512,
    ps: float = 0.5,
    concat_pool: bool = True,
) -> VisionModel:
    """An lrkit architecture's body with a new head for `n_out` classes (weights random)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; lrkit has {sorted(ARCHS)}")
    network = ARCHS[arch](in_chans=in_chans)
    return attach_head(network, n_out, lin_ftrs, ps, concat_pool)


def attach_head(
    network: nn.Module,
    n_out: int,
    lin_ftrs: int | None = 512,
    ps: float = 0.5,
    concat_pool: bool = True,
    cut: int | None = None,
    in_chans: int = 3,
) -> VisionModel:
    """`network` cut at its global pool, followed by `new_head(...)` for `n_out` classes."""
    body = create_body(network, cut)
    n_features = getattr(network, "num_features", None)
    if not isinstance(n_features, int) or cut is not None:
        n_features = body_features(body, in_chans)
    return VisionModel(body, new_head(n_features, n_out, lin_ftrs, ps, concat_pool))
