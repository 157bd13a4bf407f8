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

import io
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrkit.export_fields import (
    first_nonfinite,
    output_problem,
    preprocess_problem,
    thresh_problem,
    vocab_problem,
)
from lrkit.models import registry
from lrkit.models.weights import tensor_kind_problem
from lrkit.predictor import Predictor

STATE_FORMAT = "lrkit-state"
EXPORT_FORMAT = "lrkit-export"
VERSION = 1
# bytes a rebuilt model may hold beyond the weights in its export (non-persistent buffers)
MAX_EXTRA_BYTES = 256 * 2**20


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
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path} is not a readable lrkit/torch weights file ({first_line(err)})"
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


def check_state_dict(
    model: nn.Module, state: dict[str, Any], source: str | Path, strict: bool = True
) -> None:
    """Raise ValueError unless `state` loads into `model` whole: keys, kinds, shapes and dtypes.

    Run before anything is copied, so a refused load changes nothing. Floating-point tensors
    may differ in precision (they are cast, as torch does); any other dtype must match; every
    value must be a dense tensor with data (`tensor_kind_problem`).
    `strict=False` allows missing and unexpected keys, not wrong shapes or dtypes.
    Reads only the model's shapes and dtypes, so `model` may live on the meta device.
    """
    want = model.state_dict()
    problems = []
    if strict:
        problems += [f"missing {k}" for k in want if k not in state]
        problems += [f"unexpected {k}" for k in state if k not in want]
    for key, value in state.items():
        if key not in want:
            continue
        mine = want[key]
        if not isinstance(value, torch.Tensor):
            problems.append(f"{key} is a {type(value).__name__}, not a tensor")
        elif (kind := tensor_kind_problem(value)) is not None:
            problems.append(f"{key} is {kind}")
        elif value.shape != mine.shape:
            problems.append(f"{key}: {tuple(value.shape)} in the file, {tuple(mine.shape)} here")
        elif value.dtype != mine.dtype and not (
            value.dtype.is_floating_point and mine.dtype.is_floating_point
        ):
            problems.append(f"{key}: {value.dtype} in the file, {mine.dtype} here")
    if problems:
        more = f"; +{len(problems) - 3} more" if len(problems) > 3 else ""
        raise ValueError(
            f"the weights in {source} do not fit this model ({len(problems)} problems: "
            f"{'; '.join(problems[:3])}{more}); nothing was loaded"
        )


