"""ResNets with torchvision's parameter names and timm's interface, read top to bottom.

Layout (the names are the contract: torchvision and timm weight files load with strict=True):

    conv1 -> bn1 -> relu -> maxpool -> layer1 -> layer2 -> layer3 -> layer4 -> avgpool -> fc

Each `layerN` is an `nn.Sequential` of blocks; the first block of a stage that changes the
resolution or the width has `downsample` = Sequential(conv 1x1, BatchNorm), i.e. the keys
`layerN.0.downsample.0.weight` and `layerN.0.downsample.1.*`. Bottleneck blocks put the stride
on the 3x3 convolution ("ResNet v1.5", as torchvision and timm do).

`forward_features` (everything up to the global pool), `forward_head` and `reset_classifier`
follow timm, so a body/head split and a new classifier need no knowledge of the layout.
`resnet_small` is the same network with a 3x3 stride-1 stem and no max pool, for 28x28 images.
"""

from __future__ import annotations

import torch
from torch import nn


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BatchNorm follows)."""
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias (a BatchNorm follows)."""
    return nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus the identity (resnet18/34); output width = `planes`."""

    expansion = 1

    def __init__(
        self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(c_in, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        """The BatchNorm whose output is added to the shortcut (zero it for identity blocks)."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand plus the identity (resnet50+); width 4 x planes."""

    expansion = 4

    def __init__(
        self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(c_in, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        """The BatchNorm whose output is added to the shortcut (zero it for identity blocks)."""
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


Block = type[BasicBlock] | type[Bottleneck]


def _stage(block: Block, c_in: int, planes: int, n_blocks: int, stride: int) -> nn.Sequential:
    """`n_blocks` blocks; the first one strides and, when the shape changes, projects."""
    c_out = planes * block.expansion
    downsample = None
    if stride != 1 or c_in != c_out:
        downsample = nn.Sequential(conv1x1(c_in, c_out, stride), nn.BatchNorm2d(c_out))
    blocks = [block(c_in, planes, stride, downsample)]
    blocks += [block(c_out, planes) for _ in range(n_blocks - 1)]
    return nn.Sequential(*blocks)


class ResNet(nn.Module):
    """A ResNet: stem, four stages of `block`s (`layers` blocks each), global pool, linear.

    `widths` are the stages' `planes` (the output width is planes x block.expansion);
    `small_stem` swaps the 7x7 stride-2 conv and max pool for one 3x3 stride-1 conv, which
    keeps 28x28 inputs from shrinking to 1x1 before layer4. `zero_init_residual` starts
    every block as the identity (its last BatchNorm scale at 0), which helps from scratch.
    """

    def __init__(
        self,
        block: Block,
        layers: tuple[int, int, int, int] | list[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: tuple[int, int, int, int] | list[int] = (64, 128, 256, 512),
        small_stem: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(
                f"a ResNet has 4 stages: got layers={list(layers)} and widths={list(widths)}"
            )
        stem = widths[0]
        if small_stem:
            self.conv1 = conv3x3(in_chans, stem)
        else:
            self.conv1 = nn.Conv2d(in_chans, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = (
            nn.Identity() if small_stem else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        )
        out = [w * block.expansion for w in widths]  # each stage's output width
        self.layer1 = _stage(block, stem, widths[0], layers[0], stride=1)
        self.layer2 = _stage(block, out[0], widths[1], layers[1], stride=2)
        self.layer3 = _stage(block, out[1], widths[2], layers[2], stride=2)
        self.layer4 = _stage(block, out[2], widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = widths[3] * block.expansion
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.fc: nn.Module = nn.Linear(self.num_features, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        """He init (fan_out) for convolutions, BatchNorm as the identity; linear keeps torch's."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(module.last_bn().weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, num_features, H/32, W/32): the body, up to the pool."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits (B, num_classes); `pre_logits` stops at the pooled features."""
        x = self.avgpool(x).flatten(1)  # (B, num_features)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final layer (`fc`)."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh `fc` for `num_classes` outputs; 0 makes the model return pooled features."""
        self.num_classes = num_classes
        if num_classes > 0:
            self.fc = nn.Linear(self.num_features, num_classes)
        else:
            self.fc = nn.Identity()


def resnet18(num_classes: int = 1000, in_chans: int = 3) -> ResNet:
    """ResNet-18: BasicBlock x (2, 2, 2, 2), 11,689,512 parameters at 1000 classes."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans)


def resnet34(num_classes: int = 1000, in_chans: int = 3) -> ResNet:
    """ResNet-34: BasicBlock x (3, 4, 6, 3), 21,797,672 parameters at 1000 classes."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_chans)


def resnet50(num_classes: int = 1000, in_chans: int = 3) -> ResNet:
    """ResNet-50: Bottleneck x (3, 4, 6, 3), 25,557,032 parameters at 1000 classes."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans)


def resnet101(num_classes: int = 1000, in_chans: int = 3) -> ResNet:
    """ResNet-101: Bottleneck x (3, 4, 23, 3)."""
    return ResNet(Bottleneck, (3, 4, 23, 3), num_classes, in_chans)


def resnet152(num_classes: int = 1000, in_chans: int = 3) -> ResNet:
    """ResNet-152: Bottleneck x (3, 8, 36, 3)."""
    return ResNet(Bottleneck, (3, 8, 36, 3), num_classes, in_chans)


def resnet_small(num_classes: int = 10, in_chans: int = 1, width: int = 16) -> ResNet:
    """A ResNet for 28x28 images (Fashion-MNIST): 3x3 stem, one BasicBlock per stage.

    Resolutions 28 -> 28 -> 14 -> 7 -> 4 at widths (w, 2w, 4w, 8w): 308,538 parameters at
    w=16; one Fashion-MNIST epoch (bs 128) took 46 s on 2 CPU cores. Meant to be trained from
    scratch, so every residual branch starts at zero.
    """
    widths = (width, 2 * width, 4 * width, 8 * width)
    return ResNet(
        BasicBlock,
        (1, 1, 1, 1),
        num_classes,
        in_chans,
        widths=widths,
        small_stem=True,
        zero_init_residual=True,
    )
