"""Models: torchvision-named ResNets, fastai's head, body/head split, layer groups, weights."""

from lrkit.models.head import ConcatPool2d, new_head
from lrkit.models.hub import imagenet_url, imagenet_weights
from lrkit.models.registry import register_model
from lrkit.models.resnet import (
    BasicBlock,
    Bottleneck,
    ResNet,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnet_small,
)
from lrkit.models.small import simple_cnn
from lrkit.models.split import children_split, default_split, is_resnet_like, resnet_split
from lrkit.models.vision_model import (
    ARCHS,
    VisionModel,
    attach_head,
    body_features,
    create_body,
    vision_model,
)
from lrkit.models.weights import (
    adapt_input_conv,
    fit_state_dict,
    load_pretrained,
    read_state_dict,
    set_in_chans,
)

__all__ = [
    "ARCHS",
    "BasicBlock",
    "Bottleneck",
    "ConcatPool2d",
    "ResNet",
    "VisionModel",
    "adapt_input_conv",
    "attach_head",
    "body_features",
    "children_split",
    "create_body",
    "default_split",
    "fit_state_dict",
    "imagenet_url",
    "imagenet_weights",
    "is_resnet_like",
    "load_pretrained",
    "new_head",
    "read_state_dict",
    "register_model",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet_small",
    "resnet_split",
    "set_in_chans",
    "simple_cnn",
    "vision_model",
]
