"""ClassificationInterpretation and show_results on a model whose outputs the test chooses.

The model reads its logits off the first image row, so every prediction, confusion and loss
below is written down by hand before anything runs.
"""

from __future__ import annotations

import math

import matplotlib.colors as mcolors
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lrkit import ClassificationInterpretation, DataLoaders, Learner, VisionLearner
from lrkit.vision.interpret import RIGHT, WRONG, confusion_counts, pairs_by_count, precision_recall

VOCAB = ["a", "b", "c"]
# (actual, predicted) of 12 items; logits: the predicted class gets 1 + 0.25 * i, others 0
PAIRS = [
    (0, 0),
    (0, 1),
    (0, 1),
    (0, 0),
    (0, 1),
    (1, 1),
    (1, 0),
    (2, 1),
    (2, 1),
    (2, 0),
    (2, 2),
    (2, 1),
]
EXPECTED_CM = np.array([[2, 3, 0], [1, 1, 0], [1, 3, 1]])
STATS = ([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])


class Echo(nn.Module):
    """Logits = the first C pixels of channel 0's first row; one unused parameter to train."""

    def __init__(self, n_classes: int = 3) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 0, : self.n_classes] + 0 * self.unused


def hand_loss(i: int) -> float:
    """Cross-entropy of item i: the predicted logit v, the other two 0."""
    actual, predicted = PAIRS[i]
    v = 1 + 0.25 * i
    if actual == predicted:
        return math.log(1 + 2 * math.exp(-v))
    return math.log(math.exp(v) + 2)


def hand_prob(i: int) -> float:
    """Softmax probability of the predicted class of item i."""
    v = 1 + 0.25 * i
    return math.exp(v) / (math.exp(v) + 2)


def images_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(N, 3, 4, 4) inputs: the logits in channel 0 row 0, item i's grey level elsewhere."""
    n, c = logits.shape
    x = torch.zeros(n, 3, 4, 4)
    x[:, 1:] = torch.linspace(-1.5, 1.5, n).view(n, 1, 1, 1)
    x[:, 0, 0, :c] = logits
    return x


def single_label_learner(loss_fn=None, shuffle_valid: bool = False) -> VisionLearner:
    logits = torch.zeros(len(PAIRS), 3)
    for i, (_, predicted) in enumerate(PAIRS):
        logits[i, predicted] = 1 + 0.25 * i
    y = torch.tensor([actual for actual, _ in PAIRS])
    ds = TensorDataset(images_from_logits(logits), y)
    gen = torch.Generator().manual_seed(3)
    valid = DataLoader(ds, batch_size=5, shuffle=shuffle_valid, generator=gen)
    dls = DataLoaders(DataLoader(ds, batch_size=5), valid, vocab=VOCAB, stats=STATS)
    return VisionLearner(
        Echo(), dls, loss_fn or nn.CrossEntropyLoss(), device="cpu", progress=False
    )


@pytest.fixture
def interp() -> ClassificationInterpretation:
    return ClassificationInterpretation.from_learner(single_label_learner())


def test_confusion_matrix_counts_rows_as_actual(interp):
    cm = interp.confusion_matrix()
    assert isinstance(cm, np.ndarray) and cm.dtype.kind == "i"
    np.testing.assert_array_equal(cm, EXPECTED_CM)


def test_most_confused_largest_first_ties_in_vocab_order(interp):
    assert interp.most_confused() == [("a", "b", 3), ("c", "b", 3), ("b", "a", 1), ("c", "a", 1)]
    assert interp.most_confused(min_val=2) == [("a", "b", 3), ("c", "b", 3)]
    assert interp.most_confused(min_val=4) == []


def test_top_losses_values_and_order(interp):
    expected = sorted(range(len(PAIRS)), key=lambda i: -hand_loss(i))
    losses, idxs = interp.top_losses(4)
    assert idxs.tolist() == expected[:4]
    np.testing.assert_allclose(losses.numpy(), [hand_loss(i) for i in expected[:4]], rtol=1e-5)
    everything = interp.top_losses()
    assert everything.indices.tolist() == expected
    assert interp.top_losses(3, largest=False).indices.tolist() == expected[::-1][:3]
    with pytest.raises(ValueError, match="between 0 and the 12 items"):
        interp.top_losses(13)


