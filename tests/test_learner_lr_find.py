"""Learner.lr_find: the range test on the learner's state, leaving no trace."""

from __future__ import annotations

import copy

import torch

from learner_fixtures import clone_state, make_learner, three_groups
from lrkit import LRFindResult


def _same_opt_state(a: dict, b: dict) -> bool:
    if a["param_groups"] != b["param_groups"] or a["state"].keys() != b["state"].keys():
        return False
    return all(
        torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][key][name]))
        for key, state in a["state"].items()
        for name, value in state.items()
    )


def _prepared():
    """Three groups, the first frozen, per-group lrs 1e-4/1e-3/1e-2 and Adam state from a fit."""
    learn = make_learner(splitter=three_groups, train_bn=False)
    learn.freeze_to(1)
    learn.fit(1, [1e-4, 1e-3, 1e-2])
    return learn


def test_learner_lr_find_leaves_no_trace():
    learn = _prepared()
    weights = clone_state(learn.model)
    opt_state = copy.deepcopy(learn.opt.state_dict())
    flags = [p.requires_grad for p in learn.model.parameters()]
    rng = torch.random.get_rng_state()
    loader_rng = learn.dls.train.generator.get_state()

    frozen_seen, lrs_seen = [], []
    first = learn.model.body[0].weight
    hook = learn.model.register_forward_pre_hook(
        lambda m, args: frozen_seen.append(torch.equal(first, weights["body.0.weight"]))
    )
    step_hook = learn.opt.register_step_post_hook(
        lambda opt, args, kwargs: lrs_seen.append([g["lr"] for g in opt.param_groups])
    )
    result = learn.lr_find(num_it=20, end_lr=1.0, progress=False)
    hook.remove()
    step_hook.remove()

    assert isinstance(result, LRFindResult)
    assert 1 < len(result.lrs) <= 20
    assert frozen_seen and all(frozen_seen)  # the frozen group never moved during the sweep
    ratios = torch.tensor(lrs_seen) / torch.tensor(lrs_seen)[:, -1:]
    assert torch.allclose(ratios, torch.tensor([0.01, 0.1, 1.0]).expand_as(ratios))
    assert result.lrs[0] == lrs_seen[0][-1]  # the reported lr is the last group's

    after = learn.model.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in weights.items())
    assert _same_opt_state(opt_state, learn.opt.state_dict())
    assert [p.requires_grad for p in learn.model.parameters()] == flags
    assert torch.equal(rng, torch.random.get_rng_state())
    assert torch.equal(loader_rng, learn.dls.train.generator.get_state())


def test_training_after_lr_find_equals_training_without():
    with_find, without = _prepared(), _prepared()
    with_find.lr_find(num_it=15, progress=False)
    with_find.fit_one_cycle(1, slice(1e-3, 1e-2))
    without.fit_one_cycle(1, slice(1e-3, 1e-2))
    expected = without.model.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in with_find.model.state_dict().items())
    assert with_find.recorder.losses == without.recorder.losses
