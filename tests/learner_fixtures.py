"""Tiny models and synthetic data for the Learner tests (made here, nothing downloaded)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lrkit import DataLoaders, register_model
from lrkit.learner import Learner

N_IN, N_HIDDEN, N_OUT = 8, 16, 3


@register_model
class TinyNet(nn.Module):
    """body (Linear, BatchNorm, ReLU) + head (Linear); registered, so its exports load back."""

    def __init__(self, n_in: int = N_IN, n_hidden: int = N_HIDDEN, n_out: int = N_OUT) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, n_hidden), nn.BatchNorm1d(n_hidden), nn.ReLU())
        self.head = nn.Linear(n_hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def body_head(model: TinyNet) -> list[nn.Module]:
    """Two layer groups: body, head."""
    return [model.body, model.head]


def three_groups(model: TinyNet) -> list[nn.Module]:
    """Three layer groups: first linear, batchnorm, head."""
    return [model.body[0], model.body[1], model.head]


def make_data(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (n, N_IN) and labels (n,) from a fixed random linear rule, so they are learnable."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_IN, generator=gen)
    w = torch.randn(N_IN, N_OUT, generator=gen)
    return x, (x @ w).argmax(dim=1)


def make_dls(
    bs: int = 16, n_train: int = 96, n_valid: int = 32, shuffle: bool = True
) -> DataLoaders:
    """Train (shuffled with its own seeded generator) and valid loaders over synthetic data."""
    x, y = make_data(n_train + n_valid)
    train = DataLoader(
        TensorDataset(x[:n_train], y[:n_train]),
        batch_size=bs,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(1),
    )
    valid = DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=bs)
    return DataLoaders(train, valid, vocab=["a", "b", "c"])


def make_learner(splitter=body_head, dls: DataLoaders | None = None, **kwargs) -> Learner:
    """A TinyNet Learner on CPU without a progress bar, seeded."""
    torch.manual_seed(0)
    kwargs.setdefault("progress", False)
    return Learner(
        TinyNet(),
        dls if dls is not None else make_dls(),
        nn.CrossEntropyLoss(),
        splitter=splitter,
        device="cpu",
        **kwargs,
    )


def clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter and buffer."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
