"""Metrics against hand-computed values."""

from __future__ import annotations

import functools

import pytest
import torch

from lrkit.metrics import (
    accuracy,
    accuracy_multi,
    error_rate,
    f1_multi,
    fbeta_multi,
    metric_name,
    top_k_accuracy,
)

LOGITS = torch.tensor(
    [
        [0.1, 0.7, 0.2],  # argmax 1
        [0.8, 0.15, 0.05],  # argmax 0
        [0.3, 0.25, 0.45],  # argmax 2
        [0.5, 0.4, 0.1],  # argmax 0
    ]
)
TARGET = torch.tensor([1, 0, 0, 1])

# multi-label, already probabilities (sigmoid=False)
PROBS = torch.tensor([[0.9, 0.6, 0.1], [0.2, 0.4, 0.8], [0.1, 0.2, 0.3]])
TRUTH = torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 0]])


def test_accuracy_and_error_rate():
    assert accuracy(LOGITS, TARGET).item() == pytest.approx(0.5)
    assert error_rate(LOGITS, TARGET).item() == pytest.approx(0.5)


def test_top_k_accuracy():
    # top-2 sets: {1, 2}, {0, 1}, {2, 0}, {0, 1}; targets 2, 0, 1, 1 -> hit, hit, miss, hit
    assert top_k_accuracy(LOGITS, TARGET, k=1).item() == pytest.approx(0.5)
    assert top_k_accuracy(LOGITS, torch.tensor([2, 0, 1, 1]), k=2).item() == pytest.approx(0.75)
    assert top_k_accuracy(LOGITS, TARGET, k=10).item() == pytest.approx(1.0)


def test_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match="accuracy_multi"):
        accuracy(PROBS, TRUTH)
    with pytest.raises(ValueError, match="same shape"):
        accuracy_multi(LOGITS, TARGET)


def test_accuracy_multi():
    # right decisions: 2 + 2 + 3 of 9
    assert accuracy_multi(PROBS, TRUTH, sigmoid=False).item() == pytest.approx(7 / 9)
    logits = torch.logit(PROBS)
    assert accuracy_multi(logits, TRUTH).item() == pytest.approx(7 / 9, abs=1e-6)
    # thresh 0.05 on probabilities: everything predicted positive, 3 of 9 right
    assert accuracy_multi(PROBS, TRUTH, thresh=0.05, sigmoid=False).item() == pytest.approx(3 / 9)


def test_fbeta_multi_averages():
    # per item F1: 2/3, 2/3, 0 (no positives predicted or true counts as 0)
    assert f1_multi(PROBS, TRUTH, sigmoid=False).item() == pytest.approx(4 / 9)
    # micro: TP 2, predicted 3, actual 3
    assert f1_multi(PROBS, TRUTH, sigmoid=False, average="micro").item() == pytest.approx(2 / 3)
    # macro: per label 1, 0, 1
    assert f1_multi(PROBS, TRUTH, sigmoid=False, average="macro").item() == pytest.approx(2 / 3)
    # F2 per item: 5/(4+2), 5/(8+1), 0
    expected = (5 / 6 + 5 / 9) / 3
    assert fbeta_multi(PROBS, TRUTH, beta=2, sigmoid=False).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="average must be one of"):
        fbeta_multi(PROBS, TRUTH, average="weighted")


def test_metric_names():
    assert metric_name(error_rate) == "error_rate"
    assert metric_name(functools.partial(accuracy_multi, thresh=0.2)) == "accuracy_multi"

    class Named:
        name = "custom"

        def __call__(self, pred, target):
            return 0.0

    assert metric_name(Named()) == "custom"