def test_per_item_losses_without_a_reduction_setting_match():
    """A plain loss function (no `reduction`) is evaluated item by item, to the same values."""
    interp = ClassificationInterpretation.from_learner(
        single_label_learner(loss_fn=lambda p, t: F.cross_entropy(p, t))
    )
    np.testing.assert_allclose(
        interp.losses.numpy(), [hand_loss(i) for i in range(len(PAIRS))], rtol=1e-5
    )


def test_plot_confusion_matrix_shows_the_counts(interp, tmp_path):
    fig = interp.plot_confusion_matrix(tmp_path / "cm.png")
    assert (tmp_path / "cm.png").stat().st_size > 0
    ax = fig.axes[0]  # the second axes is the colour bar
    np.testing.assert_array_equal(ax.images[0].get_array(), EXPECTED_CM)
    assert [t.get_text() for t in ax.get_xticklabels()] == VOCAB
    assert [t.get_text() for t in ax.get_yticklabels()] == VOCAB
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "actual")
    cells = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts
    }
    assert cells == {(a, p): str(n) for (a, p), n in np.ndenumerate(EXPECTED_CM) if n}
    assert "4 of 12 right" in ax.get_title()


def test_plot_top_losses_titles_and_denormalised_images(interp, tmp_path):
    fig = interp.plot_top_losses(4, tmp_path / "top.png")
    assert (tmp_path / "top.png").stat().st_size > 0
    assert len(fig.axes) == 4  # a 2 x 2 grid
    order = interp.top_losses(4).indices.tolist()
    grey = torch.linspace(-1.5, 1.5, len(PAIRS))
    for ax, i in zip(fig.axes, order, strict=True):
        actual, predicted = PAIRS[i]
        title = ax.get_title()
        assert f"predicted: {VOCAB[predicted]}" in title
        assert f"actual: {VOCAB[actual]}" in title
        assert f"loss {hand_loss(i):.2f}" in title
        assert f"prob {hand_prob(i):.2f}" in title
        pixels = np.asarray(ax.images[0].get_array())  # (H, W, 3) uint8
        level = min(max(float(grey[i]) * 0.25 + 0.5, 0.0), 1.0) * 255
        assert abs(int(pixels[2, 2, 1]) - level) <= 1  # mean/std undone, not min-max scaled


def test_plot_top_losses_refuses_a_shuffled_loader():
    interp = ClassificationInterpretation.from_learner(single_label_learner(shuffle_valid=True))
    with pytest.raises(ValueError, match="shuffled"):
        interp.plot_top_losses(12)


def test_plot_top_losses_refuses_inputs_that_are_not_images():
    x = torch.randn(6, 4)
    ds = TensorDataset(x, torch.tensor([0, 1, 2, 0, 1, 2]))
    dls = DataLoaders(DataLoader(ds, batch_size=3), DataLoader(ds, batch_size=3), vocab=VOCAB)
    learn = Learner(nn.Linear(4, 3), dls, nn.CrossEntropyLoss(), device="cpu", progress=False)
    interp = ClassificationInterpretation.from_learner(learn)
    assert interp.confusion_matrix().sum() == 6  # numbers work for any inputs
    with pytest.raises(ValueError, match=r"only images.*\(3, 4\).*top_losses"):
        interp.plot_top_losses(2)


def test_show_results_titles_and_colours(tmp_path):
    learn = single_label_learner()
    fig = learn.show_results(tmp_path / "results.png", n=5)
    assert (tmp_path / "results.png").stat().st_size > 0
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) == 5  # the first batch holds 5 items
    for ax, (actual, predicted) in zip(titled, PAIRS[:5], strict=True):
        assert ax.get_title() == f"actual: {VOCAB[actual]}\npredicted: {VOCAB[predicted]}"
        colour = RIGHT if actual == predicted else WRONG
        assert mcolors.same_color(ax.title.get_color(), colour)


def test_single_label_per_class_from_the_matrix(interp):
    table = interp.per_class()
    # class b: predicted 7 times, right once; actually b twice
    assert table["b"]["tp"] == 1 and table["b"]["support"] == 2
    assert table["b"]["precision"] == pytest.approx(1 / 7)
    assert table["b"]["recall"] == pytest.approx(1 / 2)
    assert table["c"]["precision"] == 1.0 and table["c"]["recall"] == pytest.approx(1 / 5)


# ----------------------------------------------------------------- multi-label

