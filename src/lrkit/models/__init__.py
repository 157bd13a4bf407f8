"""Models: torchvision-named ResNets, timm-named EfficientNet-Lite, fastai's head, body/head
split, layer groups, weights."""

from lrkit.models.efficientnet import (
    EfficientNetLite,
    efficientnet_lite0,
    efficientnet_lite1,
    efficientnet_lite2,
    efficientnet_lite3,
    efficientnet_lite4,
    efficientnet_pytorch_keys,
)
from lrkit.models.head import ConcatPool2d, new_head
from lrkit.models.hub import imagenet_url, imagenet_weights, packaged_weights, weights_stats
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
from lrkit.models.split import (
    children_split,
    default_split,
    efficientnet_split,
    is_efficientnet_like,
    is_resnet_like,
    resnet_split,
)
from lrkit.models.vision_model import (
    ARCHS,
    FeaturesBody,
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
    "EfficientNetLite",
    "FeaturesBody",
    "ResNet",
    "VisionModel",
    "adapt_input_conv",
    "attach_head",
    "body_features",
    "children_split",
    "create_body",
    "default_split",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "efficientnet_lite3",
    "efficientnet_lite4",
    "efficientnet_pytorch_keys",
    "efficientnet_split",
    "fit_state_dict",
    "imagenet_url",
    "imagenet_weights",
    "is_efficientnet_like",
    "is_resnet_like",
    "load_pretrained",
    "new_head",
    "packaged_weights",
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
    "weights_stats",
]
