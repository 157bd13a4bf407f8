"""The range test: its schedule and smoothing, its stops, and that it leaves no trace."""

import glob
import math
import os
import random
import tempfile

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import lrkit
from lrkit.finder import has_diverged, sweep_lr

torch.set_num_threads(1)


def make_data(n=512, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=generator)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 0.5).long()
    return TensorDataset(x, y)


def make_loader(dataset, bs=32, seed=1, shuffle=True):
    return DataLoader(
        dataset, batch_size=bs, shuffle=shuffle, generator=torch.Generator().manual_seed(seed)
    )


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 3),
    )


def train_one_epoch(model, loader, optimizer):
    """A bare loop that draws from every RNG a real run uses (dropout, shuffle)."""
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def everything(model, optimizer, loader):
    """Every piece of state the range test may touch, as comparable values."""
    return {
        "params": [p.detach().clone() for p in model.parameters()],
        "buffers": [b.detach().clone() for b in model.buffers()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "opt_groups": [
            {k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups
        ],
        "opt_state": {
            i: {k: v.clone() if torch.is_tensor(v) else v for k, v in optimizer.state[p].items()}
            for i, p in enumerate(model.parameters())
            if p in optimizer.state
        },
        "loader_gen": loader.generator.get_state(),
    }


def assert_same(before, after):
    for key in ("params", "buffers"):
        assert all(torch.equal(a, b) for a, b in zip(before[key], after[key], strict=True)), key
    for a, b in zip(before["grads"], after["grads"], strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    assert before["requires_grad"] == after["requires_grad"]
    assert before["training"] == after["training"]
    assert before["opt_groups"] == after["opt_groups"]
    assert before["opt_state"].keys() == after["opt_state"].keys()
    for index, state in before["opt_state"].items():
        for key, value in state.items():
            other = after["opt_state"][index][key]
            assert torch.equal(value, other) if torch.is_tensor(value) else value == other
    assert torch.equal(before["loader_gen"], after["loader_gen"])


def next_random_numbers():
    return torch.rand(3), np.random.rand(3), random.random()


@pytest.fixture
def setup():
    """A model with BatchNorm and dropout, an AdamW that has state, a shuffling loader."""
    model = make_model()
    loader = make_loader(make_data())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train_one_epoch(model, loader, optimizer)  # optimizer state and grads exist now
    model[1].eval()  # a submodule in eval mode must stay so
    model[0].bias.requires_grad_(False)  # a frozen parameter must stay frozen
    return model, loader, optimizer


def test_schedule_exponential_and_linear():
    config = lrkit.RangeTestConfig(start_lr=1e-7, end_lr=10, num_it=100)
    assert [sweep_lr(i, config) for i in (0, 50)] == pytest.approx([1e-7, 1e-7 * 1e8**0.5])
    linear = lrkit.RangeTestConfig(start_lr=0.0001, end_lr=1.0, num_it=10, mode="linear")
    assert sweep_lr(5, linear) == pytest.approx(0.0001 + 0.9999 * 0.5)


def test_recorded_lrs_follow_the_schedule_and_losses_are_debiased_ema(setup):
    model, loader, optimizer = setup
    res = lrkit.lr_find(model, loader, F.cross_entropy, optimizer, num_it=30, div_thresh=None)
    steps = np.arange(30)
    np.testing.assert_allclose(res.lrs, 1e-7 * (1e8) ** (steps / 30), rtol=1e-12)
    average, expected = 0.0, []
    for i, raw in enumerate(res.raw_losses):
        average = 0.98 * average + 0.02 * raw
        expected.append(average / (1 - 0.98 ** (i + 1)))
    np.testing.assert_allclose(res.losses, expected, rtol=1e-12)
    assert res.stop_reason == "completed"


def test_no_trace_on_model_optimizer_rngs_and_loader(setup):
    model, loader, optimizer = setup
    before = everything(model, optimizer, loader)
    state = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    expected_next = next_random_numbers()
    torch.random.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])

    res = lrkit.lr_find(model, loader, F.cross_entropy, optimizer, num_it=40)
    assert len(res.lrs) > 0
    assert_same(before, everything(model, optimizer, loader))
    got = next_random_numbers()
    assert torch.equal(got[0], expected_next[0])
    assert np.array_equal(got[1], expected_next[1]) and got[2] == expected_next[2]


@pytest.mark.parametrize("snapshot", ["memory", "disk"])
def test_training_after_lr_find_is_bit_identical(snapshot, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written to the working directory
    temp_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "lrkit-snapshot-*")))
    runs = []
    for with_finder in (False, True):
        model = make_model(seed=3)
        loader = make_loader(make_data(seed=4), seed=5)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        torch.manual_seed(11)
        if with_finder:
            lrkit.lr_find(model, loader, F.cross_entropy, optimizer, num_it=25, snapshot=snapshot)
        train_one_epoch(model, loader, optimizer)
        train_one_epoch(model, loader, optimizer)
        runs.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
    assert list(tmp_path.iterdir()) == []
    temp_after = set(glob.glob(os.path.join(tempfile.gettempdir(), "lrkit-snapshot-*")))
    assert temp_after == temp_before


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupted_range_test_restores_everything(setup, error):
    model, loader, optimizer = setup
    before = everything(model, optimizer, loader)
    calls = []

    def loss_fn(prediction, target):
        calls.append(1)
        if len(calls) == 7:
            raise error("stop here")
        return F.cross_entropy(prediction, target)

    with pytest.raises(error, match="stop here"):
        lrkit.lr_find(model, loader, loss_fn, optimizer, num_it=50)
    assert_same(before, everything(model, optimizer, loader))


