"""Gradient accumulation: every optimizer step uses the mean over the batches in its window,
checked against SGD updates computed by hand, in the Learner and the range test alike."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import lrkit
from lrkit.learner import Learner
from lrkit.step import window_size


def batches_of(n_batches: int, bs: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(n_batches)
    x = torch.randn(n_batches * bs, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n_batches * bs, generator=g)
    return [(x[i : i + bs], y[i : i + bs, None]) for i in range(0, n_batches * bs, bs)]


def by_hand(model: nn.Linear, windows: list[list[tuple]], lr: float) -> list[torch.Tensor]:
    """Plain SGD, one step per window on the mean of its batches' gradients."""
    w, b = model.weight.detach().clone(), model.bias.detach().clone()
    for window in windows:
        gw, gb = torch.zeros_like(w), torch.zeros_like(b)
        for x, y in window:
            err = x @ w.T + b - y  # (bs, 1); MSE = mean(err^2)
            gw += 2 * (err * x).mean(0, keepdim=True) / len(window)
            gb += 2 * err.mean(0) / len(window)
        w, b = w - lr * gw, b - lr * gb
    return [w, b]


def fit_learner(batches, accum_steps: int, lr: float = 0.1) -> tuple[list, nn.Linear]:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    start = nn.Linear(3, 1)
    start.load_state_dict(model.state_dict())
    learn = Learner(
        model,
        (batches, None),
        F.mse_loss,
        opt=lambda groups: torch.optim.SGD(groups, lr=lr),
        device="cpu",
        progress=False,
        accum_steps=accum_steps,
    )
    with pytest.warns(UserWarning, match="no validation data"):
        learn.fit(1, lr)
    return [model.weight.detach(), model.bias.detach()], start


@pytest.mark.parametrize(
    ("n_batches", "accum_steps", "windows"),
    [
        (3, 2, [[0, 1], [2]]),  # the last window holds one batch: its full gradient
        (1, 2, [[0]]),  # fewer batches than accum_steps: one unscaled step
        (5, 3, [[0, 1, 2], [3, 4]]),
        (4, 2, [[0, 1], [2, 3]]),
    ],
)
def test_learner_steps_on_the_mean_over_each_window(n_batches, accum_steps, windows):
    batches = batches_of(n_batches)
    got, start = fit_learner(batches, accum_steps)
    expected = by_hand(start, [[batches[i] for i in window] for window in windows], lr=0.1)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_range_test_steps_on_the_mean_of_accum_steps_batches():
    """The range test cycles its loader, so each window is full, also over a loader of fewer
    batches than accum_steps: with one batch of 4 items and accum_steps 3, every step uses
    that batch's own gradient, the same as without accumulation."""
    ((x, y),) = batches_of(1)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    runs = []
    for accum_steps in (1, 3):
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        res = lrkit.lr_find(
            model, loader, F.mse_loss, opt, num_it=10, accum_steps=accum_steps, progress=False
        )
        runs.append(res.raw_losses)
    torch.testing.assert_close(torch.tensor(runs[1]), torch.tensor(runs[0]), rtol=1e-6, atol=0)


def test_window_sizes():
    assert [window_size(i, 3, 2) for i in range(3)] == [2, 2, 1]
    assert [window_size(i, 7, 3) for i in range(7)] == [3, 3, 3, 3, 3, 3, 1]
    assert [window_size(i, 1, 4) for i in range(1)] == [1]
    assert window_size(10, None, 4) == 4
    with pytest.raises(ValueError, match="accum_steps must be >= 1, got 0"):
        window_size(0, 3, 0)
