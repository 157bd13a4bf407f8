"""What the plain fields of an export may hold: vocabulary, threshold, weights, outputs.

The preprocessing's own check lives with its record (`lrkit.data.preprocess`).

An export may come from anyone, and `predict` feeds these fields to image decoding, resizing,
normalisation and labelling. Each check returns what is wrong in a few words (or None), and
`lrkit.export_file` refuses the file with that, in one line, before `predict` is ever called,
instead of a traceback mid-prediction or a NaN "confidence".
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lrkit.data.preprocess import preprocess_channels


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def vocab_problem(vocab: list[Any] | None) -> str | None:
    """What is wrong with an export's vocabulary (a non-empty list of distinct str), or None."""
    if vocab is None:
        return None
    if not vocab:
        return "the vocabulary is empty"
    if not all(isinstance(v, str) for v in vocab):
        bad = next(v for v in vocab if not isinstance(v, str))
        return f"the vocabulary should hold class names (str), got {bad!r}"
    if len(set(vocab)) != len(vocab):
        return "the vocabulary names a class twice"
    return None


def thresh_problem(thresh: Any) -> str | None:
    """What is wrong with a multi-label threshold (a number strictly between 0 and 1), or None."""
    if not _is_number(thresh) or not 0 < thresh < 1:
        return f"'thresh' should be a number between 0 and 1, got {thresh!r}"
    return None


def first_nonfinite(state: dict[str, torch.Tensor]) -> str | None:
    """The first key of `state` whose floating-point tensor holds a NaN or an infinity."""
    for key, value in state.items():
        if (value.is_floating_point() or value.is_complex()) and not bool(
            torch.isfinite(value).all()
        ):
            return key
    return None


def output_problem(
    skeleton: nn.Module, preprocess: dict[str, Any] | None, vocab: list[str] | None
) -> str | None:
    """Whether the model takes the images `preprocess` makes and gives one output per class.

    Runs `skeleton` (a model on the meta device: shapes only, no memory, no arithmetic) on a
    (1, channels, side, side) input when the export fixes the side ("size", else "presize").
    An operation the meta device lacks means "cannot tell" (None), not a refusal.
    """
    if preprocess is None:
        return None
    side = preprocess.get("size") or preprocess.get("presize")
    if not side:
        return None  # images keep their own size: checked when predicting
    channels = preprocess_channels(preprocess)
    was_training = skeleton.training
    try:
        with torch.no_grad():
            out = skeleton.eval()(torch.empty(1, channels, side, side, device="meta"))
    except NotImplementedError:
        return None
    except Exception as err:
        line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return f"the model cannot take a {channels}-channel {side}x{side} image ({line})"
    finally:
        skeleton.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return f"the model gives {shape} for one image, not one score per class"
    if vocab is not None and out.shape[1] != len(vocab):
        return f"the model gives {out.shape[1]} scores per image for {len(vocab)} classes"
    return None