def test_nan_loss_stops_and_is_not_kept(setup):
    model, loader, optimizer = setup
    before = everything(model, optimizer, loader)
    calls = []

    def loss_fn(prediction, target):
        calls.append(1)
        loss = F.cross_entropy(prediction, target)
        return loss * math.nan if len(calls) == 13 else loss

    res = lrkit.lr_find(model, loader, loss_fn, optimizer, num_it=50)
    assert res.stop_reason == "non-finite loss"
    assert len(res.lrs) == 12 and np.isfinite(res.raw_losses).all()
    assert_same(before, everything(model, optimizer, loader))


def test_divergence_stops_at_the_first_point_the_rule_calls_a_blow_up(setup):
    model, loader, optimizer = setup
    res = lrkit.lr_find(model, loader, F.cross_entropy, optimizer, start_lr=1e-3, end_lr=1e4)
    assert res.stop_reason == "diverged" and len(res.lrs) < 100
    n = len(res.lrs)
    assert has_diverged(res.raw_losses, res.losses, 4.0)
    assert not any(has_diverged(res.raw_losses[:i], res.losses[:i], 4.0) for i in range(1, n))
    assert res.losses[-1] > 2 * res.losses.min()  # a real blow-up, not a wobble
    shifted = lrkit.lr_find(
        model, loader, lambda p, t: F.cross_entropy(p, t) - 10.0, optimizer, 1e-3, 1e4
    )
    assert len(shifted.lrs) == n  # where the loss level sits does not matter


def test_param_groups_keep_their_ratios(setup):
    model, loader, _ = setup
    params = list(model.parameters())
    optimizer = torch.optim.SGD(
        [{"params": params[:4], "lr": 1e-4}, {"params": params[4:]}], lr=1e-2
    )
    seen = []

    def loss_fn(prediction, target):
        seen.append([g["lr"] for g in optimizer.param_groups])
        return F.cross_entropy(prediction, target)

    res = lrkit.lr_find(model, loader, loss_fn, optimizer, num_it=20, div_thresh=None)
    seen = np.array(seen)
    np.testing.assert_allclose(seen[:, 0] / seen[:, 1], 0.01, rtol=1e-12)
    np.testing.assert_allclose(seen[:, 1], res.lrs, rtol=1e-12)
    np.testing.assert_allclose(res.group_lrs[:, 0], res.lrs / 100, rtol=1e-12)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 1e-2]


def test_short_loader_is_cycled():
    model = make_model()
    loader = make_loader(make_data(n=96), bs=32)  # 3 batches
    res = lrkit.lr_find(model, loader, F.cross_entropy, num_it=20, div_thresh=None)
    assert len(res.lrs) == 20


