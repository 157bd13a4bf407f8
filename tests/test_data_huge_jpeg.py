"""Huge photos: a JPEG over Pillow's decompression-bomb limit by its full size, whose
reduced-scale (draft) decode is small, is decoded at that scale; what stays refused is a
reported junk file in training and one error line naming it from `lrkit predict`.

The limit is lowered for the test (Image.MAX_IMAGE_PIXELS only) so that a 1600x1200 photo
plays the part of a 16320x12240 one."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lrkit
from data_fixtures import pets_pixels, write_image
from lrkit.cli import main
from lrkit.data.decode import ImageDecodeError, check_image, load_rgb
from lrkit.vision import image_dataloaders

LIMIT = 400_000  # Pillow refuses above 2 x LIMIT = 800k pixels; the photo has 1.92M
SIZE = (1600, 1200)


def huge_jpeg(path: Path, progressive: bool = False) -> Path:
    img = Image.fromarray(np.kron(pets_pixels(200, 150, 3), np.ones((8, 8, 1), np.uint8)))
    assert img.size == SIZE
    img.save(path, "JPEG", quality=85, progressive=progressive)
    return path


@pytest.fixture
def low_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", LIMIT)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small exported classifier (presize 64) trained on nothing in particular."""
    folder = tmp_path_factory.mktemp("data")
    for k, name in enumerate(f"{c}_{i}.jpg" for c in ("cat", "dog") for i in range(2)):
        write_image(folder / name, (80, 60), "RGB", seed=k)
    dls = image_dataloaders(folder, presize=64, size=32, bs=2, num_workers=0, valid_pct=0.5)
    torch.manual_seed(0)
    learn = lrkit.vision_learner(dls, "resnet18", pretrained=False, progress=False)
    return learn.export(folder / "model.lrk")


def test_a_huge_baseline_jpeg_decodes_at_reduced_scale(tmp_path: Path, low_limit) -> None:
    path = huge_jpeg(tmp_path / "huge.jpg")
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)  # Pillow alone refuses it by its full size
    img = load_rgb(path, 64)
    assert min(img.size) >= 64 and img.width * img.height <= 2 * LIMIT
    assert check_image(path, full=True, min_short=64) is None
    with pytest.raises(ImageDecodeError, match=r"huge\.jpg: cannot be decoded .*decompression"):
        load_rgb(path)  # a full-size decode stays refused
    assert "decompression" in check_image(path, full=True)


def test_the_reduced_decode_equals_the_one_without_a_limit(tmp_path: Path) -> None:
    path = huge_jpeg(tmp_path / "huge.jpg")
    free = np.asarray(load_rgb(path, 64))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Image, "MAX_IMAGE_PIXELS", LIMIT)
        limited = np.asarray(load_rgb(path, 64))
    assert np.array_equal(free, limited)


def test_refused_huge_files_are_junk_in_training(tmp_path: Path, low_limit) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    for k, name in enumerate(f"{c}_{i}.jpg" for c in ("cat", "dog") for i in range(2)):
        write_image(folder / name, (80, 60), "RGB", seed=k)
    huge_jpeg(folder / "cat_8.jpg")
    huge_jpeg(folder / "dog_8.jpg", progressive=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dls = image_dataloaders(folder, presize=64, size=32, bs=2, num_workers=0, valid_pct=0.5)
    assert [j.path.name for j in dls.junk] == ["dog_8.jpg"]
    assert "progressive JPEG of 1600x1200 pixels" in dls.junk[0].reason
    assert len(caught) == 1 and "dog_8.jpg: " in str(caught[0].message)
    assert dls.n_train + dls.n_valid == 5
    x, _ = next(iter(dls.train))
    assert x.shape[1:] == (3, 32, 32)


def test_predict_on_huge_files_predicts_or_says_one_line(
    tmp_path: Path, low_limit, model_file: Path, capsys: pytest.CaptureFixture
) -> None:
    ok = huge_jpeg(tmp_path / "huge.jpg")
    refused = huge_jpeg(tmp_path / "huge_progressive.jpg", progressive=True)
    assert main(["predict", str(model_file), str(ok)]) == 0
    assert f"{ok}\t" in capsys.readouterr().out  # FILE<TAB>label (probability)
    assert main(["predict", str(model_file), str(refused)]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if str(refused) in line]
    assert len(lines) == 1 and f"{refused}: cannot be decoded (progressive JPEG" in lines[0]
