"""Decoding image files to RGB with Pillow, and the quick check that finds unreadable files.

`load_rgb` applies the EXIF orientation, turns every mode into RGB by a fixed rule per mode
(the table in `to_rgb`: alpha composited on white, 16-bit and float by fixed scales) and,
for JPEGs much larger than needed, asks libjpeg to decode at a reduced scale (draft mode),
which skips most of the decoding work.
"""

from __future__ import annotations

import io
import math
import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, JpegImagePlugin, UnidentifiedImageError

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


class ImageDecodeError(ValueError):
    """An image file that cannot be decoded; `path` and `reason` say which and why.

    Made from one argument (the whole message), as a DataLoader does when it re-raises a
    worker's error in the main process, it keeps its type: still a ValueError naming the file.
    """

    def __init__(self, path: object, reason: str | None = None) -> None:
        self.path, self.reason = path, reason
        if reason is None:
            super().__init__(path)
        else:
            super().__init__(f"{path}: cannot be decoded ({reason}); remove or replace the file")


def _scaled_to_8bit(img: Image.Image) -> Image.Image:
    """I;16*, I or F greyscale -> 8-bit L by a fixed scale per mode (see `to_rgb`); NaN -> 0."""
    values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
    scale = 255.0 if img.mode == "F" else 255.0 / 65535.0
    return Image.fromarray(np.floor(np.clip(values * scale + 0.5, 0, 255)).astype(np.uint8), "L")


