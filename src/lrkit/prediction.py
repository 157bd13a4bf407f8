"""What `predict` does with one model input: run the model, turn its outputs into labels.

Generic (tensors and arrays only, no image decoding): `Learner.predict` calls it directly, and
`lrkit.vision.predictor` calls it after turning an image file into a tensor, so both give the
same answer for the same input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from lrkit.layer_groups import eval_mode


class Prediction(NamedTuple):
    """What `predict` returns: `label, index, probs = learn.predict(item)`."""

    label: Any  # the class name (vocab[index]), or the index without a vocab; a list if multi-label
    index: Any  # int, or a list of ints for multi-label
    probs: torch.Tensor  # (C,) softmax (single label) or sigmoid (multi-label) probabilities


def as_tensor(item: Any) -> torch.Tensor:
    """`item` (a tensor or numpy array, without batch dim) as a tensor; TypeError otherwise."""
    if isinstance(item, torch.Tensor):
        return item
    if isinstance(item, np.ndarray):
        return torch.from_numpy(item)
    raise TypeError(
        f"predict takes a tensor or array without batch dim, got {type(item).__name__}; image "
        "files and PIL images go to a vision_learner's predict or lrkit.load_learner(...).predict"
    )


def predict_tensor(
    model: nn.Module,
    x: torch.Tensor,
    vocab: Sequence[str] | None,
    multi_label: bool,
    device: torch.device | str,
    thresh: float = 0.5,
) -> Prediction:
    """Run `model` on one input `x` (no batch dim) and read its (C,) outputs as labels.

    Single label: softmax, the highest class. Multi-label: sigmoid, every class above `thresh`.
    Raises ValueError (one line) when the model cannot take `x`'s shape, or gives a number of
    scores other than the vocabulary's length.
    """
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
