"""What `predict` does with one item: prepare it, run the model, turn outputs into labels.

Shared by `Learner.predict` (the model in training) and `load_learner(path).predict` (an
exported one), so both give the same answer for the same item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from lrkit.data.image_input import image_input
from lrkit.layer_groups import eval_mode


class Prediction(NamedTuple):
    """What `predict` returns: `label, index, probs = learn.predict(item)`."""

    label: Any  # the class name (vocab[index]), or the index without a vocab; a list if multi-label
    index: Any  # int, or a list of ints for multi-label
    probs: torch.Tensor  # (C,) softmax (single label) or sigmoid (multi-label) probabilities


def predict(
    model: nn.Module,
    item: Any,
    vocab: Sequence[str] | None,
    multi_label: bool,
    preprocess: dict[str, Any] | None,
    device: torch.device | str,
    thresh: float = 0.5,
) -> Prediction:
    """Run `model` on one item (tensor without batch dim, image path or PIL image).

    Raises ValueError (one line) when the model cannot take the item's shape, or gives a number
    of scores other than the vocabulary's length; TypeError for another kind of item.
    """
    if isinstance(item, (str, Path, Image.Image)):
        x = image_input(item, preprocess)
    elif isinstance(item, np.ndarray):
        x = torch.from_numpy(item)
    elif isinstance(item, torch.Tensor):
        x = item
    else:
        raise TypeError(
            f"predict takes a tensor, array, image path or PIL image, got {type(item).__name__}"
        )
    with torch.no_grad(), eval_mode(model):  # every module's own mode back afterwards
        try:
            out = model(x.unsqueeze(0).to(device))[0].float().cpu()  # (C,)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as err:  # torch's shape errors carry a C++ stack dump: first line
            line = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ValueError(
                f"the model cannot take an input of shape {tuple(x.shape)} ({line})"
            ) from err
    if vocab is not None and tuple(out.shape) != (len(vocab),):
        raise ValueError(
            f"the model gives {tuple(out.shape)} scores for {len(vocab)} classes; its vocabulary "
            "does not belong to it"
        )
    if multi_label:
        probs = out.sigmoid()
        index = (probs > thresh).nonzero().flatten().tolist()
        label = [vocab[i] for i in index] if vocab is not None else index
        return Prediction(label, index, probs)
    probs = out.softmax(dim=-1)
    best = int(probs.argmax())
    return Prediction(vocab[best] if vocab is not None else best, best, probs)


@dataclass
class Predictor:
    """An exported model ready for inference: `predict(item) -> (label, index, probs)`."""

    model: nn.Module
    vocab: list[str] | None
    multi_label: bool
    preprocess: dict[str, Any] | None
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
