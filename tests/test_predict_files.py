"""Predicting on image files sees each image exactly as the validation batches did."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lrkit
from data_fixtures import make_pets, write_image
from lrkit.data.image_input import image_input
from lrkit.data.preprocess import Preprocess
from lrkit.vision import image_dataloaders

# every awkward mode of the fixture: L, CMYK, RGBA with alpha, palette, EXIF-rotated JPEG
ODD_FILES = [
    "Abyssinian_3",
    "British_Shorthair_2",
    "american_pit_bull_terrier_2",
    "great_pyrenees_1",
    "great_pyrenees_3",
]


@pytest.fixture(scope="module", params=[False, True], ids=["no-cache", "cache"])
def exported(request, tmp_path_factory):
    """A small vision learner on the Pets-like fixture (with and without the presize cache),
    and the same learner exported and loaded back."""
    root = tmp_path_factory.mktemp("pets")
    make_pets(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixture's junk files are reported
        dls = image_dataloaders(
            root / "images",
            label_re=r"^(.+)_\d+",
            valid_names=ODD_FILES,
            presize=40,
            size=24,
            bs=3,
            num_workers=0,
            cache=root / "cache" if request.param else False,
        )
    torch.manual_seed(0)
    learn = lrkit.vision_learner(dls, "resnet18", pretrained=False, progress=False)
    path = learn.export(root / "model.lrk")
    return learn, lrkit.load_learner(path)


def test_export_keeps_presize_size_and_stats(exported):
    _learn, predictor = exported
    assert predictor.preprocess.presize == 40 and predictor.preprocess.size == 24
    assert predictor.preprocess.mean == pytest.approx([0.485, 0.456, 0.406])


def test_predict_on_a_file_equals_the_model_on_its_validation_batch(exported):
    learn, predictor = exported
    valid = learn.dls.valid
    paths = valid.dataset.paths
    xs = torch.cat([x for x, _y in valid])
    assert sorted(Path(p).stem for p in paths) == sorted(ODD_FILES)
    learn.model.eval()
    with torch.no_grad():
        expected = learn.model(xs).softmax(dim=-1)
    for path, probs in zip(paths, expected, strict=True):
        got = predictor.predict(path)
        torch.testing.assert_close(got.probs, probs, atol=1e-5, rtol=1e-4, msg=str(path))


def test_a_sideways_photo_is_predicted_upright(tmp_path):
    write_image(tmp_path / "upright.png", (48, 32), "RGB", seed=3)
    write_image(tmp_path / "sideways.jpg", (48, 32), "EXIF6", seed=3)
    preprocess = Preprocess(presize=32, size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    upright = image_input(tmp_path / "upright.png", preprocess)
    for item in (tmp_path / "sideways.jpg", Image.open(tmp_path / "sideways.jpg")):
        rotated = image_input(item, preprocess)
        assert rotated.shape == (3, 16, 16)
        assert (rotated - upright).abs().mean() < 0.2  # JPEG noise, not a rotation


def test_one_channel_models_get_grey_input_and_no_size_keeps_the_size(tmp_path):
    pixels = np.zeros((6, 10, 3), np.uint8)
    pixels[..., 1] = 255  # pure green: grey level 150 (0.587 * 255)
    Image.fromarray(pixels).save(tmp_path / "green.png")
    grey = image_input(tmp_path / "green.png", Preprocess(size=4, mean=(0.0,), std=(1.0,)))
    assert grey.shape == (1, 4, 4)
    torch.testing.assert_close(grey, torch.full((1, 4, 4), 150 / 255))
    kept = image_input(tmp_path / "green.png", Preprocess(mean=(0.0,) * 3, std=(1.0,) * 3))
    assert kept.shape == (3, 6, 10)
    with pytest.raises(ValueError, match="without image preprocessing"):
        image_input(tmp_path / "green.png", None)