def _premultiplied_on_white(img: Image.Image) -> Image.Image:
    """La / RGBa (colour already multiplied by alpha) composited on white: c + 255 - a."""
    values = np.asarray(img, dtype=np.int32)  # (H, W, bands), alpha last
    colour, alpha = values[..., :-1], values[..., -1:]
    out = np.clip(colour + 255 - alpha, 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(np.broadcast_to(out, (*out.shape[:2], 3))), "RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB uint8, by a fixed rule per mode that never looks at the content.

    ====================  ===================================================================
    mode                  RGB made of it
    ====================  ===================================================================
    RGB                   as is (a tRNS key colour, if the file has one, becomes white)
    RGBX                  the padding band dropped
    L, 1                  grey g -> (g, g, g); mode 1: 0 -> 0, 1 -> 255
    P                     the palette's colours
    RGBA, LA, PA          alpha composited on white
    P, L, RGB + tRNS key  the transparent colour / index becomes white
    RGBa, La              premultiplied alpha composited on white: c + 255 - a (clipped)
    CMYK                  Pillow's profile-free rule: R = 255 - min(255, C + K), G, B alike
    YCbCr                 JPEG's full-range ITU-R BT.601 transform
    LAB                   CIE L*a*b* to sRGB (Pillow's conversion)
    HSV                   hue, saturation, value to RGB
    I;16, I;16L/B/N       16-bit: v * 255 / 65535, rounded
    I (32-bit signed)     taken as 16-bit data (what PNG, PGM and TIFF hand over as I):
                          v * 255 / 65535, rounded, clipped to 0..255
    F (32-bit float)      values in [0, 1]: v * 255, rounded, clipped to 0..255; NaN -> 0
    ====================  ===================================================================

    Greyscale results are replicated to three equal channels.
    """
    mode = img.mode
    if mode in ("RGBa", "La"):
        return _premultiplied_on_white(img)
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _scaled_to_8bit(img).convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode == "RGB":
        return img
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


def _starts_as_jpeg(source: str | Path | io.BytesIO) -> bool:
    if isinstance(source, io.BytesIO):
        return source.getvalue()[:3] == b"\xff\xd8\xff"
    with open(source, "rb") as f:
        return f.read(3) == b"\xff\xd8\xff"


def _check_pixel_limit(img: Image.Image) -> None:
    """Refuse what Pillow would refuse as a decompression bomb, counting the pixels decoded."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and img.width * img.height > 2 * limit:
        raise Image.DecompressionBombError(
            f"{img.width}x{img.height} pixels even at the smallest decode scale, over "
            f"Pillow's decompression-bomb limit of {2 * limit} (Image.MAX_IMAGE_PIXELS x 2)"
        )


def open_image(path: str | Path | io.BytesIO, min_short: int | None = None) -> Image.Image:
    """`path` opened lazily; a JPEG set to decode at a reduced scale (draft) when `min_short`
    allows, so that its short side stays >= `min_short`.

    Pillow refuses images over its decompression-bomb limit (twice Image.MAX_IMAGE_PIXELS) by
    their full size. A baseline JPEG that the reduced-scale decode brings under the limit is
    opened anyway (libjpeg then decodes only the reduced pixels, row by row); progressive
    JPEGs are not, as libjpeg keeps their full-size coefficients in memory whatever the scale.
    Raises what Image.open raises (DecompressionBombError for what stays over the limit).
    """
    try:
        img = Image.open(path)
    except Image.DecompressionBombError:
        if min_short is None or not _starts_as_jpeg(path):
            raise
        if isinstance(path, io.BytesIO):
            path.seek(0)
        img = JpegImagePlugin.JpegImageFile(path)  # the same decoder, minus open's size check
        try:
            if "progressive" in img.info or "progression" in img.info:
                raise Image.DecompressionBombError(
                    f"progressive JPEG of {img.width}x{img.height} pixels, over Pillow's "
                    "decompression-bomb limit; a reduced-scale decode of a progressive JPEG "
                    "still holds every pixel's coefficients in memory"
                )
            _set_draft(img, min_short)
            _check_pixel_limit(img)
        except BaseException:
            img.close()
            raise
        return img
    if min_short is not None and img.format == "JPEG":
        _set_draft(img, min_short)
    return img


def _set_draft(img: Image.Image, min_short: int) -> None:
    request = draft_size(*img.size, min_short)
    if request is not None:
        img.draft("RGB", request)


def load_rgb(path: str | Path, min_short: int | None = None) -> Image.Image:
    """Decode `path` upright as RGB; JPEGs decode at a reduced scale when `min_short` allows
    (see `open_image`).

    Raises ImageDecodeError (a ValueError naming the file) for anything that cannot be
    decoded whole; no stand-in image is ever made.
    """
    return _decode(path, min_short, path)


def _decode(source: str | Path | io.BytesIO, min_short: int | None, name: object) -> Image.Image:
    try:
        with open_image(source, min_short) as img:
            img.load()
            return upright_rgb(img)
    except UnidentifiedImageError:
        raise ImageDecodeError(name, "not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise ImageDecodeError(name, str(err) or type(err).__name__) from err


def pil_rgb(img: Image.Image, min_short: int | None = None) -> Image.Image:
    """A PIL image upright as RGB, decoded as `load_rgb` decodes its file where that can be.

    An image fresh from Image.open (not yet decoded) is decoded from its file's bytes exactly
    as `load_rgb(path, min_short)` would, reduced JPEG scale included, so a path and the image
    opened from it give the same pixels; `img` itself is left as it was. An image already
    decoded or made in memory is taken at its own resolution (see `upright_rgb`).
    """
    fp = getattr(img, "fp", None)
    if not getattr(img, "tile", None) or fp is None:
        return upright_rgb(img)
    position = fp.tell()
    try:
        fp.seek(0)  # Image.open reads a file object from its start too
        data = fp.read()
    finally:
        fp.seek(position)
    return _decode(io.BytesIO(data), min_short, getattr(img, "filename", "") or "<PIL image>")


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


def _jpeg_has_end(data: bytes | mmap.mmap) -> bool:
    """Whether the JPEG's end-of-image marker follows its image data, wherever it is.

    The header segments are skipped by their lengths first: an EXIF thumbnail there carries
    an end marker of its own, which must not make a cut-off photo look complete.
    """
    pos = 2  # after the start-of-image marker
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
        elif marker == 0xDA:  # start of scan: the image data, then the end marker
            break
        elif marker == 0xD9:
            return True
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return data.find(b"\xff\xd9", pos) >= 0


def _png_has_end(data: bytes | mmap.mmap) -> bool:
    """Whether the PNG's chunks, followed by their lengths, reach an IEND chunk in the file."""
    pos = 8  # after the signature
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        if kind == b"IEND":
            return True
        pos += 12 + length  # length, type, data, crc
    return False


def _has_end(path: Path, fmt: str) -> bool:
    """Whether a JPEG or PNG ends properly. The last kilobyte settles almost every file; the
    few that carry bytes after the end (a motion photo's video, padding) are memory-mapped
    and walked."""
    if (b"\xff\xd9" if fmt == "JPEG" else b"IEND") in _tail(path):
        return True
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _jpeg_has_end(data) if fmt == "JPEG" else _png_has_end(data)


def check_image(path: str | Path, full: bool = False, min_short: int | None = None) -> str | None:
    """Why `path` cannot be used as an image (None when it looks fine).

    The quick check reads the header and, for JPEG and PNG, looks for the end marker (in the
    last kilobyte, else after the image data, as files may carry trailing bytes), which catches
    truncated files without decoding. `full=True` then decodes the file exactly as training
    will (`load_rgb(path, min_short)`), which finds corrupted image data too.
    """
    path = Path(path)
    try:
        if not path.exists():  # follows links: a dangling one lands here
            if path.is_symlink():
                return f"broken link: its target {path.readlink()} does not exist"
            return "file not found"
        if not path.is_file():  # a folder, pipe or device: opening a pipe would hang
            return "not a regular file (a folder, pipe or device)"
        if path.stat().st_size == 0:
            return "empty file"
        with open_image(path, min_short) as img:
            fmt, (width, height) = img.format, img.size
            if width == 0 or height == 0:
                return f"image has zero size {width}x{height}"
        if fmt == "JPEG" and not _has_end(path, fmt):
            return "truncated JPEG (no end-of-image marker)"
        if fmt == "PNG" and not _has_end(path, fmt):
            return "truncated PNG (no IEND chunk)"
        if full:
            load_rgb(path, min_short)
    except ImageDecodeError as err:
        return f"decode failed: {err.reason}"
    except UnidentifiedImageError:
        return "not an image Pillow can read"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return f"unreadable: {err}"
    return None
