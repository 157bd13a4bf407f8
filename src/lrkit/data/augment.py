"""Batch augmentation: one perspective matrix per image, one `grid_sample`, then lighting and
normalisation as one per-image scale and shift.

Coordinates are grid_sample's normalised ones, [-1, 1] with align_corners=False. Each image
gets a 3x3 matrix M that maps an output pixel to the input position it samples from:

    M = crop @ flip @ rotate @ zoom @ warp

so the random-resized crop, flip, rotation, zoom and perspective warp cost one resampling
pass together. Every random draw takes the caller's `torch.Generator`, on the batch's device.

Why lrkit's own code and not a library's: per image, this one-pass augmentation ran 1.7x as
fast as torchvision's transforms.v2 and 2.7x as fast as kornia's (measured by the filer of
issue 14; not re-measured here, where neither library can be imported with the CPU torch
build). Those libraries resample once per transform; the merged matrix resamples once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lrkit.config import DATA

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class AugConfig:
    """Magnitudes of the training augmentation; all zero (and min_scale 1) = no augmentation."""

    min_scale: float = DATA.min_scale  # smallest crop area, as a fraction of the image
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio range
    flip: bool = True  # horizontal flip with probability 0.5
    max_rotate: float = 10.0  # degrees either way
    max_zoom: float = 1.1  # zoom in by up to this factor
    max_warp: float = 0.2  # perspective strength
    max_lighting: float = 0.2  # brightness and contrast change

    @classmethod
    def none(cls) -> AugConfig:
        """No augmentation at all: the pass is then an exact identity at equal sizes."""
        return cls(
            min_scale=1.0,
            ratio=(1.0, 1.0),
            flip=False,
            max_rotate=0.0,
            max_zoom=1.0,
            max_warp=0.0,
            max_lighting=0.0,
        )


def _uniform(
    n: int, lo: float, hi: float, g: torch.Generator, device: torch.device
) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def _eye(n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(3, device=device).repeat(n, 1, 1)  # (n, 3, 3)


def crop_matrices(n: int, cfg: AugConfig, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, 3, 3) random-resized crops: area in [min_scale, 1], log-uniform aspect in `ratio`."""
    area = _uniform(n, cfg.min_scale, 1.0, g, device)
    log_r = _uniform(n, math.log(cfg.ratio[0]), math.log(cfg.ratio[1]), g, device)
    aspect = log_r.exp()
    width = (area * aspect).sqrt().clamp(max=1.0)  # fractions of the full width / height
    height = (area / aspect).sqrt().clamp(max=1.0)
    m = _eye(n, device)
    m[:, 0, 0], m[:, 1, 1] = width, height
    m[:, 0, 2] = (2 * torch.rand(n, generator=g, device=device) - 1) * (1 - width)
    m[:, 1, 2] = (2 * torch.rand(n, generator=g, device=device) - 1) * (1 - height)
    return m


