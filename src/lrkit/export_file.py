"""Exports: `export(model, path, ...)` writes one, `read_export(path)` reads it back.

An export holds the weights plus how to rebuild the model (an allow-listed builder reference
with plain keyword arguments, checked at export time by building it and comparing every key
and shape), the vocabulary and the preprocessing. `read_export` runs no code from the file:
the builder is looked up in `lrkit.models.registry`, every field is validated
(`lrkit.export_fields`), the model is sized on the meta device before anything is allocated,
and the weights are checked whole before they are copied. A model that no builder can rebuild
may be exported with `pickle_model=True`; unpickling runs code from the file, so
`read_export` then refuses unless called with `trust_pickle=True`. Turning images into model
inputs (`lrkit.vision.load_learner(path).predict(image)`) is lrkit.vision's part.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrkit.checkpoint import VERSION, atomic_save, check_state_dict, first_line, read_torch_file
from lrkit.data.preprocess import Preprocess, as_preprocess, preprocess_problem
from lrkit.export_fields import first_nonfinite, output_problem, thresh_problem, vocab_problem
from lrkit.models import registry
from lrkit.models.weights import tensor_kind_problem

EXPORT_FORMAT = "lrkit-export"
# bytes a rebuilt model may hold beyond the weights in its export (non-persistent buffers)
MAX_EXTRA_BYTES = 256 * 2**20


def _reference(factory: Callable[..., nn.Module] | str) -> str:
    """An importable "module:qualname" for `factory`, checked to resolve back to it.

    Warns when the reference is not on the allow-list (`lrkit.models.registry`), because
    `load_learner` will then refuse the file unless trusted.
    """
    if isinstance(factory, str):
        ref = factory
        registry.resolve_builder(ref, {}, trust=True)
    else:
        ref = registry.reference(factory)
        if "<" in ref or registry.resolve_builder(ref, {}, trust=True) is not factory:
            raise ValueError(
                f"{ref} cannot be imported by name (a lambda or a local function/class); export "
                "with a module-level constructor, or pickle_model=True"
            )
    if ref.partition(":")[0] == "__main__":
        warnings.warn(
            f"the model's constructor {ref} lives in the running script, so load_learner can "
            "rebuild it only from that same script; move it into an importable module",
            UserWarning,
            stacklevel=4,
        )
    if not registry.is_allowed(ref):
        warnings.warn(
            f"load_learner will refuse to call {ref} unless trusted: decorate it with "
            "lrkit.register_model where it is defined",
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
    preprocess: Preprocess | dict[str, Any] | None = None,
    pickle_model: bool = False,
    thresh: float = 0.5,
) -> Path:
    """Write model, vocabulary and preprocessing for `load_learner`; factory defaults to the class.

    `thresh` is the multi-label decision threshold `Predictor.predict` will use.

    `preprocess` (a `Preprocess` record, or its dict) says how `predict` turns an image file
    into a tensor: "presize" (the centre square presized as `image_dataloaders` does), "size"
    (the centre square resized to it; omit both to keep the size), "mean"/"std" (per channel,
    for pixels in [0, 1]) and "channels" (1 or 3). See `lrkit.data.preprocess`.
    """
    kwargs = dict(kwargs or {})
    _check_plain(kwargs, "kwargs")
    record = as_preprocess(preprocess)
    preprocess = (record.to_dict() or None) if record is not None else None
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
            rebuilt = registry.resolve_builder(ref, kwargs, trust=True)(**kwargs)
        except Exception as err:
            raise ValueError(
                f"cannot rebuild the model with {ref}(**{kwargs!r}): {err}; pass factory= and "
                "kwargs= that build it, or pickle_model=True"
            ) from err
        _check_rebuild(model, rebuilt, ref)
        payload["factory"], payload["kwargs"] = ref, kwargs
        payload["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_save(payload, path)


# what each key of an export must hold: (accepted types, description for the error)
EXPORT_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "vocab": ((list, type(None)), "a list of class names or None"),
    "multi_label": ((bool,), "true or false"),
    "preprocess": ((dict, type(None)), "a dict or None"),
}
OPTIONAL_FIELDS = {"thresh": 0.5}  # key -> value assumed when an older export lacks it
BUILD_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "factory": ((str,), "a 'module:function' string"),
    "kwargs": ((dict,), "a dict of keyword arguments"),
    "state_dict": ((dict,), "a dict of tensors"),
}


def _check_export(payload: Any, path: Path) -> None:
    """Refuse, in one line, an export with missing keys or values of the wrong type or range.

    The preprocessing, vocabulary and threshold are checked by `lrkit.export_fields`.
    """
    if not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path} is not an lrkit export (write one with Learner.export)")
    fields = dict(EXPORT_FIELDS)
    if "model_pickle" in payload:
        fields["model_pickle"] = ((torch.Tensor,), "a uint8 tensor")
    else:
        fields.update(BUILD_FIELDS)
    for key, (types, what) in fields.items():
        if key not in payload:
            raise ValueError(f"{path} is a damaged lrkit export: it has no {key!r}; export again")
        value = payload[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(
                f"{path} is a damaged lrkit export: {key!r} should be {what}, got "
                f"{type(value).__name__}; export again"
            )
    problem = (
        thresh_problem(payload.get("thresh", OPTIONAL_FIELDS["thresh"]))
        or preprocess_problem(payload["preprocess"])
        or vocab_problem(payload["vocab"])
    )
    if problem is not None:
        raise ValueError(f"{path} is a damaged lrkit export: {problem}; export again")
    state = payload.get("state_dict", {})
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(
            f"{path} is a damaged lrkit export: state_dict entry {bad[0]!r} is not a tensor"
        )


def _build(builder: Callable[..., Any], ref: str, kwargs: dict[str, Any], path: Path) -> nn.Module:
    """`builder(**kwargs)`, checked to be an nn.Module; any failure is one ValueError line."""
    try:
        model = builder(**kwargs)
    except Exception as err:
        raise ValueError(
            f"{path}: {ref}(**{kwargs!r}) fails to build the model "
            f"({type(err).__name__}: {first_line(err)})"
        ) from err
    if not isinstance(model, nn.Module):
        raise ValueError(f"{path}: {ref} built a {type(model).__name__}, not an nn.Module")
    return model


def _skeleton(builder: Callable[..., Any], kwargs: dict[str, Any]) -> nn.Module | None:
    """`builder(**kwargs)` on the meta device (shapes only, no memory); None if it cannot be.

    A builder may decide its structure from computed values (lrkit's `create_body` compares
    features on a probe image), so the skeleton's keys may differ from the real model's: it is
    used for sizes and output shapes, never for key names.
    """
    try:
        with torch.device("meta"):
            model = builder(**kwargs)
    except Exception:  # the real build reports it, or the builder needs real data
        return None
    return model if isinstance(model, nn.Module) else None


def _check_allocation(skeleton: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse a model whose tensors outweigh the file's weights by more than MAX_EXTRA_BYTES.

    The file's keyword arguments choose the model's size; its weights must match that model,
    so a model far larger than they are cannot load anyway, and is refused before it is built.
    """
    tensors = [*skeleton.parameters(), *skeleton.buffers()]
    need = sum(t.numel() * t.element_size() for t in tensors)
    have = sum(t.numel() * t.element_size() for t in state.values())
    if need - have > MAX_EXTRA_BYTES:
        raise ValueError(
            f"{path}: its model would need {need / 2**20:.0f} MiB, {(need - have) / 2**20:.0f} "
            "MiB more than the weights the file holds; refused before building it"
        )


