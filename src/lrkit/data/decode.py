"""Decoding image files to RGB with Pillow, and the quick check that finds unreadable files.

`load_rgb` applies the EXIF orientation, turns every mode into RGB (alpha composited on
white, 16-bit scaled down) and, for JPEGs much larger than needed, asks libjpeg to decode at
a reduced scale (draft mode), which skips most of the decoding work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# EXIF orientation tag value -> the transpose that shows the image upright
ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Junk:
    """A file left out of the data, and why."""

    path: Path
    reason: str


def _scaled_to_8bit(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float greyscale -> 8-bit L, keeping the full range visible."""
    values = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16") or (
        values.max(initial=0) <= 65535 and values.min(initial=0) >= 0
    ):
        top = 255.0 if values.max(initial=0) <= 255 else 65535.0
        scaled = values / top * 255
    else:  # arbitrary range (mode F, signed I): stretch min..max to 0..255
        lo, hi = values.min(), values.max()
        scaled = (values - lo) / max(hi - lo, 1e-12) * 255
    return Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8), "L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparent pixels become white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    ):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _scaled_to_8bit(img).convert("RGB")
    return img.convert("RGB")


def draft_size(width: int, height: int, min_short: int) -> tuple[int, int] | None:
    """Size to request from JPEG draft mode so the short side stays >= `min_short`, or None."""
    scale = min_short / min(width, height)
    if scale > 0.5:  # draft can only halve (or more); not worth it here
        return None
    return math.ceil(width * scale), math.ceil(height * scale)


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright). A JPEG keeps EXIF in `info["exif"]`; looking
    there first skips `getexif()`, which costs a quarter of a decode even when there is none."""
    if img.format == "JPEG" and "exif" not in img.info:
        return 1
    return img.getexif().get(EXIF_ORIENTATION, 1)


def load_rgb(path: str | Path, min_short: int | None = None) -> Image.Image:
    """Decode `path` upright as RGB; JPEGs decode at a reduced scale when `min_short` allows."""
    with Image.open(path) as img:
        if min_short is not None and img.format == "JPEG":
            request = draft_size(*img.size, min_short)
            if request is not None:
                img.draft("RGB", request)
        img.load()
        return upright_rgb(img)


def upright_rgb(img: Image.Image) -> Image.Image:
    """`img` turned upright by its EXIF orientation tag, as RGB (see `to_rgb`)."""
    orientation = exif_orientation(img)
    if orientation in ORIENTATION:
        img = img.transpose(ORIENTATION[orientation])
    return to_rgb(img)


def _tail(path: Path, n: int = 1024) -> bytes:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - n))
        return f.read()


def check_image(path: str | Path, full: bool = False) -> str | None:
    """Why `path` cannot be used as an image (None when it looks fine).

    The quick check reads the header and, for JPEG and PNG, looks for the end marker in the
    last kilobyte, which catches truncated files without decoding; `full=True` decodes.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as img:
            fmt, (width, height) = img.format, img.size
            if width == 0 or height == 0:
                return f"image has zero size {width}x{height}"
            if full:
                img.load()
    except UnidentifiedImageError:
        return "not an image Pillow can read"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return f"unreadable: {err}"
    if not full and fmt == "JPEG" and b"\xff\xd9" not in _tail(path):
        return "truncated JPEG (no end-of-image marker)"
    if not full and fmt == "PNG" and b"IEND" not in _tail(path):
        return "truncated PNG (no IEND chunk)"
    return None
