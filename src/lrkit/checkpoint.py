"""Saving and loading weights: `Learner.save` / `Learner.load`, all or nothing.

`save_state` writes the model's state_dict (and the optimizer's) to a torch file, atomically
(a temporary name, then a rename, so a crash never leaves half a file where a good one was);
`load_state` reads it back with `torch.load(weights_only=True)`, so no code from the file
runs, and checks keys, shapes, dtypes, tensor kinds and the optimizer's groups and state
before copying anything, so a refused file changes nothing. Exports (`export`,
`load_learner`) live in `lrkit.export_file`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrkit.models.weights import tensor_kind_problem

STATE_FORMAT = "lrkit-state"
VERSION = 1


def first_line(err: BaseException) -> str:
    """The first line of an error's message (torch's C++ errors append a stack dump)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def atomic_save(obj: Any, path: str | Path) -> Path:
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


def read_torch_file(path: str | Path, device: torch.device | str) -> Any:
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
    return atomic_save(state, path)


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
    state = read_torch_file(path, device)
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
