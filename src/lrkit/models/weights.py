"""Pretrained weights into a model: read a file safely, map its key names, check, load strictly.

Files: torchvision `.pth` state dicts, timm `.safetensors`/`.pth` (the same key names for
ResNets once wrappers and prefixes are gone), lrkit's own `save`/`export` files, and
EfficientNet-PyTorch files for EfficientNet-Lite (their names mapped onto timm's). The check is
key-by-key against the model's state_dict, and an error names the file and the first
mismatches. Two deliberate exceptions to "strict": a classifier whose shape differs from the
file's (another number of classes) keeps its fresh weights, and a first convolution with
another number of input channels gets the file's filters adapted (`adapt_input_conv`).

`.safetensors` files are read by the `safetensors` package: measured at 4.2x the speed of
lrkit's former own reader with half its memory (issue 14).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from lrkit.models.efficientnet import (
    efficientnet_pytorch_keys,
    is_efficientnet_pytorch,
    stage_depths,
)

SAFETENSORS_SUFFIXES = (".safetensors",)
# Containers that hold the state_dict one level down: ours, training scripts', timm's.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "model_ema")
# Prefixes a whole file may carry: DataParallel/DDP ("module."), torch.compile ("_orig_mod.").
STRIP_PREFIXES = ("module.", "_orig_mod.")
# The two parts of lrkit's VisionModel: a file whose keys all start with these is lrkit's own.
LRKIT_PARTS = ("body.", "head.")
SHOW = 5  # mismatches named in an error message


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped to a flat {name: tensor} on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        return read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path} is not a weights file torch can read safely ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); pass a torchvision/timm .pth, "
            "a .safetensors file, or a file written by Learner.save/export"
        ) from err
    return _unwrap(obj, path)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a `.safetensors` file by name, on the CPU. The format is a JSON header
    and raw bytes, so nothing in the file runs; the package checks that the header is JSON,
    that every dtype is known and that each tensor's byte range lies inside the file, without
    gaps or overlaps. Raises ValueError naming the file when any check fails."""
    try:
        return load_file(path, device="cpu")
    except SafetensorError as err:
        raise ValueError(
            f"{path} is not a safetensors file, or it is cut or corrupt ({err}); download it "
            "again or pass a torchvision/timm .pth"
        ) from err


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the state_dict inside what torch.load returned; refuse anything else."""
    for _ in range(3):  # e.g. {"model": {"state_dict": {...}}}
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    what = (
        f"a dict with keys {sorted(map(str, obj))[:SHOW]}"
        if isinstance(obj, Mapping)
        else f"a {type(obj).__name__}"
    )
    raise ValueError(
        f"{path} holds {what}, not a state_dict (a mapping of names to tensors); it is not a "
        "weights checkpoint"
    )


def map_keys(
    state: Mapping[str, torch.Tensor], model: nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """timm/torchvision/lrkit key names as a plain network's.

    Drops a prefix every key shares (module., _orig_mod.). A file lrkit wrote for a
    body + head model (`Learner.save`, `export`, `lrkit train`'s model.lrk: keys body.*, head.*)
    gives its body under the network's own names; its head is left out, as a new task gets a
    new one. For an EfficientNet-style `model`, EfficientNet-PyTorch names (`_conv_stem`, ...)
    become timm's.
    """
    state = dict(state)
    for prefix in STRIP_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    if state and all(k.startswith(LRKIT_PARTS) for k in state):
        body = LRKIT_PARTS[0]
        state = {k[len(body) :]: v for k, v in state.items() if k.startswith(body)}
    depths = stage_depths(model) if model is not None else None
    if depths is not None and is_efficientnet_pytorch(state):
        state = efficientnet_pytorch_keys(state, depths)
    return state


def _first_conv_key(model: nn.Module) -> str | None:
    """The state_dict key of the model's first Conv2d weight ("conv1.weight" for a ResNet)."""
    name = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    return None if name is None else f"{name}.weight"


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """RGB filters (O, 3, kh, kw) for `in_chans` inputs, answering grey images exactly as before.

    The filters repeat over the new channels (R, G, B, R, ...) scaled by 3 / in_chans; what
    the sum over channels still differs from the RGB sum is spread evenly, so an image with the
    same value in every channel gives the response its [g, g, g] gave. One channel: the sum.
    """
    if weight.ndim != 4:
        raise ValueError(f"expected a conv weight (O, I, kh, kw), got shape {tuple(weight.shape)}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    c = weight.shape[1]
    if in_chans == c:
        return weight
    reps = -(-in_chans // c)  # ceil
    tiled = weight.repeat(1, reps, 1, 1)[:, :in_chans] * (c / in_chans)  # (O, in_chans, kh, kw)
    # (O, 1, kh, kw): zero when in_chans is a multiple of c
    missing = weight.sum(1, keepdim=True) - tiled.sum(1, keepdim=True)
    return tiled + missing / in_chans


def _classifier_prefix(model: nn.Module) -> str | None:
    """The state_dict prefix of the model's final layer ("fc." for ResNets), if it has one."""
    get = getattr(model, "get_classifier", None)
    classifier = get() if callable(get) else getattr(model, "fc", None)
    if not isinstance(classifier, nn.Module):
        return None
    for name, module in model.named_modules():
        if module is classifier and name:
            return name + "."
    return None


def tensor_kind_problem(value: torch.Tensor) -> str | None:
    """Why `value` cannot be copied into a parameter, or None for a plain dense tensor with data.

    Sparse, quantized, nested and meta (data-less) tensors pass a shape and dtype check, then
    fail inside `load_state_dict` after other keys were copied, so they are refused up front.
    """
    if value.layout is not torch.strided:
        return f"a {str(value.layout).removeprefix('torch.')} tensor, not a dense one"
    if value.is_meta:
        return "a meta tensor without data"
    if value.is_quantized:
        return "a quantized tensor"
    if value.is_nested:
        return "a nested tensor"
    return None


def fit_state_dict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str | Path,
    first_conv: str | None = None,
) -> dict[str, torch.Tensor]:
    """`state` made to fit `model` exactly, or a ValueError naming `source` and the mismatches.

    Adapts `first_conv` (default: the model's first Conv2d weight) to the model's input
    channels; keeps the model's own classifier when the file's has another shape or is missing;
    a BatchNorm counter (`num_batches_tracked`) missing from an older file starts at 0. The
    rest must match key for key.
    """
    want = model.state_dict()
    state = map_keys(state, model)
    first_conv = first_conv if first_conv is not None else _first_conv_key(model)
    if first_conv is not None and first_conv in state and first_conv in want:
        have, need = state[first_conv], want[first_conv]
        if have.ndim == 4 and have.shape[1] != need.shape[1] and have.shape[2:] == need.shape[2:]:
            state[first_conv] = adapt_input_conv(have, need.shape[1])
    head = _classifier_prefix(model)
    if head is not None:
        mine = {k: v for k, v in want.items() if k.startswith(head)}
        theirs = {k: v for k, v in state.items() if k.startswith(head)}
        same = mine.keys() == theirs.keys() and all(mine[k].shape == theirs[k].shape for k in mine)
        if not same:  # another number of classes, or none: keep the fresh classifier
            state = {k: v for k, v in state.items() if not k.startswith(head)}
            state.update(mine)
    for key in want:
        bn = key.removesuffix("num_batches_tracked")
        if bn != key and key not in state and f"{bn}running_mean" in state:
            state[key] = torch.zeros_like(want[key])
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [
        f"{k} {tuple(state[k].shape)} in the file, {tuple(want[k].shape)} in the model"
        for k in want
        if k in state and state[k].shape != want[k].shape
    ]
    shapes += [  # pass the shape check, then fail inside load_state_dict
        f"{k} is {tensor_kind_problem(state[k])}"
        for k in want
        if k in state and tensor_kind_problem(state[k]) is not None
    ]
    if missing or unexpected or shapes:
        raise ValueError(_mismatch_message(model, source, missing, unexpected, shapes))
    return {k: state[k] for k in want}


def _mismatch_message(
    model: nn.Module, source: str | Path, missing: list, unexpected: list, shapes: list
) -> str:
    parts = []
    for label, items in (
        ("missing from the file", missing),
        ("not in the model", unexpected),
        ("wrong shape", shapes),
    ):
        if items:
            more = f" (+{len(items) - SHOW} more)" if len(items) > SHOW else ""
            parts.append(f"{label}: {', '.join(items[:SHOW])}{more}")
    hint = ""
    if any(k.startswith("conv1.0.") for k in unexpected):
        hint = " The file has a deep stem (conv1.0, ...): a ResNet-C/D variant, not a plain one."
    return (
        f"the weights in {source} do not fit {type(model).__name__} "
        f"({len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} of another "
        f"shape). {'; '.join(parts)}.{hint} Check that the file was saved from the same "
        "architecture (e.g. resnet50, not resnet34)."
    )


def load_pretrained(model: nn.Module, path: str | Path, first_conv: str | None = None) -> nn.Module:
    """Load a weights file into `model` (checked, then strict); returns the model."""
    state = fit_state_dict(model, read_state_dict(path), path, first_conv)
    model.load_state_dict(state, strict=True)
    return model


def set_in_chans(model: nn.Module, in_chans: int) -> nn.Module:
    """Swap the model's first Conv2d for one taking `in_chans` inputs, weights adapted."""
    found = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if found is None:
        raise ValueError(f"{type(model).__name__} has no Conv2d whose input channels could change")
    name, conv = found
    if conv.in_channels == in_chans:
        return model
    if conv.groups != 1:
        raise ValueError(f"cannot adapt {name!r}: it is a grouped convolution")
    new = nn.Conv2d(
        in_chans,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    with torch.no_grad():
        new.weight.copy_(adapt_input_conv(conv.weight, in_chans))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent), leaf, new)
    return model