def test_gradient_accumulation_equals_a_bigger_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))  # no BatchNorm: halves add up exactly
    data = make_data(n=640)
    small = make_loader(data, bs=16, shuffle=False)
    big = make_loader(data, bs=32, shuffle=False)
    accumulated = lrkit.lr_find(model, small, F.cross_entropy, num_it=12, accum_steps=2)
    plain = lrkit.lr_find(model, big, F.cross_entropy, num_it=12)
    np.testing.assert_allclose(accumulated.raw_losses, plain.raw_losses, rtol=1e-5)


def test_validation_mode_measures_in_eval_mode_on_a_fixed_set(setup):
    model, loader, optimizer = setup
    modes = []

    def loss_fn(prediction, target):
        modes.append(model.training)
        return F.cross_entropy(prediction, target)

    val_loader = make_loader(make_data(n=64, seed=9), bs=32, shuffle=False)
    res = lrkit.lr_find(
        model, loader, loss_fn, optimizer, num_it=10, val_loader=val_loader, val_batches=2
    )
    assert len(res.lrs) == 10
    assert modes == [True, False, False] * 10  # one train batch, then the 2 fixed val batches


def test_dict_batches_through_a_forward_hook():
    model = make_model()
    data = make_data(n=128)
    batches = [{"image": x, "target": y} for x, y in make_loader(data, bs=32)]
    res = lrkit.lr_find(model, batches, F.cross_entropy, num_it=10, div_thresh=None)
    assert len(res.lrs) == 10

    def forward(model, batch):
        return model(batch["pixels"]), batch["label"]

    renamed = [{"pixels": b["image"], "label": b["target"]} for b in batches]
    res = lrkit.lr_find(model, renamed, F.cross_entropy, num_it=10, forward=forward)
    assert len(res.lrs) == 10


def test_bf16_autocast_on_cpu(setup):
    model, loader, optimizer = setup
    res = lrkit.lr_find(
        model, loader, F.cross_entropy, optimizer, num_it=12, autocast_dtype=torch.bfloat16
    )
    assert np.isfinite(res.raw_losses).all()


def test_default_optimizer_trains_only_trainable_parameters():
    model = make_model()
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    seen = []

    def loss_fn(prediction, target):
        seen.append(model[0].weight.detach().clone())
        return F.cross_entropy(prediction, target)

    lrkit.lr_find(model, make_loader(make_data()), loss_fn, num_it=10)
    assert all(torch.equal(w, frozen) for w in seen)


# -- bad input: a clear error before any step, nothing changed ----------------------------------
def test_bad_settings_are_refused_before_anything_runs(setup):
    model, loader, optimizer = setup
    before = everything(model, optimizer, loader)
    cases = [
        (dict(start_lr=1.0, end_lr=0.1), "below end_lr"),
        (dict(num_it=5), "num_it=5"),
        (dict(mode="cosine"), "'cosine'"),
        (dict(snapshot="cloud"), "'cloud'"),
        (dict(accum_steps=0), "accum_steps"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            lrkit.lr_find(model, loader, F.cross_entropy, optimizer, **kwargs)
    assert_same(before, everything(model, optimizer, loader))


def test_empty_loader_is_refused():
    model = make_model()
    empty = DataLoader(TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0).long()), batch_size=4)
    with pytest.raises(ValueError, match="empty"):
        lrkit.lr_find(model, empty, F.cross_entropy)
    with pytest.raises(ValueError, match="one-shot iterator"):
        lrkit.lr_find(model, iter(()), F.cross_entropy)

    class NoBatches:  # re-iterable, no len, yields nothing
        def __iter__(self):
            return iter(())

    with pytest.raises(ValueError, match="no batches"):
        lrkit.lr_find(model, NoBatches(), F.cross_entropy)


def test_model_without_trainable_parameters_is_refused():
    model = make_model().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        lrkit.lr_find(model, make_loader(make_data()), F.cross_entropy)


def test_loss_that_is_not_a_scalar_is_refused_and_nothing_changes(setup):
    model, loader, optimizer = setup
    before = everything(model, optimizer, loader)
    unreduced = nn.CrossEntropyLoss(reduction="none")
    with pytest.raises(ValueError, match=r"scalar.*\(32,\)"):
        lrkit.lr_find(model, loader, unreduced, optimizer)
    assert_same(before, everything(model, optimizer, loader))