def _value_kind(value: Any) -> str | None:
    """A hyper-parameter's kind for comparing two optimizers' groups; None: anything goes."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.ndim == 0):
        return "number"
    if isinstance(value, (tuple, list)):
        return "sequence"
    return type(value).__name__


def check_optimizer_state(opt: torch.optim.Optimizer, opt_state: Any, source: str | Path) -> None:
    """Raise ValueError (one line, naming `source`) unless `opt_state` loads into `opt` whole.

    Checked, changing nothing: the structure (dicts and lists where torch expects them); the
    number of param groups and the parameters per group (all torch checks); that each saved
    group has every hyper-parameter of this optimizer, of the same kind (another optimizer
    type is refused, not loaded to fail at the next step); that per-parameter state names match
    the state this optimizer already holds for that parameter; and that each per-parameter state
    tensor is dense, real when its parameter is, and a scalar or of its parameter's shape.
    """
    retry = "load with with_opt=False to take the weights only"

    def damaged(what: str) -> ValueError:
        return ValueError(f"the optimizer state in {source} is damaged ({what}); {retry}")

    if not isinstance(opt_state, dict) or not isinstance(opt_state.get("param_groups"), list):
        raise damaged("no param_groups")
    saved_state = opt_state.get("state")
    if not isinstance(saved_state, dict):
        raise damaged(f"its state is a {type(saved_state).__name__}, not a dict")
    groups, saved = opt.param_groups, opt_state["param_groups"]
    if len(groups) != len(saved):
        raise ValueError(
            f"the optimizer state in {source} has {len(saved)} param groups, this optimizer "
            f"{len(groups)}; {retry}"
        )
    params: dict[Any, torch.Tensor] = {}
    for i, (group, old) in enumerate(zip(groups, saved, strict=True)):
        if not isinstance(old, dict) or not isinstance(old.get("params"), list):
            raise damaged(f"group {i} is not a dict with a params list")
        if len(old["params"]) != len(group["params"]):
            raise ValueError(
                f"the optimizer state in {source}: group {i} has {len(old['params'])} "
                f"parameters, this optimizer's {len(group['params'])}; {retry}"
            )
        missing = sorted(k for k in opt.defaults if k != "params" and k not in old)
        if missing:
            raise ValueError(
                f"the optimizer state in {source} was written by another kind of optimizer "
                f"(group {i} lacks {', '.join(missing)} of this {type(opt).__name__}); {retry}"
            )
        for name in opt.defaults:
            mine, theirs = _value_kind(group.get(name)), _value_kind(old[name])
            if mine is not None and theirs is not None and mine != theirs:
                raise damaged(f"group {i}: {name} is {old[name]!r}, should be a {mine}")
        for key, param in zip(old["params"], group["params"], strict=True):
            if isinstance(key, bool) or not isinstance(key, int) or key in params:
                raise damaged(f"group {i}: parameter id {key!r} is not a new integer")
            params[key] = param
    for key, per_param in saved_state.items():
        param = params.get(key) if isinstance(key, int) else None
        if param is None or not isinstance(per_param, dict):
            raise ValueError(
                f"the optimizer state in {source} holds state for an unknown parameter {key!r}"
            )
        held = opt.state.get(param)
        if held and set(held) != set(per_param):
            raise ValueError(
                f"the optimizer state in {source} was written by another kind of optimizer "
                f"(parameter {key} has state {sorted(per_param)}, this {type(opt).__name__} "
                f"keeps {sorted(held)}); {retry}"
            )
        for name, value in per_param.items():
            if not isinstance(value, torch.Tensor):
                continue
            problem = tensor_kind_problem(value)
            if problem is None and value.is_complex() and not param.is_complex():
                problem = "complex, the parameter real"
            if problem is not None:
                raise damaged(f"{name} of parameter {key} is {problem}")
            if value.ndim > 0 and value.shape != param.shape:
                raise ValueError(
                    f"the optimizer state in {source}: {name} of parameter {key} has shape "
                    f"{tuple(value.shape)}, the parameter {tuple(param.shape)}"
                )


def load_state(
    model: nn.Module,
    opt: torch.optim.Optimizer | None,
    path: str | Path,
    device: torch.device | str,
    strict: bool = True,
) -> None:
    """Load weights from `save_state` (or a plain state_dict file) into `model` (and `opt`).

    All or nothing: weights and optimizer state are checked first (`check_state_dict`,
    `check_optimizer_state`), so a refused file leaves model and optimizer bit-identical.
    Raises FileNotFoundError, or ValueError naming the file and the first mismatches.
    """
    state = _read(path, device)
    if isinstance(state, dict) and state.get("format") == STATE_FORMAT:
        weights, opt_state = state.get("model"), state.get("opt")
    elif isinstance(state, dict):  # a bare state_dict, e.g. downloaded weights
        weights, opt_state = state, None
    else:
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state_dict")
    if not isinstance(weights, dict):
        raise ValueError(f"{path} is a damaged lrkit state file: its model entry is not a dict")
    check_state_dict(model, weights, path, strict)
    if opt is not None and opt_state is not None:
        check_optimizer_state(opt, opt_state, path)
    model.load_state_dict(weights, strict=strict)
    if opt is not None and opt_state is not None:
        opt.load_state_dict(opt_state)


# ---------------------------------------------------------------------------- export


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
            rebuilt = registry.resolve_builder(ref, kwargs, trust=True)(**kwargs)
        except Exception as err:
            raise ValueError(
                f"cannot rebuild the model with {ref}(**{kwargs!r}): {err}; pass factory= and "
                "kwargs= that build it, or pickle_model=True"
            ) from err
        _check_rebuild(model, rebuilt, ref)
        payload["factory"], payload["kwargs"] = ref, kwargs
        payload["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return _atomic_save(payload, path)


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


def first_line(err: BaseException) -> str:
    """The first line of an error's message (torch's C++ errors append a stack dump)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


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


def load_learner(
    path: str | Path, device: torch.device | str = "cpu", trust_pickle: bool = False
) -> Predictor:
    """Read a file written by `Learner.export` and return a `Predictor` (model in eval mode).

    Loading runs no code from the file: the model is built by a builder on the allow-list of
    `lrkit.models.registry`. `trust_pickle=True` is the one opt-in to run what the file names:
    unpickle a pickled model, or import and call a builder that is not on the allow-list.
    Raises FileNotFoundError, or ValueError (one line, naming the file) for anything else.
    """
    path = Path(path)
    payload = _read(path, device)
    _check_export(payload, path)
    model = _rebuild(payload, path, device, trust_pickle).to(device).eval()
    return Predictor(
        model,
        payload["vocab"],
        payload["multi_label"],
        payload["preprocess"],
        torch.device(device),
        float(payload.get("thresh", OPTIONAL_FIELDS["thresh"])),
    )
