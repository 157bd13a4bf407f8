"""Saving, loading and exporting models; `load_learner(path).predict(item)` for inference.

- `save_state`/`load_state`: weights (+ optimizer state) in a torch file that is read back
  with `torch.load(weights_only=True)`, so loading never runs code from the file.
- `export`: the weights plus how to rebuild the model, the vocabulary and the preprocessing.
  The architecture is stored as a reference to an importable constructor
  ("package.module:function") with plain keyword arguments, checked at export time by
  building it and comparing every key and shape. A model that no constructor can rebuild
  may be exported with `pickle_model=True`; unpickling runs code from the file, so
  `load_learner` then refuses unless called with `trust_pickle=True`.
Every file is written to a temporary name and renamed, so a crash never leaves half a file
where a good one was.
"""

from __future__ import annotations

import importlib
import io
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from lrkit.data.image_input import image_input

STATE_FORMAT = "lrkit-state"
EXPORT_FORMAT = "lrkit-export"
VERSION = 1


def _atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _read(path: str | Path, device: torch.device | str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(
            f"{path} is not a readable lrkit/torch weights file ({first_line})"
        ) from err


def save_state(model: nn.Module, opt: torch.optim.Optimizer | None, path: str | Path) -> Path:
    """Write the model's state_dict (and the optimizer's) to `path`."""
    state = {
        "format": STATE_FORMAT,
        "version": VERSION,
        "model": model.state_dict(),
        "opt": opt.state_dict() if opt is not None else None,
    }
    return _atomic_save(state, path)


def load_state(
    model: nn.Module,
    opt: torch.optim.Optimizer | None,
    path: str | Path,
    device: torch.device | str,
    strict: bool = True,
) -> None:
    """Load weights from `save_state` (or a plain state_dict file) into `model` (and `opt`)."""
    state = _read(path, device)
    if isinstance(state, dict) and state.get("format") == STATE_FORMAT:
        weights, opt_state = state["model"], state["opt"]
    elif isinstance(state, dict):  # a bare state_dict, e.g. downloaded weights
        weights, opt_state = state, None
    else:
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(weights, strict=strict)
    except RuntimeError as err:
        raise ValueError(f"the weights in {path} do not fit this model: {err}") from err
    if opt is not None and opt_state is not None:
        opt.load_state_dict(opt_state)


# ---------------------------------------------------------------------------- export


def _resolve(ref: str) -> Callable[..., nn.Module]:
    """The object named by "package.module:qualified.name"."""
    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        raise ValueError(
            f"a constructor reference looks like 'package.module:function', got {ref!r}"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"cannot import {module_name!r} to rebuild the model ({ref}): {err}"
        ) from err
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise ValueError(
                f"{module_name!r} has no {qualname!r}; cannot rebuild the model ({ref})"
            )
        obj = getattr(obj, part)
    return obj


def _reference(factory: Callable[..., nn.Module] | str) -> str:
    """An importable "module:qualname" for `factory`, checked to resolve back to it."""
    if isinstance(factory, str):
        _resolve(factory)
        return factory
    ref = f"{factory.__module__}:{factory.__qualname__}"
    if "<" in ref or _resolve(ref) is not factory:
        raise ValueError(
            f"{ref} cannot be imported by name (a lambda or a local function/class); export "
            "with a module-level constructor, or pickle_model=True"
        )
    if factory.__module__ == "__main__":
        warnings.warn(
            f"the model's constructor {ref} lives in the running script, so load_learner can "
            "rebuild it only from that same script; move it into an importable module",
            UserWarning,
            stacklevel=4,
        )
    return ref


def _check_plain(value: Any, what: str) -> None:
    """Only values torch.load(weights_only=True) reads: None, bool, number, str, containers."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(item, what)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, what)
            _check_plain(item, what)
        return
    raise TypeError(
        f"{what} may hold only plain values (numbers, str, lists, dicts), got {value!r}"
    )


def _check_rebuild(model: nn.Module, rebuilt: nn.Module, ref: str) -> None:
    """Every state_dict key and shape of `model` must match the rebuilt one."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    problems = [f"missing {k}" for k in want if k not in got]
    problems += [f"unexpected {k}" for k in got if k not in want]
    problems += [f"{k}: {got[k]} != {want[k]}" for k in want if k in got and got[k] != want[k]]
    if problems:
        raise ValueError(
            f"{ref} with the given kwargs does not rebuild this model ({'; '.join(problems[:5])}"
            f"{'; ...' if len(problems) > 5 else ''}); pass factory= and kwargs= that do"
        )


def export(
    model: nn.Module,
    path: str | Path,
    vocab: Sequence[str] | None = None,
    multi_label: bool = False,
    factory: Callable[..., nn.Module] | str | None = None,
    kwargs: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
    pickle_model: bool = False,
    thresh: float = 0.5,
) -> Path:
    """Write model, vocabulary and preprocessing for `load_learner`; factory defaults to the class.

    `thresh` is the multi-label decision threshold `Predictor.predict` will use.

    `preprocess` (plain values) says how `predict` turns an image file into a tensor:
    "presize" (the centre square presized as `image_dataloaders` does), "size" (the centre
    square resized to it; omit both to keep the size), "mean"/"std" (per channel, for pixels
    in [0, 1]) and "channels" (1 or 3). See `lrkit.data.image_input`.
    """
    kwargs = dict(kwargs or {})
    _check_plain(kwargs, "kwargs")
    _check_plain(preprocess, "preprocess")
    payload: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "version": VERSION,
        "vocab": list(vocab) if vocab is not None else None,
        "multi_label": bool(multi_label),
        "preprocess": preprocess,
        "thresh": float(thresh),
    }
    if pickle_model:
        buffer = io.BytesIO()
        torch.save(model, buffer)
        payload["model_pickle"] = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    else:
        ref = _reference(factory if factory is not None else type(model))
        try:
            rebuilt = _resolve(ref)(**kwargs)
        except Exception as err:
            raise ValueError(
                f"cannot rebuild the model with {ref}(**{kwargs!r}): {err}; pass factory= and "
                "kwargs= that build it, or pickle_model=True"
            ) from err
        _check_rebuild(model, rebuilt, ref)
        payload["factory"], payload["kwargs"] = ref, kwargs
        payload["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return _atomic_save(payload, path)


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
    """Run `model` on one item (tensor without batch dim, image path or PIL image)."""
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
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x.unsqueeze(0).to(device))[0].float().cpu()  # (C,)
    finally:
        model.train(was_training)
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


def load_learner(
    path: str | Path, device: torch.device | str = "cpu", trust_pickle: bool = False
) -> Predictor:
    """Read a file written by `Learner.export` and return a `Predictor` (model in eval mode)."""
    payload = _read(path, device)
    if not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path} is not an lrkit export (write one with Learner.export)")
    if "model_pickle" in payload:
        if not trust_pickle:
            raise ValueError(
                f"{path} holds a pickled model, and unpickling runs code stored in the file; "
                "call load_learner(path, trust_pickle=True) only if you trust where it came from"
            )
        raw = payload["model_pickle"].cpu().numpy().tobytes()
        model = torch.load(io.BytesIO(raw), map_location=device, weights_only=False)
    else:
        model = _resolve(payload["factory"])(**payload["kwargs"])
        model.load_state_dict(payload["state_dict"])
    model = model.to(device).eval()
    return Predictor(
        model,
        payload["vocab"],
        payload["multi_label"],
        payload["preprocess"],
        torch.device(device),
        float(payload.get("thresh", 0.5)),
    )
