"""Frozen means frozen: with train_bn=False a frozen BatchNorm keeps its statistics (eval mode
while frozen); with train_bn=True (the default) it trains; unfreeze gives training back."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from learner_fixtures import clone_state, make_learner
from lrkit import DataLoaders
from lrkit.layer_groups import eval_mode, norm_layers_within
from lrkit.learner import Learner


def bn_modes_during(learn, action) -> list[bool]:
    """The frozen body BatchNorm's `training` flag at every forward pass made by `action`."""
    modes: list[bool] = []
    handle = learn.model.body[1].register_forward_pre_hook(lambda m, _: modes.append(m.training))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            action()
    finally:
        handle.remove()
    return modes


def body_eval_output(learn) -> torch.Tensor:
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), eval_mode(learn.model):
        return learn.model.body(x)


def test_frozen_bn_keeps_its_statistics_with_train_bn_false():
    learn = make_learner(train_bn=False)
    learn.freeze()
    bn = learn.model.body[1]
    before, output = clone_state(learn.model), body_eval_output(learn)
    assert not bn.training and learn.model.training  # eval from freeze() on
    modes = bn_modes_during(learn, lambda: learn.fit(2, 1e-2))
    assert modes and not any(modes)  # eval at every batch, validation included
    after = clone_state(learn.model)
    for key in ("body.1.running_mean", "body.1.running_var", "body.1.num_batches_tracked"):
        assert torch.equal(before[key], after[key]), key
    assert torch.equal(body_eval_output(learn), output)  # the frozen body did not move
    assert not torch.equal(before["head.weight"], after["head.weight"])  # the head trained
    assert not bn.training and learn.model.training


def test_range_test_and_validate_keep_a_frozen_bn_in_eval():
    learn = make_learner(train_bn=False)
    learn.freeze()
    bn = learn.model.body[1]
    before = clone_state(learn.model)
    modes = bn_modes_during(learn, lambda: learn.lr_find(num_it=10, progress=False))
    assert modes and not any(modes)
    assert not bn.training and learn.model.training  # restored as it was
    learn.validate()
    assert not bn.training and learn.model.training
    learn.predict(torch.zeros(8))  # predict, like validate, gives every module its mode back
    assert not bn.training and learn.model.training
    after = clone_state(learn.model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_train_bn_true_keeps_bn_training_in_a_frozen_body():
    learn = make_learner()  # train_bn=True, the default
    learn.freeze()
    before = clone_state(learn.model)
    modes = bn_modes_during(learn, lambda: learn.fit(1, 1e-2))
    assert True in modes
    after = clone_state(learn.model)
    assert not torch.equal(before["body.1.running_mean"], after["body.1.running_mean"])
    assert not torch.equal(before["body.1.weight"], after["body.1.weight"])
    assert torch.equal(before["body.0.weight"], after["body.0.weight"])  # the rest is frozen


def test_unfreeze_gives_bn_its_training_back():
    learn = make_learner(train_bn=False)
    learn.freeze()
    learn.unfreeze()
    bn = learn.model.body[1]
    assert bn.training
    before = clone_state(learn.model)
    modes = bn_modes_during(learn, lambda: learn.fit(1, 1e-2))
    assert True in modes
    assert not torch.equal(
        before["body.1.running_mean"], clone_state(learn.model)["body.1.running_mean"]
    )


NORMS_WITH_STATISTICS = {
    "batchnorm_affine_false": lambda: nn.BatchNorm2d(4, affine=False),
    "instancenorm_tracked": lambda: nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
    "instancenorm_tracked_no_affine": lambda: nn.InstanceNorm2d(4, track_running_stats=True),
}


@pytest.mark.parametrize("kind", sorted(NORMS_WITH_STATISTICS))
def test_every_frozen_norm_layer_with_statistics_keeps_them(kind):
    """Outside testing: a frozen BatchNorm2d(affine=False) (no parameters, so in no group) and
    an InstanceNorm2d(track_running_stats=True) (not a BatchNorm) moved their running means by
    0.63 and 0.53 in one epoch with train_bn=False."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 3, 8, 8) * 3 + 2, torch.randint(0, 2, (64,))
    dls = DataLoaders(DataLoader(TensorDataset(x, y), 16), DataLoader(TensorDataset(x, y), 32))
    norm = NORMS_WITH_STATISTICS[kind]()
    body = nn.Sequential(nn.Conv2d(3, 4, 3), norm, nn.ReLU())
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    learn = Learner(
        nn.Sequential(body, head),
        dls,
        nn.CrossEntropyLoss(),
        splitter=lambda m: [m[0], m[1]],
        train_bn=False,
        progress=False,
        device="cpu",
    )
    learn.freeze()
    before = norm.running_mean.clone(), norm.running_var.clone()
    learn.fit(1, 1e-2)
    assert torch.equal(norm.running_mean, before[0]) and torch.equal(norm.running_var, before[1])
    assert not norm.training and learn.model.training
    learn.unfreeze()
    assert norm.training  # unfrozen: it follows the model's mode again


def test_a_norm_layer_without_parameters_belongs_with_the_module_before_it():
    first = nn.BatchNorm1d(4, affine=False)  # nothing with parameters before it: the next one
    model = nn.Sequential(
        first, nn.Linear(4, 4), nn.BatchNorm1d(4, affine=False), nn.Linear(4, 4), nn.BatchNorm1d(4)
    )
    in_first_linear = {id(p) for p in model[1].parameters()}
    assert norm_layers_within(model, in_first_linear) == [first, model[2]]
    in_last_bn = {id(p) for p in model[4].parameters()}
    assert norm_layers_within(model, in_last_bn) == [model[4]]
    untracked = nn.Sequential(nn.Linear(4, 4), nn.InstanceNorm1d(4))  # no running statistics
    assert norm_layers_within(untracked, {id(p) for p in untracked.parameters()}) == []
