"""Range-test corners users hit: persistent workers, batch samplers with their own generator,
the optimizer state restored in place, zero-lr groups, bad num_it, identical repeats."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

import lrkit
from learner_fixtures import make_dls, make_learner
from lrkit import DataLoaders
from test_finder import make_data, make_model, train_one_epoch


def first_epoch_after(loader, model, range_test: bool) -> list[list[int]]:
    """The first epoch's label order, with or without a range test just before it."""
    torch.manual_seed(0)
    if range_test:
        lrkit.lr_find(model, loader, F.cross_entropy, num_it=10, progress=False)
    return [y.tolist() for _x, y in loader]


def test_persistent_workers_shuffle_as_if_no_range_test_ran():
    dataset = make_data(n=96)
    orders = []
    for range_test in (False, True):
        loader = DataLoader(dataset, batch_size=16, shuffle=True, num_workers=2,
                            persistent_workers=True)  # fmt: skip
        orders.append(first_epoch_after(loader, make_model(), range_test))
    assert orders[0] == orders[1]


class ShuffledBatches(Sampler):
    """A batch sampler that shuffles with a generator of its own."""

    def __init__(self, n: int, bs: int, generator: torch.Generator) -> None:
        self.n, self.bs, self.generator = n, bs, generator

    def __len__(self) -> int:
        return self.n // self.bs

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).tolist()
        return iter(order[i : i + self.bs] for i in range(0, len(self) * self.bs, self.bs))


def test_a_batch_samplers_own_generator_is_restored():
    dataset = make_data(n=96)
    orders = []
    for range_test in (False, True):
        sampler = ShuffledBatches(96, 16, torch.Generator().manual_seed(3))
        orders.append(first_epoch_after(DataLoader(dataset, batch_sampler=sampler),
                                        make_model(), range_test))  # fmt: skip
    assert orders[0] == orders[1]


def test_optimizer_state_is_restored_into_its_own_tensors():
    model, dataset = make_model(), make_data(n=64)
    loader = DataLoader(dataset, batch_size=16, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train_one_epoch(model, loader, optimizer)
    before = {id(t): t.clone() for s in optimizer.state.values() for t in s.values()}
    lrkit.lr_find(model, loader, F.cross_entropy, optimizer, num_it=10, progress=False)
    after = [t for s in optimizer.state.values() for t in s.values()]
    assert {id(t) for t in after} == set(before)  # the same tensors: no second copy made
    assert all(torch.equal(before[id(t)], t) for t in after)


def test_a_zero_lr_last_group_stays_zero_and_the_others_keep_sweeping():
    model, loader = make_model(), DataLoader(make_data(n=64), batch_size=16, shuffle=True)
    head, rest = list(model[-1].parameters()), list(model[:-1].parameters())
    optimizer = torch.optim.SGD([{"params": rest, "lr": 1e-3}, {"params": head, "lr": 0.0}])
    res = lrkit.lr_find(model, loader, F.cross_entropy, optimizer, num_it=10, end_lr=1e-2)
    assert [row[1] for row in res.group_lrs] == [0.0] * len(res.lrs)
    assert [row[0] for row in res.group_lrs] == pytest.approx(list(res.lrs))
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 0.0]


def test_num_it_must_be_a_whole_number():
    model, loader = make_model(), DataLoader(make_data(n=64), batch_size=16)
    with pytest.raises(ValueError, match=r"whole number of steps, got 15\.5"):
        lrkit.lr_find(model, loader, F.cross_entropy, num_it=15.5)


def test_use_valid_without_a_validation_loader_is_refused():
    train = make_dls().train
    learn = make_learner(dls=DataLoaders(train, None))
    with pytest.raises(ValueError, match="use_valid=True needs a validation loader"):
        learn.lr_find(use_valid=True)


def test_repeats_over_an_unshuffled_loader_say_their_spread_means_little():
    model, loader = make_model(), DataLoader(make_data(n=64), batch_size=16, shuffle=False)
    with pytest.warns(UserWarning, match="does not shuffle"):
        lrkit.lr_find_repeated(model, loader, F.cross_entropy, repeats=2, num_it=12)
    model[3].p = 0.0  # no dropout either: the runs are identical, and the result says so
    with pytest.warns(UserWarning, match="does not shuffle"):
        rep = lrkit.lr_find_repeated(model, loader, F.cross_entropy, repeats=2, num_it=12)
    assert any("did not change between runs" in note for note in rep.warnings)
