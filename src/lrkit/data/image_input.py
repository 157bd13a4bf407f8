"""One image (a file or a PIL image) -> the model input the validation loader makes of it.

A prediction must see an image as validation did: upright by its EXIF tag, every mode made
RGB (transparency on white), the centre square presized as uint8, then resized to `size` and
normalised by the same batch transform, as the loaders' `Preprocess` record says (the same
record an export keeps; see `lrkit.data.preprocess`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lrkit.data.augment import BatchTransform, normalize
from lrkit.data.decode import load_rgb, pil_rgb
from lrkit.data.preprocess import Preprocess
from lrkit.data.presize import PresizeConfig, presize_image


def centre_square(img: Image.Image) -> np.ndarray:
    """(S, S, 3) uint8 centre square of `img`, S its short side (presizing without a resize)."""
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return np.array(img.crop((left, top, left + side, top + side)))


def image_input(item: str | Path | Image.Image, preprocess: Preprocess | None) -> torch.Tensor:
    """(C, size, size) float input for `item`, made as the validation batches were made.

    Raises ValueError without a `preprocess` record (nothing says how to make the input).
    """
    if preprocess is None:
        raise ValueError(
            "this model was exported without image preprocessing, so predict() takes a tensor; "
            "export with preprocess={'size': ..., 'mean': [...], 'std': [...]} to pass images"
        )
    presize, size = preprocess.presize, preprocess.size
    # the same decode as the loader's, JPEG draft scale included (also for an image fresh
    # from Image.open: one route for a path and the image opened from it)
    image = load_rgb(item, presize) if isinstance(item, (str, Path)) else pil_rgb(item, presize)
    channels = preprocess.channels or len(preprocess.mean or (0, 0, 0))
    if presize:
        pixels = presize_image(image, PresizeConfig(presize), 0.5, 0.5)
    elif size:
        pixels = centre_square(image)
    else:
        pixels = np.array(image)  # no size stored: the image keeps its own
    if channels == 1:
        pixels = np.array(Image.fromarray(pixels).convert("L"))[:, :, None]
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).unsqueeze(0)
    stats = (preprocess.mean or (0.0,) * channels, preprocess.std or (1.0,) * channels)
    if size:
        return BatchTransform(size=size, stats=stats, train=False)(x, torch.Generator())[0]
    return normalize(x.float().div_(255), stats)[0]  # no size stored: scale and normalise
