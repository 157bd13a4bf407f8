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


def easy_and_hard_batches(seed: int, p_hard: float, hard: float, spread: float) -> np.ndarray:
    """A trendless curve: most batches 0.1 +- spread, a fraction `p_hard` offset by `hard`."""
    rng = np.random.default_rng(seed)
    return 0.1 + spread * rng.standard_normal(100) + np.where(rng.random(100) < p_hard, hard, 0.0)


@pytest.mark.parametrize(
    "p_hard, hard, spread", [(0.1, 2.9, 0.0), (0.03, 4.8, 0.0), (0.1, 3.0, 0.02), (0.2, 2.0, 0.02)]
)
def test_a_few_hard_batches_on_a_flat_curve_never_stop_the_test(p_hard, hard, spread):
    """Outside testing: with the noise taken from step-to-step changes (near 0 when most batches
    are alike) 106, 174, 70 and 14 of 200 such curves stopped as diverged."""
    stops = [first_stop(easy_and_hard_batches(seed, p_hard, hard, spread)) for seed in range(200)]
    assert [stop for stop in stops if stop is not None] == []


def test_first_points_lower_than_the_rest_do_not_stop_the_test():
    rng = np.random.default_rng(0)
    down = 2.3 - 1.8 * (1 - np.exp(-np.arange(60) / 15)) + 0.02 * rng.standard_normal(60)
    assert first_stop(np.concatenate([[0.1, 0.1, 0.1], down])) is None  # stopped at 11


def test_spikes_at_the_start_do_not_delay_the_stop_of_a_blow_up():
    """Three huge first batches set the old rule's "fall": a x1.2/step blow-up from 0.5 stopped
    only at a raw loss of 1700."""
    rng = np.random.default_rng(0)
    down = 2.3 - 1.8 * (1 - np.exp(-np.arange(60) / 15)) + 0.02 * rng.standard_normal(60)
    raw = np.concatenate([[50.0, 80.0, 60.0], down, down[-1] * 1.2 ** np.arange(1, 200)])
    assert first_stop(raw[:63]) is None
    stop = first_stop(raw)
    assert stop is not None and raw[stop - 1] < 300


def test_a_flat_range_test_with_hard_batches_runs_to_the_end():
    """A real range test at lrs that change nothing (1e-9..1e-8), ~10% of batches hard."""
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        hard = (torch.rand(100, generator=g) < 0.1).float()
        batches = [
            (torch.randn(16, 4, generator=g), 3.0 * h + 0.05 * torch.randn(16, generator=g))
            for h in hard
        ]
        model = nn.Linear(4, 1)
        nn.init.zeros_(model.weight)
        nn.init.zeros_(model.bias)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-9)
        result = lrkit.lr_find(
            model,
            batches,
            lambda out, target: ((out.squeeze(1) - target) ** 2).mean(),
            optimizer,
            start_lr=1e-9,
            end_lr=1e-8,
            num_it=100,
            progress=False,
        )
        assert (result.stop_reason, len(result.losses)) == ("completed", 100), seed
