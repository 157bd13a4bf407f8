"""`lrkit predict` says what a path is when it is not a file (a folder, a FIFO, a missing
file), for the model and for each image, and names each bad file once per line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import lrkit
from data_fixtures import write_image
from lrkit.cli import main
from lrkit.vision import image_dataloaders


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    for k, name in enumerate(f"{c}_{i}.jpg" for c in ("cat", "dog") for i in range(2)):
        write_image(folder / name, (48, 40), "RGB", seed=k)
    dls = image_dataloaders(folder, presize=32, size=16, bs=2, num_workers=0, valid_pct=0.5)
    torch.manual_seed(0)
    learn = lrkit.vision_learner(dls, "resnet_small", pretrained=False, progress=False)
    return learn.export(folder / "model.lrk")


def test_each_kind_of_non_file_is_named_for_what_it_is(model_file, tmp_path, capsys):
    write_image(tmp_path / "good.jpg", (48, 40), "RGB", seed=9)
    good = str(tmp_path / "good.jpg")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    link = tmp_path / "link.png"
    link.symlink_to(tmp_path / "gone-target.png")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    bad = {
        str(folder): "is a directory, not an image file",
        str(fifo): "is a named pipe (FIFO), not an image file",
        str(tmp_path / "missing.png"): "does not exist",
        str(link): "is a link to a missing file",
        str(text): "cannot be decoded",
    }
    assert main(["predict", str(model_file), good, *bad]) == 1  # returns: the FIFO is not opened
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(bad) + 1
    for line, (name, reason) in zip(err[:-1], bad.items(), strict=True):
        assert line.startswith(f"lrkit predict: error: {name}: {reason}"), line
        assert line.count(name) == 1, line  # the file named once


@pytest.mark.parametrize("kind", ["folder", "fifo", "missing"])
def test_a_model_path_that_is_not_a_file_is_one_line_saying_what_it_is(kind, tmp_path, capsys):
    model = tmp_path / "model.lrk"
    if kind == "folder":
        model.mkdir()
    elif kind == "fifo":
        os.mkfifo(model)
    said = {
        "folder": "is a directory, not a model file",
        "fifo": "is a named pipe (FIFO), not a model file",
        "missing": "does not exist",
    }[kind]
    assert main(["predict", str(model), "a.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lrkit predict: error: model file {model} {said}; export one with lrkit train"]
