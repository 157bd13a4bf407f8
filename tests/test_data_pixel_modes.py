"""Every Pillow mode becomes RGB uint8 by a fixed, documented rule (the table in `to_rgb`)
that never depends on the image's content: float images in [0, 1], 16- and 32-bit integers,
alpha (straight and premultiplied), palettes, and the colour spaces."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lrkit.data.decode import load_rgb, to_rgb


def pixels(mode: str, values: list, **info) -> Image.Image:
    """A 1-row image of `mode` holding `values` (one per pixel)."""
    img = Image.new(mode, (len(values), 1))
    for x, value in enumerate(values):
        img.putpixel((x, 0), value)
    img.info.update(info)
    return img


def rgb(img: Image.Image) -> list[tuple[int, int, int]]:
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == img.size
    return [tuple(int(c) for c in p) for p in np.asarray(out)[0]]


def raw(mode: str, fmt: str, values: list) -> Image.Image:
    """A 1-row image of a raw integer `mode` (I;16B etc.) from `values` packed with `fmt`."""
    packed = struct.pack(fmt[0] + fmt[1:] * len(values), *values)  # "<H" -> "<HHH..."
    return Image.frombytes(mode, (len(values), 1), packed)


def palette_image(mode: str, indices: list) -> Image.Image:
    img = pixels(mode, indices)
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    return img


CASES = {
    "1": (pixels("1", [0, 1]), [(0, 0, 0), (255, 255, 255)]),
    "L": (pixels("L", [0, 77, 255]), [(0, 0, 0), (77, 77, 77), (255, 255, 255)]),
    "P": (palette_image("P", [0, 1]), [(10, 20, 30), (200, 100, 50)]),
    "P+tRNS": (palette_image("P", [0, 1]), [(255, 255, 255), (200, 100, 50)]),
    "PA": (palette_image("PA", [(0, 255), (1, 0)]), [(10, 20, 30), (255, 255, 255)]),
    "LA": (pixels("LA", [(100, 255), (100, 0)]), [(100, 100, 100), (255, 255, 255)]),
    "La": (pixels("La", [(50, 128), (0, 0)]), [(177, 177, 177), (255, 255, 255)]),
    "L+tRNS": (pixels("L", [7, 9], transparency=7), [(255, 255, 255), (9, 9, 9)]),
    "RGB+tRNS": (
        pixels("RGB", [(1, 2, 3), (4, 5, 6)], transparency=(1, 2, 3)),
        [(255, 255, 255), (4, 5, 6)],
    ),
    "RGBA": (pixels("RGBA", [(10, 20, 30, 255), (10, 20, 30, 0)]), [(10, 20, 30), (255,) * 3]),
    "RGBa": (pixels("RGBa", [(50, 20, 10, 128), (0, 0, 0, 0)]), [(177, 147, 137), (255,) * 3]),
    "RGBX": (pixels("RGBX", [(1, 2, 3, 0), (4, 5, 6, 255)]), [(1, 2, 3), (4, 5, 6)]),
    "CMYK": (
        pixels("CMYK", [(0, 255, 255, 0), (0, 0, 0, 255), (0, 0, 0, 0)]),
        [(255, 0, 0), (0, 0, 0), (255, 255, 255)],
    ),
    "YCbCr": (pixels("YCbCr", [(255, 128, 128), (0, 128, 128)]), [(255,) * 3, (0, 0, 0)]),
    "HSV": (pixels("HSV", [(0, 255, 255), (0, 0, 255)]), [(255, 0, 0), (255, 255, 255)]),
    "I;16": (
        raw("I;16", "<H", [0, 257, 32896, 65535]),
        [(0,) * 3, (1,) * 3, (128,) * 3, (255,) * 3],
    ),
    "I;16L": (raw("I;16L", "<H", [257, 65535]), [(1,) * 3, (255,) * 3]),
    "I;16B": (raw("I;16B", ">H", [257, 65535]), [(1,) * 3, (255,) * 3]),
    "I;16N": (raw("I;16N", "=H", [257, 65535]), [(1,) * 3, (255,) * 3]),
    "I": (pixels("I", [-5, 257, 65535, 70000]), [(0,) * 3, (1,) * 3, (255,) * 3, (255,) * 3]),
    "F": (
        pixels("F", [0.0, 0.5, 1.0, 2.0, -1.0, float("nan")]),
        [(0,) * 3, (128,) * 3, (255,) * 3, (255,) * 3, (0,) * 3, (0,) * 3],
    ),
}
CASES["P+tRNS"][0].info["transparency"] = 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_mode_has_its_documented_rgb(name: str) -> None:
    img, expected = CASES[name]
    assert rgb(img) == expected


def test_lab_white_and_grey() -> None:
    white, grey = rgb(pixels("LAB", [(255, 128, 128), (128, 128, 128)]))
    assert min(white) >= 250 and max(abs(c - grey[0]) for c in grey) <= 2 and 100 < grey[0] < 140


def test_every_mode_pillow_lists_is_covered() -> None:
    covered = {name.split("+")[0] for name in CASES} | {"LAB", "RGB"}
    assert set(Image.MODES) <= covered


@pytest.mark.parametrize(
    ("mode", "value", "brighter"), [("F", 0.5, 300.0), ("I", 200, 300), ("I;16", 200, 300)]
)
def test_a_value_maps_the_same_whatever_else_is_in_the_image(mode, value, brighter) -> None:
    fmt = "<H" if mode == "I;16" else None
    images = [
        raw(mode, fmt, [value, other]) if fmt else pixels(mode, [value, other])
        for other in (value, brighter)
    ]
    assert rgb(images[0])[0] == rgb(images[1])[0]


def test_float_tiff_in_0_1_keeps_its_brightness(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    Image.fromarray(values).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    assert np.asarray(load_rgb(tmp_path / "f.tif"))[0, :, 0].tolist() == [0, 64, 128, 255]


def test_16_bit_files_scale_by_the_bit_depth(tmp_path: Path) -> None:
    values = np.array([[0, 257, 65535]], dtype=np.uint16)
    for name, array in (("a.png", values), ("a.pgm", values), ("b.tif", values.astype(np.int32))):
        Image.fromarray(array).save(tmp_path / name)
        assert np.asarray(load_rgb(tmp_path / name))[0, :, 0].tolist() == [0, 1, 255], name
