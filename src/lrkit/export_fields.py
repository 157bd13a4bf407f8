"""What the plain fields of an export may hold: preprocessing, vocabulary, threshold, weights.

An export may come from anyone, and `predict` feeds these fields to image decoding, resizing,
normalisation and labelling. Each check returns what is wrong in a few words (or None), and
`lrkit.export_file` refuses the file with that, in one line, before `predict` is ever called,
instead of a traceback mid-prediction or a NaN "confidence".
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

MAX_SIDE = 8192  # pixels; the largest "size"/"presize" an export may ask images to be made
PREPROCESS_KEYS = ("presize", "size", "mean", "std", "channels")  # see lrkit.data.image_input
CHANNELS = (1, 3)  # grey or RGB: what image_input makes of every image


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _side_problem(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_SIDE:
        return f"{name} should be a whole number of pixels in 1..{MAX_SIDE}, got {value!r}"
    return None


def preprocess_channels(preprocess: dict[str, Any]) -> int:
    """The number of channels image_input makes: "channels", else len("mean"), else 3."""
    return preprocess.get("channels") or len(preprocess.get("mean") or [0, 0, 0])


def preprocess_problem(preprocess: dict[str, Any] | None) -> str | None:
    """What is wrong with an export's "preprocess" dict, or None (None itself is fine).

    Known keys only; "presize"/"size" whole numbers in 1..MAX_SIDE (or None); "channels" 1 or 3
    (or None); "mean"/"std" lists of finite numbers, one per channel, every std above 0.
    """
    if preprocess is None:
        return None
    unknown = sorted(str(k) for k in preprocess if k not in PREPROCESS_KEYS)
    if unknown:
        return f"unknown preprocess keys {unknown} (known: {', '.join(PREPROCESS_KEYS)})"
    for name in ("presize", "size"):
        if (problem := _side_problem(name, preprocess.get(name))) is not None:
            return problem
    channels = preprocess.get("channels")
    if channels is not None and (isinstance(channels, bool) or channels not in CHANNELS):
        return f"channels should be 1 or 3, got {channels!r}"
    for name in ("mean", "std"):
        stats = preprocess.get(name)
        if stats is None:
            continue
        if not isinstance(stats, (list, tuple)) or not all(_is_number(v) for v in stats):
            return f"{name} should be a list of numbers, got {stats!r}"
        if not all(math.isfinite(v) for v in stats) or (
            name == "std" and not all(v > 0 for v in stats)
        ):
            return f"{name} should hold finite numbers{' above 0' * (name == 'std')}, got {stats}"
    n = preprocess_channels(preprocess)
    if n not in CHANNELS:
        return f"mean has {n} values; images have 1 or 3 channels"
    for name in ("mean", "std"):
        stats = preprocess.get(name)
        if stats is not None and len(stats) != n:
            return f"{name} has {len(stats)} values for {n}-channel images"
    return None


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
