"""Take everything a training step can change, and put it back bit-for-bit.

The range test trains for real, so before it starts we copy: parameters, buffers and
gradients; `requires_grad` flags and train/eval modes; the optimizer's state and
hyper-parameters; the torch, CUDA, numpy and Python RNG states; the random generators the
data loaders, their samplers and datasets hold (torch, numpy or Python ones, which fix the
next shuffle; see `loader_rngs`); and the live iterators of loaders with
persistent workers, set aside so that their workers serve no batch meanwhile. Tensors go to
CPU memory by default (never a second GPU copy) or, for models that do not fit twice in RAM,
to one temporary file outside the working directory that is memory-mapped back on restore.
"""

from __future__ import annotations

import copy
import os
import random
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler


def torch_loaders(loader: Any) -> list[DataLoader]:
    """The torch DataLoaders behind `loader`: itself, or those a wrapper holds as attributes
    (lrkit's image BatchLoader keeps one as `.loader`)."""
    if isinstance(loader, DataLoader):
        return [loader]
    inner = vars(loader).values() if hasattr(loader, "__dict__") else ()
    return [value for value in inner if isinstance(value, DataLoader)]


RNG_TYPES = (torch.Generator, np.random.Generator, np.random.RandomState, random.Random)


def loader_rngs(loader: Any) -> list[Any]:
    """Every random generator a loader draws from, deduplicated: torch.Generator, numpy
    Generator / RandomState and random.Random objects held as attributes of the loader, of
    the DataLoaders a wrapper holds, of their dataset, sampler and batch sampler, and of the
    samplers those hold (`batch_sampler.sampler`, a sampler wrapping another, at any depth).
    Each holder is scanned one level deep (`vars()`): an RNG kept inside some other object
    (a list, a custom helper) is not seen, and a sampler whose order depends on such state
    is not restored by the range test."""
    holders: list[Any] = [loader, *torch_loaders(loader)]
    found: dict[int, Any] = {}
    seen: set[int] = set()
    while holders:
        holder = holders.pop(0)
        if holder is None or id(holder) in seen or not hasattr(holder, "__dict__"):
            continue
        seen.add(id(holder))
        for value in vars(holder).values():
            if isinstance(value, RNG_TYPES):
                found.setdefault(id(value), value)
            elif isinstance(value, (Sampler, Dataset)) or (
                isinstance(holder, DataLoader)
                and any(value is getattr(holder, name) for name in ("sampler", "batch_sampler"))
            ):  # a custom (batch) sampler need not subclass Sampler
                holders.append(value)
    return list(found.values())


def loader_generators(loader: Any) -> list[torch.Generator]:
    """The torch.Generators among `loader_rngs(loader)`: the shuffle order and worker seeds
    (`generator`), a sampler's own, and a wrapper's `worker_generator` (the image
    BatchLoader's)."""
    return [rng for rng in loader_rngs(loader) if isinstance(rng, torch.Generator)]


def rng_state(rng: Any) -> Any:
    """A copy of the state of one of `RNG_TYPES`."""
    if isinstance(rng, torch.Generator):
        return rng.get_state()
    if isinstance(rng, np.random.Generator):
        return copy.deepcopy(rng.bit_generator.state)
    if isinstance(rng, np.random.RandomState):
        return rng.get_state()
    return rng.getstate()


def set_rng_state(rng: Any, state: Any) -> None:
    """Put back a state taken by `rng_state`."""
    if isinstance(rng, torch.Generator):
        rng.set_state(state)
    elif isinstance(rng, np.random.Generator):
        rng.bit_generator.state = state
    elif isinstance(rng, np.random.RandomState):
        rng.set_state(state)
    else:
        rng.setstate(state)


@dataclass
class RandomStates:
    """The torch, CUDA, numpy and Python RNG states and those of the given generators (any of
    `RNG_TYPES`)."""

    torch_cpu: torch.Tensor
    torch_cuda: list[torch.Tensor] | None
    numpy: Any
    python: Any
    generators: list[tuple[Any, Any]]

    @classmethod
    def capture(cls, generators: Iterable[Any]) -> RandomStates:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        return cls(
            torch_cpu=torch.get_rng_state(),
            torch_cuda=cuda,
            numpy=np.random.get_state(),
            python=random.getstate(),
            generators=[(g, rng_state(g)) for g in generators],
        )

    def restore(self) -> None:
        torch.set_rng_state(self.torch_cpu)
        if self.torch_cuda is not None:
            torch.cuda.set_rng_state_all(self.torch_cuda)
        np.random.set_state(self.numpy)
        random.setstate(self.python)
        for generator, state in self.generators:
            set_rng_state(generator, state)


