"""One preprocessing route: predicting on a path and on the PIL image opened from it gives
the same model input, bit for bit (the JPEG reduced-scale decode included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_fixtures import pets_pixels, write_image
from lrkit.data.decode import ImageDecodeError, load_rgb, pil_rgb
from lrkit.data.image_input import image_input
from lrkit.data.preprocess import Preprocess

PREPROCESS = Preprocess(presize=64, size=56, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def photo(path: Path, size=(640, 480), **save) -> Path:
    Image.fromarray(pets_pixels(*size, seed=4)).save(path, "JPEG", quality=88, **save)
    return path


@pytest.mark.parametrize("kind", ["jpeg", "exif-rotated", "png"])
def test_a_path_and_its_opened_image_give_the_same_input(tmp_path: Path, kind: str) -> None:
    if kind == "jpeg":
        path = photo(tmp_path / "photo.jpg")
    elif kind == "png":
        path = tmp_path / "photo.png"
        write_image(path, (640, 480), "RGB", seed=4)
    else:
        path = tmp_path / "sideways.jpg"
        write_image(path, (640, 480), "EXIF6", seed=4)
    from_path = image_input(path, PREPROCESS)
    with Image.open(path) as img:
        from_image = image_input(img, PREPROCESS)
    assert from_path.shape == (3, 56, 56)
    assert torch.equal(from_path, from_image)


def test_the_callers_image_is_left_as_it_was(tmp_path: Path) -> None:
    path = photo(tmp_path / "photo.jpg")
    with Image.open(path) as img:
        pil_rgb(img, 64)
        assert img.size == (640, 480)
        kept = np.asarray(img.convert("RGB"))
    assert np.array_equal(kept, np.asarray(load_rgb(path)))


def test_an_image_already_decoded_is_taken_as_it_is(tmp_path: Path) -> None:
    path = photo(tmp_path / "photo.jpg")
    with Image.open(path) as img:
        decoded = img.convert("RGB")
    assert pil_rgb(decoded, 64).size == (640, 480)
    assert pil_rgb(Image.new("RGB", (7, 5)), 64).size == (7, 5)


def test_a_broken_opened_image_names_its_file(tmp_path: Path) -> None:
    path = photo(tmp_path / "photo.jpg")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut off
    with Image.open(path) as img, pytest.raises(ImageDecodeError, match=r"photo\.jpg"):
        image_input(img, PREPROCESS)
