"""Frozen means frozen: with train_bn=False a frozen BatchNorm keeps its statistics (eval mode
while frozen); with train_bn=True (the default) it trains; unfreeze gives training back."""

from __future__ import annotations

import warnings

import torch

from learner_fixtures import clone_state, make_learner
from lrkit.layer_groups import eval_mode


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
