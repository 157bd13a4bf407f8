"""How one image becomes a model input: the frozen record that travels with loaders and exports.

`Preprocess` says what the validation loader does to every image (centre square presized to
`presize`, resized to `size`, normalised by per-channel `mean`/`std` for pixels in [0, 1], made
grey or RGB). The image pipeline builds it once with the loaders (`DataLoaders.preprocess`),
`Learner.export` writes it into the export as a plain dict (`to_dict`), and `load_learner`
reads it back (`from_dict`, checked by `preprocess_problem`), so `predict` makes of an image
file exactly what validation made of it (`lrkit.data.image_input`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

MAX_SIDE = 8192  # pixels; the largest "size"/"presize" an export may ask images to be made
PREPROCESS_KEYS = ("presize", "size", "mean", "std", "channels")
CHANNELS = (1, 3)  # grey or RGB: what image_input makes of every image

Stats = tuple[tuple[float, ...], tuple[float, ...]]  # per-channel (mean, std)


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
    """What is wrong with a "preprocess" dict (as an export holds it), or None (None is fine).

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


@dataclass(frozen=True)
class Preprocess:
    """What the validation loader does to one image; None fields: that step is not done.

    Raises ValueError (one line) on construction when a field is out of range (see
    `preprocess_problem`).
    """

    presize: int | None = None  # pixels: the centre square is first presized to this side
    size: int | None = None  # pixels: the model's input side; None keeps the image's own size
    mean: tuple[float, ...] | None = None  # per channel, for pixels in [0, 1]
    std: tuple[float, ...] | None = None  # per channel, every value above 0
    channels: int | None = None  # 1 (grey) or 3 (RGB); None: one per mean value, else 3

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:  # frozen: tuples of floats, whatever sequence was given
                object.__setattr__(self, name, tuple(float(v) for v in value))
        problem = preprocess_problem(self.to_dict())
        if problem is not None:
            raise ValueError(f"bad image preprocessing: {problem}")

    @property
    def stats(self) -> Stats | None:
        """(mean, std) the batches are normalised with, or None when not both are set."""
        if self.mean is None or self.std is None:
            return None
        return self.mean, self.std

    def with_stats(self, stats: tuple[Sequence[float], Sequence[float]] | None) -> Preprocess:
        """A copy normalising with `stats` = (mean, std) instead (None: no normalisation)."""
        mean, std = (None, None) if stats is None else stats
        return replace(self, mean=mean, std=std)

    def to_dict(self) -> dict[str, Any]:
        """The plain dict an export stores: set fields only, stats as lists."""
        out: dict[str, Any] = {}
        for name in PREPROCESS_KEYS:
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, preprocess: dict[str, Any]) -> Preprocess:
        """The record a `to_dict` dict (or an export's) describes; ValueError if it is wrong."""
        problem = preprocess_problem(preprocess)
        if problem is not None:
            raise ValueError(f"bad image preprocessing: {problem}")
        return cls(**preprocess)


def as_preprocess(value: Preprocess | dict[str, Any] | None) -> Preprocess | None:
    """`value` as a record: a Preprocess as is, a plain dict checked (`from_dict`), None kept.

    Raises ValueError for a dict `preprocess_problem` refuses, TypeError for anything else.
    """
    if value is None or isinstance(value, Preprocess):
        return value
    if isinstance(value, dict):
        return Preprocess.from_dict(value)
    raise TypeError(f"preprocess should be a Preprocess, a dict or None, got {value!r}")
