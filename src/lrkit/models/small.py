"""A small convolutional network for 28x28 images (Fashion-MNIST): trains in seconds on a CPU."""

from __future__ import annotations

from torch import nn


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    # stride 2 halves the resolution: 28 -> 14 -> 7 -> 4
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def simple_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 16) -> nn.Sequential:
    """Three stride-2 conv blocks (width, 2x, 4x width channels), global average pool, linear."""
    return nn.Sequential(
        _conv_block(in_channels, width),
        _conv_block(width, 2 * width),
        _conv_block(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),  # (B, 4*width)
        nn.Linear(4 * width, num_classes),
    )
