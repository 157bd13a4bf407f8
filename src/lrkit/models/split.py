"""Layer groups for vision models: splitters return `list[list[nn.Parameter]]`, checked later.

ResNets (lrkit's, torchvision's or timm's, bare or as a body + head) split in three, as fastai
does: the stem with layer1 and layer2, then layer3 with layer4, then the head (or `fc`).
Other models split by their top-level children, or by a function the user passes.
"""

from __future__ import annotations

from torch import nn

from lrkit.models.vision_model import VisionModel

Groups = list[list[nn.Parameter]]


def _params(modules: list[nn.Module]) -> list[nn.Parameter]:
    return [p for module in modules for p in module.parameters()]


def is_resnet_like(model: nn.Module) -> bool:
    """True when the model (or its body) has children named layer1 to layer4."""
    body = model.body if isinstance(model, VisionModel) else model
    names = {name for name, _ in body.named_children()}
    return {"layer1", "layer2", "layer3", "layer4"} <= names


def resnet_split(model: nn.Module) -> Groups:
    """(stem + layer1 + layer2), (layer3 + layer4), head: fastai's three ResNet groups."""
    if not is_resnet_like(model):
        raise ValueError(
            f"resnet_split needs children named layer1..layer4, and {type(model).__name__} "
            "has none; use children_split or a splitter of your own"
        )
    if isinstance(model, VisionModel):
        body, tail = model.body, [model.head]
    else:
        body, tail = model, []
    children = list(body.named_children())
    names = [name for name, _ in children]
    start, end = names.index("layer3"), names.index("layer4") + 1
    stem = [m for _, m in children[:start]]
    deep = [m for _, m in children[start:end]]
    tail = [m for _, m in children[end:]] + tail  # fc for a bare ResNet, else the head
    return [_params(stem), _params(deep), _params(tail)]


def children_split(model: nn.Module) -> Groups:
    """One group per top-level child that has parameters (body and head for a VisionModel)."""
    groups = [list(child.parameters()) for _, child in model.named_children()]
    groups = [g for g in groups if g]
    loose = list(model.parameters(recurse=False))  # parameters set on the model itself
    if loose:
        groups.append(loose)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no parameters to put into layer groups")
    return groups


def default_split(model: nn.Module) -> Groups:
    """resnet_split for ResNet-like models, else one group per top-level child."""
    return resnet_split(model) if is_resnet_like(model) else children_split(model)
