"""The preprocessing record: made once with the loaders, kept by every export, checked."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import lrkit
from data_fixtures import write_image
from lrkit import DataLoaders, Learner, register_model
from lrkit.data.fashion import array_dataloaders
from lrkit.data.preprocess import Preprocess
from lrkit.vision import image_dataloaders

STATS = ((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))


@register_model
class MeanPool(nn.Module):
    """(B, 3, H, W) -> (B, 2): any image size goes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def image_dls(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for i in range(4):
        for name in ("cat", "dog"):
            write_image(folder / f"{name}_{i}.png", (30 + i, 20), "RGB", seed=i)
    return image_dataloaders(
        folder, presize=24, size=16, bs=2, num_workers=0, stats=STATS, full_check=False
    )


def test_the_image_pipeline_records_how_it_makes_an_input(image_dls):
    assert image_dls.preprocess == Preprocess(presize=24, size=16, mean=STATS[0], std=STATS[1])
    assert image_dls.stats == STATS
    x, _ = next(iter(image_dls.valid))
    assert tuple(x.shape[1:]) == (3, 16, 16)  # the record says what the loader does


def test_in_memory_loaders_record_their_size():
    x = np.zeros((4, 28, 28), np.uint8)
    y = np.array([0, 1, 0, 1])
    dls = array_dataloaders((x, y), (x, y), ["a", "b"], bs=2, channels=3, size=32)
    assert dls.preprocess.size == 32 and dls.preprocess.presize is None
    assert len(dls.preprocess.mean) == 3


def test_a_plain_learner_exports_the_whole_record(image_dls, tmp_path):
    learn = Learner(MeanPool(), image_dls, nn.CrossEntropyLoss(), device="cpu", progress=False)
    path = learn.export(tmp_path / "model.lrk")
    assert lrkit.load_learner(path).preprocess == image_dls.preprocess


def test_new_stats_replace_the_records_and_reach_the_export(image_dls, tmp_path):
    dls = DataLoaders(
        image_dls.train, image_dls.valid, image_dls.vocab, preprocess=image_dls.preprocess
    )
    dls.stats = ((0.5,) * 3, (0.5,) * 3)  # what vision_learner does for pretrained weights
    assert dls.preprocess == dataclasses.replace(
        image_dls.preprocess, mean=(0.5,) * 3, std=(0.5,) * 3
    )
    learn = Learner(MeanPool(), dls, nn.CrossEntropyLoss(), device="cpu", progress=False)
    loaded = lrkit.load_learner(learn.export(tmp_path / "model.lrk"))
    assert loaded.preprocess.stats == ((0.5,) * 3, (0.5,) * 3) and loaded.preprocess.size == 16


def test_plain_loaders_know_nothing_until_told():
    loader = [(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))]
    assert DataLoaders(loader).preprocess is None and DataLoaders(loader).stats is None
    dls = DataLoaders(loader, stats=([0.1], [0.2]))
    assert dls.preprocess == Preprocess(mean=(0.1,), std=(0.2,))


def test_the_record_is_frozen_and_checked():
    record = Preprocess(size=16, mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])
    assert record.mean == (0.5, 0.5, 0.5)  # stored as a tuple whatever came in
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.size = 32
    with pytest.raises(ValueError, match=r"^bad image preprocessing: std should hold finite"):
        Preprocess(mean=(0.5,), std=(0.0,))
    with pytest.raises(ValueError, match=r"size should be a whole number of pixels"):
        Preprocess(size=0)
    with pytest.raises(ValueError, match=r"std has 1 values for 3-channel images"):
        Preprocess(mean=(0.5, 0.5, 0.5), std=(0.2,))
    with pytest.raises(ValueError, match="unknown preprocess keys"):
        Preprocess.from_dict({"size": 16, "resize": "nearest"})
    assert Preprocess.from_dict(record.to_dict()) == record


def test_stats_that_disagree_with_the_record_are_refused():
    loader = [(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))]
    with pytest.raises(ValueError, match="disagree"):
        DataLoaders(loader, stats=([0.1], [0.2]), preprocess=Preprocess(mean=(0.3,), std=(0.2,)))