ML_LOGITS = torch.tensor([[2.0, -2, 0], [2, 2, -2], [-2, 2, 0], [-2, -2, -2]])
ML_TARGETS = torch.tensor([[1.0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 1, 1]])


def multi_label_learner() -> VisionLearner:
    ds = TensorDataset(images_from_logits(ML_LOGITS), ML_TARGETS)
    loader = DataLoader(ds, batch_size=3)
    dls = DataLoaders(loader, loader, vocab=["x", "y", "z"], multi_label=True)
    return VisionLearner(Echo(), dls, nn.BCEWithLogitsLoss(), device="cpu", progress=False)


def test_multi_label_per_class_at_the_learners_threshold():
    learn = multi_label_learner()
    # at 0.5 a logit of 0 (sigmoid 0.5) is not above the threshold
    table = ClassificationInterpretation.from_learner(learn).per_class()
    assert {c: (r["precision"], r["recall"], r["support"]) for c, r in table.items()} == {
        "x": (1.0, 1.0, 2),
        "y": (0.5, 0.5, 2),
        "z": (0.0, 0.0, 2),  # never predicted: 0/0 precision counts as 0
    }
    learn.thresh = 0.2  # what find_threshold sets; now the two 0-logits say "z"
    interp = ClassificationInterpretation.from_learner(learn)
    assert interp.thresh == 0.2
    z = interp.per_class()["z"]
    assert (z["tp"], z["fp"], z["fn"], z["precision"], z["recall"]) == (1, 1, 1, 0.5, 0.5)


def test_multi_label_confusion_matrix_points_to_per_class():
    interp = ClassificationInterpretation.from_learner(multi_label_learner())
    for call in (interp.confusion_matrix, interp.most_confused, interp.plot_confusion_matrix):
        with pytest.raises(ValueError, match=r"per_class\(\)"):
            call()


def test_multi_label_top_losses_and_figures():
    learn = multi_label_learner()
    interp = ClassificationInterpretation.from_learner(learn)
    # per item: mean over classes of BCE-with-logits
    expected = F.binary_cross_entropy_with_logits(ML_LOGITS, ML_TARGETS, reduction="none").mean(1)
    np.testing.assert_allclose(interp.losses.numpy(), expected.numpy(), rtol=1e-6)
    assert interp.top_losses(1).indices.tolist() == [int(expected.argmax())]  # item 3
    fig = interp.plot_top_losses(1)
    assert fig.axes[0].get_title() == "predicted: (none)\nactual: y;z\nloss 1.46, prob max 0.12"
    bars = interp.plot_per_class().axes[0]
    assert "threshold 0.5" in bars.get_title()
    assert [round(p.get_width(), 3) for p in bars.patches] == [1.0, 0.5, 0.0, 1.0, 0.5, 0.0]
    results = learn.show_results(n=2)
    assert [ax.get_title() for ax in results.axes[:2]] == [
        "actual: x;z\npredicted: x",
        "actual: x\npredicted: x;y",
    ]


# ----------------------------------------------------------------- pure functions


def test_pure_functions_on_hand_made_arrays():
    np.testing.assert_array_equal(
        confusion_counts(np.array([0, 0, 1, 2]), np.array([0, 2, 2, 2]), 3),
        [[1, 0, 1], [0, 0, 1], [0, 0, 1]],
    )
    counts = np.array([[5, 1, 2], [2, 0, 0], [0, 2, 9]])
    assert pairs_by_count(counts) == [(0, 2, 2), (1, 0, 2), (2, 1, 2), (0, 1, 1)]
    table = precision_recall(np.array([[1, 0], [1, 0], [0, 0]]), np.array([[1, 1], [0, 0], [0, 1]]))
    assert table["precision"].tolist() == [0.5, 0.0] and table["recall"].tolist() == [1.0, 0.0]
    assert table["f1"].tolist() == pytest.approx([2 / 3, 0.0])


def test_top_losses_ties_keep_the_item_order():
    losses = torch.tensor([1.0, 2.0, 2.0, 1.0, 2.0, 0.5])
    preds = torch.zeros(6, 2)
    interp = ClassificationInterpretation(preds, torch.zeros(6, dtype=torch.long), losses)
    assert interp.top_losses(4).indices.tolist() == [1, 2, 4, 0]
    assert interp.top_losses(3, largest=False).indices.tolist() == [5, 0, 3]
    assert interp.vocab == ["0", "1"]  # no vocab: class indices as names
