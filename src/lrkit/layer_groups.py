"""Layer groups as data: a splitter returns lists of parameters, and a checker proves the split.

Every parameter of the model must sit in exactly one group; the checker names the ones that
are in no group, in two, or that do not belong to the model, so a wrong splitter fails at
once instead of silently training (or freezing) the wrong layers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

from torch import nn

Splitter = Callable[[nn.Module], Iterable[Iterable[nn.Parameter] | nn.Module]]

# Normalisation layers whose affine parameters stay trainable in frozen groups (train_bn=True):
# BatchNorm1d/2d/3d, their Lazy forms and SyncBatchNorm (all subclass torch's _BatchNorm).
BN_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm,)


def has_running_stats(module: nn.Module) -> bool:
    """Whether `module` keeps running statistics that training updates: every BatchNorm,
    SyncBatchNorm and LazyBatchNorm, and InstanceNorm with track_running_stats=True (torch's
    _NormBase subclasses that track them)."""
    return isinstance(module, nn.modules.batchnorm._NormBase) and bool(module.track_running_stats)


def one_group(model: nn.Module) -> list[list[nn.Parameter]]:
    """The default splitter: every parameter in a single group."""
    return [list(model.parameters())]


def split_by_modules(*modules: nn.Module) -> list[list[nn.Parameter]]:
    """One group per given module (e.g. `body, head`), in order."""
    return [list(module.parameters()) for module in modules]


def check_layer_groups(model: nn.Module, groups: Iterable) -> list[list[nn.Parameter]]:
    """Normalise a splitter's output and check every parameter is in exactly one group.

    A group may be an `nn.Module` (its parameters) or an iterable of parameters.
    """
    names = {id(param): name for name, param in model.named_parameters()}
    normalised: list[list[nn.Parameter]] = []
    for group in groups:
        params = list(group.parameters()) if isinstance(group, nn.Module) else list(group)
        normalised.append(params)
    if not normalised:
        raise ValueError("the splitter returned no layer groups; it must return at least one")

    seen: dict[int, int] = {}
    repeated: list[str] = []
    foreign: list[str] = []
    for index, params in enumerate(normalised):
        if not params:
            raise ValueError(
                f"layer group {index} of {len(normalised)} is empty; every group needs a parameter"
            )
        for param in params:
            if not isinstance(param, nn.Parameter):
                raise TypeError(
                    f"layer group {index} holds a {type(param).__name__}, not an nn.Parameter; "
                    "a splitter returns lists of parameters (or modules)"
                )
            key = id(param)
            if key not in names:
                foreign.append(f"group {index}: tensor of shape {tuple(param.shape)}")
            elif key in seen:
                repeated.append(f"{names[key]} (groups {seen[key]} and {index})")
            else:
                seen[key] = index
    missing = [name for key, name in names.items() if key not in seen]

    problems = []
    if missing:
        problems.append(f"in no layer group: {', '.join(missing)}")
    if repeated:
        problems.append(f"in two layer groups: {', '.join(repeated)}")
    if foreign:
        problems.append(f"not parameters of the model: {', '.join(foreign)}")
    if problems:
        raise ValueError(
            "the splitter must put every model parameter in exactly one group; "
            + "; ".join(problems)
        )
    return normalised


def bn_parameter_ids(model: nn.Module) -> set[int]:
    """Ids of the parameters that belong to BatchNorm layers."""
    return {
        id(param)
        for module in model.modules()
        if isinstance(module, BN_TYPES)
        for param in module.parameters(recurse=False)
    }


def norm_layers_within(model: nn.Module, param_ids: set[int]) -> list[nn.Module]:
    """The layers with running statistics (see `has_running_stats`) that belong to the
    parameters `param_ids`, in `model.modules()` order.

    A layer with parameters belongs where all of them are. A layer without any (BatchNorm
    with affine=False, InstanceNorm without affine) belongs with the nearest module before it
    in `model.modules()` order that has parameters of its own: the module containing it or
    the layer it normalises, e.g. the conv before it; with none before it, the first after it.
    """
    layers: list[nn.Module] = []
    owner: nn.Parameter | None = None  # a parameter of the latest module that has some
    waiting: list[nn.Module] = []  # parameter-less layers before any module with parameters
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if params and owner is None:
            layers += [layer for layer in waiting if id(params[0]) in param_ids]
            waiting = []
        if params:
            owner = params[0]
        if not has_running_stats(module):
            continue
        if params:
            if all(id(p) in param_ids for p in params):
                layers.append(module)
        elif owner is None:
            waiting.append(module)
        elif id(owner) in param_ids:
            layers.append(module)
    return layers


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """`model.eval()` inside; afterwards every module gets its own mode back, so a layer kept
    in eval mode while training (a frozen BatchNorm) stays so, unlike `model.train(was)`."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
