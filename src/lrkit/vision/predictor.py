"""Predicting from images: an image file or PIL image -> the model input -> labels.

`predict` turns an image into the input the validation loader would have made of it
(`lrkit.data.image_input`) and hands it to the generic `lrkit.prediction.predict_tensor`, so
`VisionLearner.predict` (the model in training) and `load_learner(path).predict` (an exported
one) give the same answer for the same image. `load_learner` reads an export with
`lrkit.export_file.read_export` (which runs no code from the file) and wraps it in a
`Predictor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from lrkit.data.image_input import image_input
from lrkit.data.preprocess import Preprocess
from lrkit.export_file import read_export
from lrkit.prediction import Prediction, as_tensor, predict_tensor


def predict(
    model: nn.Module,
    item: Any,
    vocab: Sequence[str] | None,
    multi_label: bool,
    preprocess: Preprocess | None,
    device: torch.device | str,
    thresh: float = 0.5,
) -> Prediction:
    """Run `model` on one item (image path, PIL image, or a tensor/array without batch dim).

    Raises ValueError (one line) when the model cannot take the item's shape, or gives a number
    of scores other than the vocabulary's length; TypeError for another kind of item.
    """
    if isinstance(item, (str, Path, Image.Image)):
        x = image_input(item, preprocess)
    else:
        x = as_tensor(item)
    return predict_tensor(model, x, vocab, multi_label, device, thresh)


@dataclass
class Predictor:
    """An exported model ready for inference: `predict(item) -> (label, index, probs)`."""

    model: nn.Module
    vocab: list[str] | None
    multi_label: bool
    preprocess: Preprocess | None  # how an image file becomes the model's input
    device: torch.device
    thresh: float = 0.5  # multi-label decision threshold on the sigmoid

    def predict(self, item: Any) -> Prediction:
        """Label, class index and probabilities for one item."""
        return predict(
            self.model,
            item,
            self.vocab,
            self.multi_label,
            self.preprocess,
            self.device,
            self.thresh,
        )


def load_learner(
    path: str | Path, device: torch.device | str = "cpu", trust_pickle: bool = False
) -> Predictor:
    """Read a file written by `Learner.export` and return a `Predictor` (model in eval mode).

    Loading runs no code from the file: the model is built by a builder on the allow-list of
    `lrkit.models.registry`. `trust_pickle=True` is the one opt-in to run what the file names:
    unpickle a pickled model, or import and call a builder that is not on the allow-list.
    Raises FileNotFoundError, or ValueError (one line, naming the file) for anything else.
    """
    exported = read_export(path, device, trust_pickle)
    return Predictor(
        exported.model,
        exported.vocab,
        exported.multi_label,
        exported.preprocess,
        torch.device(device),
        exported.thresh,
    )
