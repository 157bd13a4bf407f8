"""Multi-label: CSV labels -> multi-hot targets, BCE, metrics, threshold sweep, predict."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lrkit
from lrkit import accuracy_multi, f1_multi, vision_learner
from lrkit.vision.thresholds import sweep_thresholds

COLOURS = ("red", "green", "blue")


def make_colour_folder(root, n_per_combo: int = 3, size: int = 32):
    """Images whose strong channels are their labels ("red green"), a CSV naming them."""
    rng = np.random.default_rng(0)
    rows = [("fname", "labels", "is_valid")]
    combos = [c for r in (1, 2) for c in itertools.combinations(range(3), r)]
    for index, (combo, copy) in enumerate(itertools.product(combos, range(n_per_combo))):
        level = np.where(np.isin(np.arange(3), combo), 210, 40)
        pixels = level + rng.integers(-30, 30, size=(size, size, 3))
        name = f"img_{index}.png"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB").save(root / name)
        labels = " ".join(COLOURS[c] for c in combo)
        rows.append((name, labels, "1" if copy == 0 else "0"))
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root / "labels.csv"


@pytest.fixture(scope="module")
def colour_dls(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    table = make_colour_folder(root)
    return lrkit.vision.csv_dataloaders(
        root,
        table,
        multi_label=True,
        valid_col="is_valid",
        presize=32,
        size=32,
        bs=6,
        num_workers=0,
    )


def test_sweep_picks_the_middle_of_the_best_thresholds():
    probs = torch.tensor([[0.7, 0.2], [0.3, 0.6], [0.8, 0.65]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    grid = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    sweep = sweep_thresholds(probs, targets, grid, sigmoid=False)
    # all 6 decisions are right for 0.3 <= t < 0.6: the middle of 0.3, 0.4, 0.5 is 0.4
    assert sweep.best == pytest.approx(0.4) and sweep.best_score == 1.0
    assert sweep.scores[0] == pytest.approx(4 / 6)  # t=0.1: 0.2 and 0.3 wrongly turn on
    assert sweep.metric == "accuracy_multi"
    f1 = sweep_thresholds(probs, targets, grid, metric=f1_multi, sigmoid=False)
    assert f1.metric == "f1_multi" and f1.best_score == 1.0


def test_sweep_refuses_bad_inputs_and_plots(tmp_path):
    with pytest.raises(ValueError, match=r"same shape \(N, C\)"):
        sweep_thresholds(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"values in \(0, 1\)"):
        sweep_thresholds(torch.zeros(3, 2), torch.zeros(3, 2), [0.5, 1.0])
    sweep = sweep_thresholds(torch.randn(6, 3), (torch.randn(6, 3) > 0).float())
    assert len(sweep.threshs) == 19 and sweep.threshs[0] == pytest.approx(0.05)
    figure = sweep.plot(tmp_path / "sweep.png")
    assert isinstance(figure, Figure)
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_labels_become_multi_hot_targets(colour_dls):
    assert colour_dls.multi_label and colour_dls.vocab == ["blue", "green", "red"]
    _, y = next(iter(colour_dls.valid))
    assert y.dtype == torch.float32 and y.shape[1] == 3
    assert set(y.sum(1).tolist()) <= {1.0, 2.0}


def test_multi_label_end_to_end(colour_dls, tmp_path):
    torch.manual_seed(0)
    learn = vision_learner(
        colour_dls,
        "resnet_small",
        pretrained=False,
        metrics=[accuracy_multi, f1_multi],
        device="cpu",
        progress=False,
    )
    assert isinstance(learn.loss_fn, nn.BCEWithLogitsLoss)
    before = learn.validate()
    learn.fit_one_cycle(4, 1e-2)
    after = learn.validate()
    # the colours are learnable: 4 short epochs roughly halve the loss and lift the accuracy
    assert after["valid_loss"] < 0.6 * before["valid_loss"]
    assert after["accuracy_multi"] > before["accuracy_multi"]
    assert set(after) == {"valid_loss", "accuracy_multi", "f1_multi"}

    sweep = learn.find_threshold(path=tmp_path / "thresh.png")
    assert learn.thresh == sweep.best
    assert sweep.best_score == pytest.approx(float(sweep.scores.max()))
    assert sweep.best_score >= after["accuracy_multi"] - 1e-6  # 0.5 is one of the candidates
    assert (tmp_path / "thresh.png").exists()

    image = colour_dls.valid.dataset.paths[0]  # an image file
    pred = learn.predict(image)
    above = [colour_dls.vocab[i] for i, p in enumerate(pred.probs.tolist()) if p > learn.thresh]
    assert pred.label == above and pred.index == [colour_dls.vocab.index(v) for v in above]
    learn.thresh = float(pred.probs.min()) / 2  # every label clears it
    assert learn.predict(image).label == colour_dls.vocab
    learn.thresh = float(pred.probs.max())  # none is strictly above it
    assert learn.predict(image).label == []
    learn.thresh = sweep.best

    path = learn.export(tmp_path / "colours.pt")
    predictor = lrkit.load_learner(path)
    assert predictor.thresh == sweep.best and predictor.multi_label
    again = predictor.predict(image)
    assert again.label == pred.label
    torch.testing.assert_close(again.probs, pred.probs, rtol=1e-4, atol=1e-4)


def test_find_threshold_is_for_multi_label_only():
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    loader = DataLoader(TensorDataset(x, y), batch_size=2)
    dls = lrkit.DataLoaders(loader, loader, vocab=["a", "b"])
    learn = vision_learner(dls, "resnet_small", pretrained=False, device="cpu", progress=False)
    with pytest.raises(ValueError, match="multi-label"):
        learn.find_threshold()