@dataclass
class LoaderStates:
    """Everything iterating some loaders changes, and how to put it back.

    The RNGs (global ones and every loader generator; see `loader_rngs`) and the live
    iterator of each DataLoader with persistent workers. That iterator is set aside at capture:
    its worker processes keep RNG states of their own (augmentation drawn in `__getitem__`)
    that no snapshot can reach, so they must not serve any batch in between. Iterating the
    loader meanwhile opens fresh workers, which `restore` shuts down before it puts the live
    iterator back, so the next epoch continues exactly where it would have without the detour.
    """

    random_states: RandomStates
    set_aside: list[tuple[DataLoader, Any]]  # (persistent DataLoader, its iterator or None)

    @classmethod
    def capture(cls, loaders: Iterable[Any]) -> LoaderStates:
        generators: dict[int, Any] = {}
        persistent: dict[int, DataLoader] = {}
        for loader in loaders:
            if loader is None:
                continue
            for generator in loader_rngs(loader):
                generators.setdefault(id(generator), generator)
            for inner in torch_loaders(loader):
                if inner.persistent_workers:
                    persistent.setdefault(id(inner), inner)
        set_aside = []
        for inner in persistent.values():
            set_aside.append((inner, inner._iterator))  # DataLoader keeps it in `_iterator`
            inner._iterator = None
        return cls(RandomStates.capture(generators.values()), set_aside)

    def restore(self, keep: bool = False) -> None:
        """Put the RNG states back and stop the workers opened since the capture; the live
        iterators go back to their loaders unless `keep` (to restore the same state again)."""
        self.random_states.restore()
        for loader, iterator in self.set_aside:
            opened = loader._iterator
            if opened is not None and opened is not iterator:
                opened._shutdown_workers()
            loader._iterator = None if keep else iterator


class _TensorStore:
    """Named tensors kept as CPU copies, or in one temporary file."""

    def __init__(self, tensors: dict[str, torch.Tensor], to_disk: bool) -> None:
        self.path: str | None = None
        self.tensors: dict[str, torch.Tensor] = {}
        if to_disk:
            handle, self.path = tempfile.mkstemp(prefix="lrkit-snapshot-", suffix=".pt")
            os.close(handle)
            torch.save({name: t.detach() for name, t in tensors.items()}, self.path)
        else:
            self.tensors = {name: t.detach().to("cpu", copy=True) for name, t in tensors.items()}

    def load(self) -> dict[str, torch.Tensor]:
        if self.path is None:
            return self.tensors
        return torch.load(self.path, map_location="cpu", mmap=True, weights_only=True)

    def discard(self) -> None:
        self.tensors = {}
        if self.path is not None and os.path.exists(self.path):
            os.remove(self.path)
        self.path = None


@dataclass
class _OptimizerMeta:
    hyper: list[dict[str, Any]]  # every param group's settings except its params
    state_keys: dict[int, dict[str, Any]]  # param index -> {key: non-tensor value or tensor spec}


