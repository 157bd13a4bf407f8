"""Which model builders an export may name: the allow-list that keeps model files from running code.

An export stores how to rebuild its model as a builder reference plus plain keyword arguments.
Loading looks the reference up here and never imports a module the file names, so a file
cannot make lrkit call an arbitrary function (e.g. `os:system` with a command as keyword
argument). The allow-list holds:

- lrkit's own builders, under their "module:function" references
  ("lrkit.models.vision_model:vision_model", "lrkit.models.resnet:resnet50", ...);
- builders the running program registered with `register_model` (code the user already runs,
  not code from the file);
- "timm:<name>" and "torchvision:<name>" for the names those libraries register, when they
  are installed and import; they are built without weights (the file brings them).

Anything else is refused with one line, unless the caller passes `trust=True` (the same opt-in
that unpickling a model needs), which imports the reference as written.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from lrkit.models.foreign import library_builder, split_ref
from lrkit.models.small import simple_cnn
from lrkit.models.vision_model import ARCHS, vision_model

Builder = Callable[..., nn.Module]
B = TypeVar("B", bound=Callable[..., Any])

# keyword arguments that would make a library builder fetch or read weights on its own
WEIGHT_KWARGS = frozenset(
    {"pretrained", "weights", "weights_backbone", "checkpoint_path", "pretrained_cfg",
     "pretrained_cfg_overlay", "pretrained_strict", "cache_dir"}
)  # fmt: skip


def reference(builder: Callable[..., Any]) -> str:
    """The "module:qualname" under which `builder` is stored in an export."""
    return f"{builder.__module__}:{builder.__qualname__}"


_BUILDERS: dict[str, Builder] = {
    reference(fn): fn for fn in (vision_model, simple_cnn, *ARCHS.values())
}


def register_model(builder: B) -> B:
    """Allow exports to name `builder` (a module-level function or nn.Module class); a decorator.

    Call it in the module that defines the builder, so that importing that module (which the
    program loading the export does itself) is what allows it. Raises ValueError for a lambda
    or local function, which no file could name.
    """
    ref = reference(builder)
    if "<" in ref:
        raise ValueError(f"{ref} is a lambda or a local function; register a module-level one")
    _BUILDERS[ref] = builder
    return builder


def _library_builder(ref: str) -> Builder | None:
    """timm.create_model / torchvision.models.get_model for a name the library registers."""
    parts = split_ref(ref)
    return library_builder(*parts) if parts is not None else None


def is_allowed(ref: str) -> bool:
    """Whether `ref` is on the allow-list (lrkit's, registered, or a timm/torchvision name)."""
    return ref in _BUILDERS or _library_builder(ref) is not None


def _import(ref: str) -> Builder:
    """The object named by "package.module:qualified.name", imported (trusted files only)."""
    module_name, _, qualname = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception as err:
        raise ValueError(f"cannot import the model builder {ref!r}: {err}") from err
    if not callable(obj):
        raise ValueError(f"the model builder {ref!r} is a {type(obj).__name__}, not callable")
    return obj


def resolve_builder(ref: str, kwargs: dict[str, Any], trust: bool = False) -> Builder:
    """The builder an export names, checked against the allow-list before anything is imported.

    Raises ValueError (one line) when `ref` is malformed, not allowed and `trust` is False, or
    when `kwargs` would make a timm/torchvision builder fetch or read weights by itself.
    """
    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        raise ValueError(
            f"a model builder reference looks like 'package.module:function', got {ref!r}"
        )
    if ref in _BUILDERS:
        return _BUILDERS[ref]
    library = _library_builder(ref)
    if library is not None:
        asked = sorted(WEIGHT_KWARGS & set(kwargs))
        if asked:
            raise ValueError(f"the export asks {ref} to load weights itself ({', '.join(asked)})")
        return library
    if not trust:
        raise ValueError(
            f"the export names the model builder {ref!r}, which is not on lrkit's allow-list, "
            "and calling it could run any code; register it with lrkit.register_model, or load "
            "with trust_pickle=True only if you trust the file"
        )
    return _import(ref)