def flip_matrices(n: int, cfg: AugConfig, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, 3, 3) horizontal flips, each with probability 0.5 (identity when flip is off)."""
    m = _eye(n, device)
    if cfg.flip:
        flips = torch.rand(n, generator=g, device=device) < 0.5
        m[:, 0, 0] = torch.where(flips, -1.0, 1.0)
    return m


def rotate_matrices(
    n: int, cfg: AugConfig, g: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(n, 3, 3) rotations by up to ±max_rotate degrees."""
    angle = torch.deg2rad(_uniform(n, -cfg.max_rotate, cfg.max_rotate, g, device))
    cos, sin = angle.cos(), angle.sin()
    m = _eye(n, device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    return m


def zoom_matrices(n: int, cfg: AugConfig, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, 3, 3) zooms in by a factor in [1, max_zoom]: the sampled area shrinks by 1/zoom."""
    zoom = _uniform(n, 1.0, cfg.max_zoom, g, device)
    m = _eye(n, device)
    m[:, 0, 0], m[:, 1, 1] = 1 / zoom, 1 / zoom
    return m


def warp_matrices(n: int, cfg: AugConfig, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, 3, 3) perspective tilts: bottom row (wx, wy, 1) with |w| <= max_warp."""
    m = _eye(n, device)
    m[:, 2, 0] = _uniform(n, -cfg.max_warp, cfg.max_warp, g, device)
    m[:, 2, 1] = _uniform(n, -cfg.max_warp, cfg.max_warp, g, device)
    return m


def random_matrices(
    n: int, cfg: AugConfig, g: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(n, 3, 3) output -> input maps, every part of the augmentation composed into one."""
    parts = [crop_matrices, flip_matrices, rotate_matrices, zoom_matrices, warp_matrices]
    m = _eye(n, device)
    for part in parts:
        m = m @ part(n, cfg, g, device)
    return m


def sampling_grid(m: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size, size, 2) grid_sample grid: pixel centres mapped through M, divided by w."""
    centres = torch.linspace(-1 + 1 / size, 1 - 1 / size, size, device=m.device, dtype=m.dtype)
    xs, ys = centres.view(1, 1, size), centres.view(1, size, 1)
    rows = m.view(-1, 3, 3, 1, 1)  # (B, 3, 3, 1, 1): broadcasts against (size, size)
    # Row r of M: (x * m0 + m2) is (B, 1, size), adding y * m1 makes (B, size, size). Far
    # cheaper than a (1, HW, 3) @ (B, 3, 3) matmul, which CPU torch runs slowly; written
    # straight into the grid's x and y planes, then times 1 / w in one pass.
    grid = torch.empty(m.shape[0], size, size, 2, device=m.device, dtype=m.dtype)
    for r in range(2):
        torch.add(xs * rows[:, r, 0] + rows[:, r, 2], ys * rows[:, r, 1], out=grid[..., r])
    w = (xs * rows[:, 2, 0] + rows[:, 2, 2]) + ys * rows[:, 2, 1]  # (B, size, size)
    return grid.mul_(w.reciprocal_().unsqueeze(-1))


def lighting_params(
    n: int, max_lighting: float, g: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (scale, shift) for pixels in [0, 1]: contrast about 0.5, then brightness.

    Contrast is log-uniform in [1 - L, 1 / (1 - L)], brightness a shift in [-L/2, L/2].
    """
    lo = math.log(1 - max_lighting)
    contrast = _uniform(n, lo, -lo, g, device).exp()
    brightness = _uniform(n, -max_lighting / 2, max_lighting / 2, g, device)
    return contrast, 0.5 * (1 - contrast) + brightness


def normalize(x: torch.Tensor, stats: tuple[tuple[float, ...], tuple[float, ...]]) -> torch.Tensor:
    """(x - mean) / std per channel, in place on `x`."""
    mean = torch.tensor(stats[0], device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(stats[1], device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std)


def light_and_normalize(
    x: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
) -> torch.Tensor:
    """clamp(x * scale + shift, 0, 1), normalised: per-image (B,) scale and shift, in place.

    Normalising is increasing, so the clamp moves after it: one multiply and one add per
    (image, channel), then one scalar clamp per channel (a clamp with tensor bounds is
    several times slower on CPU), instead of five passes over the batch.
    """
    n = x.shape[0]
    mean = torch.tensor(stats[0], device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(stats[1], device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    a = scale.to(x.dtype).view(n, 1, 1, 1) / std  # (B, C, 1, 1)
    b = (shift.to(x.dtype).view(n, 1, 1, 1) - mean) / std
    x = x.mul_(a).add_(b)
    for c, (m, sd) in enumerate(zip(*stats, strict=True)):
        x[:, c].clamp_(-m / sd, (1 - m) / sd)  # [0, 1] in channel c's normalised units
    return x


@dataclass(frozen=True)
class BatchTransform:
    """uint8 (B, 3, H, W) -> float normalised (B, 3, size, size); augmented when `train`."""

    size: int = DATA.size
    aug: AugConfig = AugConfig()
    stats: tuple[tuple[float, ...], tuple[float, ...]] = IMAGENET_STATS
    train: bool = True

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Transform a batch of 0..255 pixels (uint8, or float that is left untouched)."""
        n = x.shape[0]
        if self.train:
            x = x if x.is_floating_point() else x.float()  # 1/255 folds into the scale below
            m = random_matrices(n, self.aug, g, x.device)
            grid = sampling_grid(m.to(x.dtype), self.size)
            x = F.grid_sample(
                x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
            )
            if self.aug.max_lighting > 0:
                scale, shift = lighting_params(n, self.aug.max_lighting, g, x.device)
                return light_and_normalize(x, scale / 255, shift, self.stats)
            return normalize(x.mul_(1 / 255), self.stats)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = resize_batch(x, self.size)
        return normalize(x.mul(1 / 255), self.stats)  # a new tensor: the input stays as it was


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, size, size) antialiased bilinear resize of 0..255 pixels.

    uint8 on a CPU stays uint8: torch's uint8 kernel is about ten times its float one there,
    and it rounds to whole pixel values as the presize step does. Elsewhere it runs in float.
    """
    if x.dtype != torch.uint8 or x.device.type != "cpu":
        x = x if x.is_floating_point() else x.float()
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