def _rebuild(
    payload: dict[str, Any], path: Path, device: torch.device | str, trust: bool
) -> nn.Module:
    """The exported model, built by an allow-listed builder (or unpickled when trusted).

    The builder runs first on the meta device: an export whose keyword arguments ask for a model
    far larger than its weights, or one whose outputs do not fit its images and vocabulary, is
    refused before memory is allocated for it. (A builder that cannot run on the meta device is
    only checked after it is built.)
    """
    if "model_pickle" in payload:
        if not trust:
            raise ValueError(
                f"{path} holds a pickled model, and unpickling runs code stored in the file; "
                "call load_learner(path, trust_pickle=True) only if you trust where it came from"
            )
        raw = payload["model_pickle"].cpu().numpy().tobytes()
        return torch.load(io.BytesIO(raw), map_location=device, weights_only=False)
    ref, kwargs, state = payload["factory"], payload["kwargs"], payload["state_dict"]
    try:
        builder = registry.resolve_builder(ref, kwargs, trust=trust)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    bad = next((k for k, v in state.items() if tensor_kind_problem(v) is not None), None)
    if bad is not None:  # sizes below count dense data only
        raise ValueError(f"{path}: state_dict entry {bad} is {tensor_kind_problem(state[bad])}")
    nonfinite = first_nonfinite(state)
    if nonfinite is not None:  # it would predict NaN for every input
        raise ValueError(f"{path}: its weights hold NaN or infinity (first in {nonfinite})")
    skeleton = _skeleton(builder, kwargs)
    if skeleton is not None:
        _check_allocation(skeleton, state, path)
        problem = output_problem(skeleton, payload["preprocess"], payload["vocab"])
        if problem is not None:
            raise ValueError(f"{path} does not fit together: {problem}; export again")
    model = _build(builder, ref, kwargs, path)
    check_state_dict(model, state, path)
    model.load_state_dict(state)
    return model


@dataclass(frozen=True)
class Exported:
    """What an export holds, checked: the model (eval mode, on the device asked) and its labels."""

    model: nn.Module
    vocab: list[str] | None
    multi_label: bool
    preprocess: Preprocess | None  # how an image becomes an input; see lrkit.data.preprocess
    thresh: float  # multi-label decision threshold on the sigmoid


def read_export(
    path: str | Path, device: torch.device | str = "cpu", trust_pickle: bool = False
) -> Exported:
    """Read a file written by `export` (or `Learner.export`): the model rebuilt and its fields.

    Loading runs no code from the file: the model is built by a builder on the allow-list of
    `lrkit.models.registry`. `trust_pickle=True` is the one opt-in to run what the file names:
    unpickle a pickled model, or import and call a builder that is not on the allow-list.
    Raises FileNotFoundError, or ValueError (one line, naming the file) for anything else.
    """
    path = Path(path)
    payload = read_torch_file(path, device)
    _check_export(payload, path)
    model = _rebuild(payload, path, device, trust_pickle).to(device).eval()
    return Exported(
        model,
        payload["vocab"],
        payload["multi_label"],
        as_preprocess(payload["preprocess"]),
        float(payload.get("thresh", OPTIONAL_FIELDS["thresh"])),
    )
