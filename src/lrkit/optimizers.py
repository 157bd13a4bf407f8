"""The Learner's optimizer: one param group per layer group, and the hyper-parameters a
schedule sets on every group (learning rate, and momentum as Adam's beta1 or SGD's momentum)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

OptFactory = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]


def make_optimizer(
    spec: str | OptFactory, layer_groups: list[list[nn.Parameter]], lr: float, wd: float
) -> torch.optim.Optimizer:
    """One optimizer param group per layer group, each starting at `lr`.

    `spec` is "adamw", "adam" (fastai's defaults: beta2 0.99, eps 1e-5), "sgd" (momentum 0.9)
    or a factory(groups) -> Optimizer that must keep the groups it is given. Raises ValueError
    for an unknown name or a factory that changes the groups.
    """
    groups = [{"params": params, "lr": lr} for params in layer_groups]
    if callable(spec):
        opt = spec(groups)
        got = [[id(p) for p in group["params"]] for group in opt.param_groups]
        if got != [[id(p) for p in params] for params in layer_groups]:
            raise ValueError(
                f"the optimizer factory must keep the {len(layer_groups)} param groups it is "
                f"given (one per layer group), got {len(got)} groups of sizes "
                f"{[len(g) for g in got]}; build it as factory(groups) -> Optimizer(groups)"
            )
        return opt
    name = spec.lower()
    if name == "adamw":  # fastai's Adam defaults: beta2 0.99, eps 1e-5, decoupled decay
        return torch.optim.AdamW(groups, betas=(0.9, 0.99), eps=1e-5, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-5, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=wd)
    raise ValueError(
        f"unknown optimizer {spec!r}: use 'adamw', 'adam', 'sgd' or a callable "
        "taking the list of param groups"
    )


def momentum_of(opt: torch.optim.Optimizer) -> float | None:
    """The last param group's momentum (Adam's beta1, SGD's momentum), None if it has none."""
    group = opt.param_groups[-1]
    if "betas" in group:
        return float(group["betas"][0])
    return float(group["momentum"]) if "momentum" in group else None


def set_hypers(opt: torch.optim.Optimizer, lrs: list[float], mom: float | None) -> None:
    """One lr per param group; momentum (when not None) on every group that has one."""
    for group, lr in zip(opt.param_groups, lrs, strict=True):
        group["lr"] = lr
        if mom is None:
            continue
        if "betas" in group:
            group["betas"] = (mom, group["betas"][1])
        elif group.get("momentum", 0) > 0:  # plain SGD (momentum 0) stays plain
            group["momentum"] = mom