# -- distributed: every rank stops together and agrees ----------------------------------------
def _rank_main(rank, world_size, port, out_dir, with_val=False):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        model = make_model(seed=0)
        loader = make_loader(make_data(n=256, seed=rank), seed=rank)  # each rank its own shard
        # with validation, each rank measures its own batches: the loss must be shared too
        val = make_loader(make_data(n=64, seed=10 + rank), seed=rank) if with_val else None
        res = lrkit.lr_find(model, loader, F.cross_entropy, start_lr=1e-4, end_lr=1e3, num_it=40,
                            val_loader=val)  # fmt: skip
        res.save(os.path.join(out_dir, f"rank{rank}.json"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("with_val", [False, True], ids=["train-loss", "valid-loss"])
def test_distributed_ranks_stop_at_the_same_step_and_agree(tmp_path, with_val):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_rank_main, args=(2, port, str(tmp_path), with_val), nprocs=2, join=True)
    first = lrkit.LRFindResult.load(tmp_path / "rank0.json")
    second = lrkit.LRFindResult.load(tmp_path / "rank1.json")
    assert first.stop_reason == second.stop_reason
    assert with_val or first.stop_reason == "diverged"
    np.testing.assert_array_equal(first.losses, second.losses)
    assert first.suggestions == second.suggestions


# -- repeats: the spread of each rule over data orders ----------------------------------------
def test_repeated_range_tests_show_a_spread_and_leave_no_trace(setup, tmp_path):
    model, loader, optimizer = setup
    before = everything(model, optimizer, loader)
    torch.manual_seed(0)
    single = lrkit.lr_find(model, loader, F.cross_entropy, optimizer, num_it=30)
    torch.manual_seed(0)
    rep = lrkit.lr_find_repeated(model, loader, F.cross_entropy, optimizer, repeats=3, num_it=30)
    next_draw = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(next_draw, torch.rand(3))  # the global RNG is back where it was
    assert_same(before, everything(model, optimizer, loader))
    assert len(rep.runs) == 3
    np.testing.assert_array_equal(rep.runs[0].losses, single.losses)  # run 0 = plain lr_find
    assert not np.array_equal(rep.runs[1].raw_losses, rep.runs[2].raw_losses)
    for name, lr in rep.suggestions.items():
        values = [run.suggestions[name] for run in rep.runs]
        if not np.isfinite(values).all():  # only auto: no lr from a curve it cannot read
            assert name == "auto" and np.isnan(lr) and any(run.auto_problems() for run in rep.runs)
            continue
        assert min(values) <= lr <= max(values)
        assert rep.spread[name] == pytest.approx(np.log10(max(values) / min(values)))
    assert "spread" in repr(rep)
    rep.plot(tmp_path / "rep.png")
    assert (tmp_path / "rep.png").stat().st_size > 1000


def test_repeats_below_two_are_refused(setup):
    model, loader, optimizer = setup
    with pytest.raises(ValueError, match="repeats"):
        lrkit.lr_find_repeated(model, loader, F.cross_entropy, optimizer, repeats=1)


def test_a_loss_below_zero_does_not_stop_the_test_at_once():
    # A log-likelihood shifted below zero: "4 x best" must be measured from the best loss.
    model = make_model()

    def negative_loss(prediction, target):
        return F.cross_entropy(prediction, target) - 10.0

    loader = make_loader(make_data())
    res = lrkit.lr_find(model, loader, negative_loss, start_lr=1e-6, end_lr=1e-3, num_it=30)
    assert res.stop_reason == "completed" and len(res.lrs) == 30
    assert (res.losses < 0).all()


def test_parameters_the_optimizer_trains_outside_the_model_are_restored(setup):
    model, loader, _ = setup
    temperature = nn.Parameter(torch.tensor(1.0))  # e.g. a learnable loss temperature
    optimizer = torch.optim.SGD([{"params": model.parameters()}, {"params": [temperature]}], lr=0.1)

    def loss_fn(prediction, target):
        return F.cross_entropy(prediction * temperature, target)

    lrkit.lr_find(model, loader, loss_fn, optimizer, num_it=20, div_thresh=None)
    assert temperature.item() == 1.0 and temperature.grad is None
