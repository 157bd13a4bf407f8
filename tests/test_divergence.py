"""The range test's divergence stop: blind to where the loss level sits (a constant added to
the loss changes nothing), deaf to start-of-curve noise, quick on a real blow-up."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import lrkit
from lrkit.finder import has_diverged

torch.set_num_threads(1)


def smooth(raw, beta=0.98) -> np.ndarray:
    """The range test's debiased exponential moving average."""
    average, out = 0.0, []
    for i, value in enumerate(raw):
        average = beta * average + (1 - beta) * value
        out.append(average / (1 - beta ** (i + 1)))
    return np.array(out)


def first_stop(raw, div_thresh=4.0) -> int | None:
    """How many points the test keeps before it stops as diverged, None if it never does."""
    raw = np.asarray(raw, dtype=np.float64)
    losses = smooth(raw)
    for n in range(1, len(raw) + 1):
        if has_diverged(raw[:n], losses[:n], div_thresh):
            return n
    return None


def regression_range_test(shift: float):
    """Linear regression with a per-batch MSE around 10 and batch noise of several units."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(800, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-1.0], [0.5], [2.0]]) + 10**0.5 * torch.randn(800, 1, generator=g)
    loader = DataLoader(
        TensorDataset(x, y), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def loss_fn(prediction, target):
        return F.mse_loss(prediction, target) + shift

    return lrkit.lr_find(
        model, loader, loss_fn, optimizer, start_lr=1e-4, end_lr=10, num_it=100, progress=False
    )


def test_a_loss_near_zero_runs_as_far_as_the_same_loss_shifted_up():
    """Issue 10 item 7: shifted by -10 the test stopped as diverged after 3 of 100 steps."""
    runs = {shift: regression_range_test(shift) for shift in (0.0, -10.0, 100.0)}
    lengths = {shift: len(res.lrs) for shift, res in runs.items()}
    assert len(set(lengths.values())) == 1, lengths
    assert lengths[-10.0] >= 80
    assert runs[-10.0].stop_reason == "diverged"  # it does blow up at the end of the sweep
    valley = runs[-10.0].suggest("valley")
    assert valley == pytest.approx(runs[0.0].suggest("valley"), rel=1e-6)


def test_start_of_curve_noise_never_stops_the_test():
    rng = np.random.default_rng(7)
    for _ in range(40):  # flat curves around zero: noise is all there is
        gaussian = 5.0 * rng.standard_normal(60)
        heavy_tailed = rng.standard_t(2, 60)  # now and then an outlier batch
        assert first_stop(gaussian) is None
        assert first_stop(heavy_tailed) is None


def test_a_blow_up_stops_within_a_few_steps():
    rng = np.random.default_rng(3)
    flat_then_up = np.concatenate([10 + 5 * rng.standard_normal(60), 10 + 5 * 1.5 ** np.arange(40)])
    stop = first_stop(flat_then_up)
    assert stop is not None and 60 < stop <= 75
    # the usual shape: down from the untrained loss, a minimum, then up fast
    curve = np.concatenate([np.linspace(2.3, 0.5, 60), 0.5 + 0.05 * 1.4 ** np.arange(40)])
    curve += 0.1 * rng.standard_normal(100)
    stop = first_stop(curve)
    assert stop is not None and 60 < stop <= 85
    assert first_stop(curve, div_thresh=2.0) < stop < first_stop(curve, div_thresh=8.0)


def test_the_rule_sees_only_the_shape_of_the_curve():
    rng = np.random.default_rng(11)
    for _ in range(20):
        raw = np.concatenate([np.linspace(3, 1, 50), 1 + 0.01 * 1.3 ** np.arange(30)])
        raw += 0.2 * rng.standard_normal(80)
        losses = smooth(raw)
        for n in range(1, 81, 7):
            plain = has_diverged(raw[:n], losses[:n], 4.0)
            assert has_diverged(raw[:n] - 50.0, losses[:n] - 50.0, 4.0) == plain
            assert has_diverged(raw[:n] * 1000.0, losses[:n] * 1000.0, 4.0) == plain
