"""Body + head: a network cut at its global pool, and a fresh head for the task's classes.

`create_body` keeps the network's children up to (not including) the last child that is or
holds a pooling layer, under their own names (`body.layer1...`), so layer groups can be
picked by name. That assumes, as fastai does, that the network's forward runs its children in
order. A network with `forward_features` (timm's and lrkit's interface) says where its body
ends: the children are kept when they compute the same features (ResNets, EfficientNets),
checked on one probe input; otherwise the body is `FeaturesBody`, which calls
`forward_features` itself (the classifier removed with `reset_classifier(0)`).
`vision_model(arch, n_out, ...)` rebuilds the same structure from plain values, an lrkit
architecture or a "timm:<name>" / "torchvision:<name>", which is what `export` stores so that
`load_learner` can make the model again.
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
from lrkit.models.foreign import build as build_foreign
from lrkit.models.foreign import library_names, split_ref
from lrkit.models.head import new_head
from lrkit.models.resnet import (
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnet_small,
)
from lrkit.models.weights import set_in_chans

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


class FeaturesBody(nn.Module):
    """A network's `forward_features` as a module: (B, C_in, H, W) -> (B, C, h, w)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        reset = getattr(network, "reset_classifier", None)
        if callable(reset):
            reset(0)  # the classifier's weights would sit in the body unused
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.forward_features(x)


def _is_pool(module: nn.Module) -> bool:
    return any(POOL_NAME.search(type(m).__name__) for m in module.modules())


PROBE_SIZE = 64  # pixels of the probe image that checks a children cut against forward_features


def _same_features(cut: nn.Module, network: nn.Module, in_chans: int) -> bool:
    """Whether `cut` computes `network.forward_features` (one seeded probe, eval mode, no grad).

    The probe uses its own generator, so the global random state is left as it was.
    """
    param = next(network.parameters(), None)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, in_chans, PROBE_SIZE, PROBE_SIZE, generator=gen)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            want, got = network.forward_features(x), cut(x)
        return want.shape == got.shape and torch.allclose(want, got, rtol=1e-4, atol=1e-5)
    except Exception:  # a cut that cannot even run on the input is not the body
        return False
    finally:
        network.train(was_training)


def _children_cut(model: nn.Module, cut: int | None) -> nn.Sequential | None:
    """The first `cut` children (default: up to the last pooling child); None if none pools."""
    children = list(model.named_children())
    if cut is None:
        pools = [i for i, (_, child) in enumerate(children) if _is_pool(child)]
        if not pools:
            return None
        cut = pools[-1]
    if not 0 < cut <= len(children):
        raise ValueError(f"cut={cut} is out of range for a model with {len(children)} children")
    return nn.Sequential(OrderedDict(children[:cut]))


def create_body(model: nn.Module, cut: int | None = None, in_chans: int = 3) -> nn.Module:
    """The model's body: its first `cut` children (names kept), or up to its global pool.

    Without `cut`, a model with `forward_features` gets the children up to its last pooling
    child when they compute the same features on a probe input, else a `FeaturesBody`. Raises
    ValueError when the body's end is unclear (no forward_features, no pooling child).
    """
    body = _children_cut(model, cut)
    if cut is not None:
        return body
    if callable(getattr(model, "forward_features", None)):
        if body is not None and _same_features(body, model, in_chans):
            return body
        return FeaturesBody(model)
    if body is None:
        raise ValueError(
            f"{type(model).__name__} has no child that pools and no forward_features, so where "
            "its body ends is unclear; pass cut=<number of children to keep>"
        )
    return body


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


def build_network(arch: str, in_chans: int = 3, kind: str | None = None) -> nn.Module:
    """An lrkit architecture, or a "timm:<name>" / "torchvision:<name>", for `in_chans` inputs.

    `kind` ("imagenet", ...) asks timm/torchvision for their own pretrained weights (lrkit's
    architectures load theirs from a file, see `hub`). Raises ValueError for an unknown name.
    """
    if arch in ARCHS:
        return ARCHS[arch](in_chans=in_chans)
    parts = split_ref(arch)
    if parts is None:
        raise ValueError(
            f"unknown architecture {arch!r}; lrkit has {sorted(ARCHS)}, and timm or torchvision "
            "models are named 'timm:<name>' or 'torchvision:<name>'"
        )
    library, name = parts
    if name not in (library_names(library) or {name}):  # absent libraries: build() says so
        raise ValueError(
            f"unknown architecture {name!r}: neither lrkit ({', '.join(sorted(ARCHS))}) nor "
            f"{library} has a model of that name"
        )
    network = build_foreign(library, name, kind=kind, in_chans=in_chans)
    return set_in_chans(network, in_chans)  # torchvision builds RGB models; no-op when it fits


def vision_model(
    arch: str = "resnet50",
    n_out: int = 1000,
    in_chans: int = 3,
    lin_ftrs: int | None = 512,
    ps: float = 0.5,
    concat_pool: bool = True,
) -> VisionModel:
    """`arch`'s body with a new head for `n_out` classes (weights random).

    `arch`: an lrkit architecture, or a "timm:<name>" / "torchvision:<name>" where that library
    is installed. Raises ValueError for an unknown name.
    """
    network = build_network(arch, in_chans)
    return attach_head(network, n_out, lin_ftrs, ps, concat_pool, in_chans=in_chans)


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
    body = create_body(network, cut, in_chans)
    n_features = getattr(network, "num_features", None)
    if not isinstance(n_features, int) or cut is not None:
        n_features = body_features(body, in_chans)
    return VisionModel(body, new_head(n_features, n_out, lin_ftrs, ps, concat_pool))
