"""timm and torchvision, where they are installed and load: their model names and weights.

Neither library is a dependency. Importing one can fail in many ways besides ImportError (a
torchvision built for another torch raises RuntimeError or OSError from its compiled ops), so
every import here catches any exception and counts the library as absent.

A model is named "timm:<name>" or "torchvision:<name>" (a bare name means timm's, as in
fastai). Before a library is asked to download pretrained weights that are not in its cache,
its server is probed with a short connect (`PROBE_TIMEOUT` seconds, the name lookup included):
offline, that fails fast with one line instead of the library's retries and raw errors.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrkit.fetch import DownloadError, reachable

LIBRARIES = ("timm", "torchvision")
# where each library downloads its pretrained weights from: (host, port)
WEIGHT_HOSTS = {"timm": ("huggingface.co", 443), "torchvision": ("download.pytorch.org", 443)}
PROBE_TIMEOUT = 1.5  # seconds for the connect probe, name lookup included
TORCHVISION_WEIGHTS = {"imagenet": "IMAGENET1K_V1", "imagenet_v2": "IMAGENET1K_V2"}


def optional_import(name: str) -> Any:
    """The module, or None when it is not installed or fails to load in any way."""
    try:
        return importlib.import_module(name)
    except Exception:  # a broken install: ImportError, RuntimeError, OSError, ...
        return None


def _models_module(library: str) -> Any:
    return optional_import("timm" if library == "timm" else "torchvision.models")


def split_ref(arch: str) -> tuple[str, str] | None:
    """("timm", "resnet18") for "timm:resnet18"; None when `arch` names no library."""
    library, sep, name = arch.partition(":")
    if sep and library in LIBRARIES and name:
        return library, name
    return None


def library_names(library: str) -> set[str] | None:
    """The model names `library` registers, or None when it is absent or cannot list them."""
    module = _models_module(library)
    if module is None:
        return None
    try:
        return set(module.list_models())
    except Exception:
        return None


def library_builder(library: str, name: str) -> Callable[..., nn.Module] | None:
    """A builder of `library`'s model `name` without weights; None when absent or unknown."""
    names = library_names(library)
    if names is None or name not in names:
        return None
    module = _models_module(library)
    if library == "timm":
        return lambda **kwargs: module.create_model(name, pretrained=False, **kwargs)
    return lambda **kwargs: module.get_model(name, weights=None, **kwargs)


def _hub_file(url: str | None) -> bool:
    """Whether torch's hub cache holds the file `url` names (torchvision's and timm's cache)."""
    if not url:
        return False
    filename = url.rstrip("/").rsplit("/", 1)[-1]
    return (Path(torch.hub.get_dir()) / "checkpoints" / filename).is_file()


def _cached(library: str, name: str, kind: str) -> bool:
    """Whether `library` holds `name`'s weights locally already (best effort: False if unsure)."""
    try:
        if library == "torchvision":
            module = _models_module("torchvision")
            enum = module.get_model_weights(name)
            return _hub_file(enum[TORCHVISION_WEIGHTS[kind]].url)
        timm = _models_module("timm")
        cfg = timm.models.get_pretrained_cfg(name)
        if getattr(cfg, "hf_hub_id", None):
            hub = importlib.import_module("huggingface_hub")
            return any(
                isinstance(hub.try_to_load_from_cache(cfg.hf_hub_id, f), str)
                for f in ("model.safetensors", "pytorch_model.bin")
            )
        return _hub_file(getattr(cfg, "url", None))
    except Exception:
        return False


def check_weights_reachable(library: str, name: str, kind: str = "imagenet") -> None:
    """Raise DownloadError (one line) when `name`'s weights are not cached and the library's
    server cannot be reached within PROBE_TIMEOUT seconds; return when they can be had."""
    if _cached(library, name, kind):
        return
    host, port = WEIGHT_HOSTS[library]
    if not reachable(host, port, PROBE_TIMEOUT):
        raise DownloadError(
            f"cannot reach {host} to download {library}'s pretrained weights for {name!r} "
            "(offline?); pass pretrained=False to train from scratch, or pretrained=<path to "
            "a weights file> downloaded elsewhere"
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def build(library: str, name: str, kind: str | None, in_chans: int = 3) -> nn.Module:
    """`library`'s model `name`, with its `kind` ImageNet weights when `kind` is not None.

    timm models are built for `in_chans` input channels; torchvision's for 3 (adapt them with
    `set_in_chans`). Raises ValueError (one line) when the library is absent or does not know
    `name`, DownloadError when the weights cannot be had.
    """
    names = library_names(library)
    if names is None:
        raise ValueError(
            f"unknown architecture '{library}:{name}': {library} is not installed here, or does "
            "not load with this torch"
        )
    if name not in names:
        raise ValueError(f"unknown architecture {name!r}: {library} has no model of that name")
    module = _models_module(library)
    if kind is not None:
        if library == "torchvision" and kind not in TORCHVISION_WEIGHTS:
            raise ValueError(f"torchvision has no {kind!r} weights; use 'imagenet'")
        check_weights_reachable(library, name, kind)
    try:
        if library == "timm":
            return module.create_model(name, pretrained=kind is not None, in_chans=in_chans)
        weights = TORCHVISION_WEIGHTS[kind] if kind is not None else None
        return module.get_model(name, weights=weights)
    except Exception as error:  # the library's own download or build failed: one line
        if kind is None:
            raise ValueError(f"{library} could not build {name!r}: {_first_line(error)}") from error
        raise DownloadError(
            f"{library} could not build {name!r} with its pretrained weights: "
            f"{_first_line(error)}; pass pretrained=False, or pretrained=<path to a weights file>"
        ) from error