@dataclass
class TrainingSnapshot:
    """What `capture` saw; `restore` puts it back (and drops the copy unless asked to keep it)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    store: _TensorStore
    requires_grad: list[bool]
    has_grad: list[bool]
    training: list[bool]
    optimizer_meta: _OptimizerMeta | None
    loader_states: LoaderStates
    tensor_specs: dict[str, tuple[torch.device, torch.dtype]] = field(default_factory=dict)

    @classmethod
    def capture(
        cls,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        loaders: Iterable[Any] = (),
        to_disk: bool = False,
    ) -> TrainingSnapshot:
        """Copy the state of `model`, `optimizer`, the RNGs and the loaders' generators."""
        tensors: dict[str, torch.Tensor] = {}
        params = _all_params(model, optimizer)
        for index, param in enumerate(params):
            tensors[f"param.{index}"] = param
            if param.grad is not None:
                tensors[f"grad.{index}"] = param.grad
        for index, buffer in enumerate(model.buffers()):
            tensors[f"buffer.{index}"] = buffer

        optimizer_meta = None
        specs: dict[str, tuple[torch.device, torch.dtype]] = {}
        if optimizer is not None:
            optimizer_meta, optimizer_tensors = _capture_optimizer(optimizer)
            tensors.update(optimizer_tensors)
            specs = {name: (t.device, t.dtype) for name, t in optimizer_tensors.items()}

        return cls(
            model=model,
            optimizer=optimizer,
            store=_TensorStore(tensors, to_disk),
            requires_grad=[p.requires_grad for p in params],
            has_grad=[p.grad is not None for p in params],
            training=[m.training for m in model.modules()],
            optimizer_meta=optimizer_meta,
            loader_states=LoaderStates.capture(loaders),
            tensor_specs=specs,
        )

    @torch.no_grad()
    def restore(self, keep: bool = False) -> None:
        """Write every saved value back in place; parameters keep their identity. The copy is
        discarded afterwards unless `keep` (to restore the same state again later)."""
        saved = self.store.load()
        params = _all_params(self.model, self.optimizer)
        for index, param in enumerate(params):
            param.copy_(saved[f"param.{index}"])
            param.requires_grad_(self.requires_grad[index])
            if self.has_grad[index]:
                param.grad = saved[f"grad.{index}"].to(param.device, copy=True)
            else:
                param.grad = None
        for index, buffer in enumerate(self.model.buffers()):
            buffer.copy_(saved[f"buffer.{index}"])
        for module, training in zip(self.model.modules(), self.training, strict=True):
            module.training = training
        if self.optimizer is not None and self.optimizer_meta is not None:
            _restore_optimizer(self.optimizer, self.optimizer_meta, saved, self.tensor_specs)
        self.loader_states.restore(keep)
        if not keep:
            self.store.discard()


def _all_params(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> list[torch.Tensor]:
    """The model's parameters, then any the optimizer trains outside the model (a learnable
    loss weight, class centres, a temperature), each once."""
    params = list(model.parameters())
    seen = {id(p) for p in params}
    for param in optimizer_params(optimizer) if optimizer is not None else []:
        if id(param) not in seen:
            seen.add(id(param))
            params.append(param)
    return params


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every parameter of every param group, in order."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def _capture_optimizer(optimizer: torch.optim.Optimizer) -> tuple:
    hyper = [
        copy.deepcopy({key: value for key, value in group.items() if key != "params"})
        for group in optimizer.param_groups
    ]
    tensors: dict[str, torch.Tensor] = {}
    state_keys: dict[int, dict[str, Any]] = {}
    for index, param in enumerate(optimizer_params(optimizer)):
        if param not in optimizer.state:
            continue
        state_keys[index] = {}
        for key, value in optimizer.state[param].items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
                state_keys[index][key] = torch.Tensor  # marker: the value is in the store
            else:
                state_keys[index][key] = copy.deepcopy(value)
    return _OptimizerMeta(hyper=hyper, state_keys=state_keys), tensors


def _restore_optimizer(
    optimizer: torch.optim.Optimizer,
    meta: _OptimizerMeta,
    saved: dict[str, torch.Tensor],
    specs: dict[str, tuple[torch.device, torch.dtype]],
) -> None:
    for group, hyper in zip(optimizer.param_groups, meta.hyper, strict=True):
        group.update(copy.deepcopy(hyper))
    params = optimizer_params(optimizer)
    state: defaultdict[torch.Tensor, dict[str, Any]] = defaultdict(dict)
    for index, keys in meta.state_keys.items():
        current = optimizer.state.get(params[index], {})
        for key, value in keys.items():
            if value is torch.Tensor:
                name = f"optim.{index}.{key}"
                value = _into(current.get(key), saved[name], *specs[name])
            state[params[index]][key] = value
    optimizer.state = state


def _into(
    current: Any, saved: torch.Tensor, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """`saved` copied into `current` when that tensor fits (no second copy of the optimizer
    state on the device while restoring), else into a new tensor on `device`."""
    fits = (
        isinstance(current, torch.Tensor)
        and current.shape == saved.shape
        and current.dtype == dtype
        and current.device == device
    )
    if fits:
        return current.copy_(saved)
    return saved.to(device=device, dtype=dtype, copy=True)
