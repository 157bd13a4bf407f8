"""Layer groups for vision models: splitters return `list[list[nn.Parameter]]`, checked later.

ResNets (lrkit's, torchvision's or timm's, bare or as a body + head) split in three, as fastai
does: the stem with layer1 and layer2, then layer3 with layer4, then the head (or `fc`).
EfficientNets (lrkit's Lite, timm's) split the same way, where the resolution goes from 1/8 to
1/16: the stem with stages 0-2, then stages 3-6 with the head convolution, then the head.
Other models split by their top-level children, or by a function the user passes.
"""

from __future__ import annotations

from torch import nn

from lrkit.models.vision_model import FeaturesBody, VisionModel

Groups = list[list[nn.Parameter]]


def _params(modules: list[nn.Module]) -> list[nn.Parameter]:
    return [p for module in modules for p in module.parameters()]


def _body(model: nn.Module) -> nn.Module:
    """The network whose children are the stages: the model, its body, or the wrapped network."""
    body = model.body if isinstance(model, VisionModel) else model
    return body.network if isinstance(body, FeaturesBody) else body


def is_resnet_like(model: nn.Module) -> bool:
    """True when the model (or its body) has children named layer1 to layer4."""
    body = _body(model)
    names = {name for name, _ in body.named_children()}
    return {"layer1", "layer2", "layer3", "layer4"} <= names


def _body_and_head(model: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
    """(the network to split, [the head] for lrkit's VisionModel, else [])."""
    return _body(model), [model.head] if isinstance(model, VisionModel) else []


def resnet_split(model: nn.Module) -> Groups:
    """(stem + layer1 + layer2), (layer3 + layer4), head: fastai's three ResNet groups."""
    if not is_resnet_like(model):
        raise ValueError(
            f"resnet_split needs children named layer1..layer4, and {type(model).__name__} "
            "has none; use children_split or a splitter of your own"
        )
    body, tail = _body_and_head(model)
    children = list(body.named_children())
    names = [name for name, _ in children]
    start, end = names.index("layer3"), names.index("layer4") + 1
    stem = [m for _, m in children[:start]]
    deep = [m for _, m in children[start:end]]
    tail = [m for _, m in children[end:]] + tail  # fc for a bare ResNet, else the head
    return [_params(stem), _params(deep), _params(tail)]


EARLY_STAGES = 3  # EfficientNet blocks.0-2 run at 1/2 to 1/8 resolution, like layer1-2 of a ResNet
POOL_AND_CLASSIFIER = ("global_pool", "dropout", "classifier")  # after conv_head: the head


def is_efficientnet_like(model: nn.Module) -> bool:
    """True when the model (or its body) has children conv_stem, blocks (the stages), conv_head."""
    body = _body(model)
    children = dict(body.named_children())
    blocks = children.get("blocks")
    return (
        {"conv_stem", "conv_head"} <= children.keys()
        and isinstance(blocks, nn.Sequential)
        and len(blocks) > EARLY_STAGES
    )


def efficientnet_split(model: nn.Module) -> Groups:
    """(stem + blocks.0-2), (blocks.3.. + conv_head and its BatchNorm), head (or classifier)."""
    if not is_efficientnet_like(model):
        raise ValueError(
            f"efficientnet_split needs children conv_stem, blocks (more than {EARLY_STAGES} "
            f"stages) and conv_head, and {type(model).__name__} lacks them; use children_split "
            "or a splitter of your own"
        )
    body, tail = _body_and_head(model)
    children = list(body.named_children())
    names = [name for name, _ in children]
    start = names.index("blocks")
    after = range(start, len(names))
    stop = next((i for i in after if names[i] in POOL_AND_CLASSIFIER), len(names))
    early = [m for _, m in children[:start]] + list(body.blocks[:EARLY_STAGES])
    late = list(body.blocks[EARLY_STAGES:]) + [m for _, m in children[start + 1 : stop]]
    tail = [m for _, m in children[stop:]] + tail  # pool and classifier of a bare network
    return [_params(early), _params(late), _params(tail)]


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
    """resnet_split / efficientnet_split where they fit, else one group per top-level child."""
    if is_resnet_like(model):
        return resnet_split(model)
    if is_efficientnet_like(model):
        return efficientnet_split(model)
    return children_split(model)
