"""Presizing: each item once to a square of `presize` pixels, uint8, before batch augmentation.

Geometry (one route for the direct path and the cache, so both give the same pixels): the
usable region is the centre of the image with an aspect ratio of at most `max_aspect` (the
long side is trimmed); it is resized so its short side is `presize`, and the square is cut
from it at position (u, v) in [0, 1] (0.5, 0.5 = centre; random for training).

The resize is torch's antialiased bilinear on uint8 (Pillow's BILINEAR filter, about three
times faster here); crops are whole pixels of the presized region.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lrkit.config import DATA


@dataclass(frozen=True)
class PresizeConfig:
    """How items are presized: square side in pixels, and the widest aspect kept."""

    presize: int = DATA.presize
    max_aspect: float = 4 / 3


def region_box(width: int, height: int, max_aspect: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centre region whose aspect is at most `max_aspect`."""
    short = min(width, height)
    long_kept = min(max(width, height), round(short * max_aspect))
    if width >= height:
        left = (width - long_kept) // 2
        return left, 0, left + long_kept, height
    top = (height - long_kept) // 2
    return 0, top, width, top + long_kept


def region_shape(width: int, height: int, cfg: PresizeConfig) -> tuple[int, int]:
    """(height, width) of the region after resizing its short side to `presize`."""
    left, top, right, bottom = region_box(width, height, cfg.max_aspect)
    w, h = right - left, bottom - top
    scale = cfg.presize / min(w, h)
    return max(cfg.presize, round(h * scale)), max(cfg.presize, round(w * scale))


def square_offset(length: int, side: int, u: float) -> float:
    """Start of a `side`-long window at fraction `u` of the free play along `length`."""
    return u * (length - side)


def resize_rgb(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8: `pixels` (H, W, 3) resized with antialiased bilinear.

    A C-contiguous `pixels` is a channels_last tensor, which takes torch's fast uint8 path.
    """
    x = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W), channels_last
    out = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True)
    return out[0].permute(1, 2, 0).numpy()  # channels_last memory: already (H, W, 3) in order


def presize_region(img: Image.Image, cfg: PresizeConfig) -> np.ndarray:
    """(H, W, 3) uint8: the whole region with its short side at `presize` (what the cache keeps)."""
    height, width = region_shape(*img.size, cfg)
    region = np.array(img.crop(region_box(*img.size, cfg.max_aspect)))  # contiguous (H, W, 3)
    return resize_rgb(region, height, width)


def crop_square(region: np.ndarray, u: float, v: float) -> np.ndarray:
    """The (side, side) square at (u, v) of an (H, W, C) region; side = min(H, W)."""
    height, width = region.shape[:2]
    side = min(height, width)
    y0 = round(square_offset(height, side, v))
    x0 = round(square_offset(width, side, u))
    return region[y0 : y0 + side, x0 : x0 + side]


def presize_image(img: Image.Image, cfg: PresizeConfig, u: float, v: float) -> np.ndarray:
    """(presize, presize, 3) uint8: the square at (u, v) of the presized region.

    The region is resized whole, then cropped: the very pixels the cache keeps and crops, so
    a run gives the same batches with and without the cache.
    """
    return crop_square(presize_region(img, cfg), u, v)
