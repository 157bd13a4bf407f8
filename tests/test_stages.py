"""lrkit.stages: fine_tune's plan, a rule's rate before each stage, NaN refused, fine_tune."""

from __future__ import annotations

import math

import pytest
import torch

from learner_fixtures import TinyNet, make_dls, three_groups
from lrkit import stages, suggest
from lrkit.learner import Learner
from lrkit.range_test_result import UnusableCurveError
from lrkit.stages import Stage, fine_tune_plan, run_stages, stage_lr


def make_learner() -> Learner:
    torch.manual_seed(0)
    return Learner(TinyNet(), make_dls(), torch.nn.CrossEntropyLoss(), splitter=three_groups,
                   progress=False)  # fmt: skip


def test_the_plan_for_a_number_is_fastais_fine_tune():
    # fastai 2.8: fit_one_cycle(freeze_epochs, base_lr, pct_start=0.99); base_lr /= 2;
    # unfreeze; fit_one_cycle(epochs, slice(base_lr / lr_mult, base_lr), pct_start=0.3, div=5)
    frozen, unfrozen = fine_tune_plan(3, 1e-2, freeze_epochs=2, lr_mult=50)
    assert frozen == Stage("frozen", 2, slice(1e-2), freeze=True, pct_start=0.99)
    assert frozen.one_cycle == {"pct_start": 0.99}
    assert unfrozen.lr == slice(5e-3 / 50, 5e-3) and unfrozen.freeze is False
    assert unfrozen.one_cycle == {"pct_start": 0.3, "div": 5.0}
    assert fine_tune_plan(3, 1e-2, pct_start=0.5, div=10)[1].one_cycle == {"pct_start": 0.5,
                                                                           "div": 10}  # fmt: skip


def test_the_plan_for_a_rule_and_no_head_epochs():
    _, by_rule = fine_tune_plan(1, "valley", 1, 100)
    assert by_rule == Stage("unfrozen", 1, "valley", freeze=False, lr_mult=100, pct_start=0.3,
                            div=5.0)  # fmt: skip
    assert [stage.name for stage in fine_tune_plan(1, 1e-3, freeze_epochs=0)] == ["unfrozen"]
    with pytest.raises(ValueError, match="lr_mult must be >= 1"):
        fine_tune_plan(1, 1e-3, lr_mult=0.5)
    with pytest.raises(ValueError, match="epochs >= 1"):
        fine_tune_plan(0, 1e-3)


def test_a_rule_runs_a_range_test_on_the_learner_as_it_is_and_spreads_hi():
    learn = make_learner()
    learn.freeze()
    lr, found = stage_lr(learn, "minimum", 10.0, num_it=30, progress=False)
    hi = found.suggest("minimum")
    assert lr == slice(hi / 10, hi)
    assert stage_lr(learn, 3e-3) == (3e-3, None)  # a number: no range test


def test_a_nan_suggestion_stops_before_training(monkeypatch):
    monkeypatch.setitem(suggest.RULES, "untrusting", lambda lrs, losses: math.nan)
    learn = make_learner()
    before = [p.detach().clone() for p in learn.model.parameters()]
    stages = run_stages(learn, fine_tune_plan(1, "untrusting"), num_it=20, progress=False)
    with pytest.raises(UnusableCurveError, match="pass a learning rate"):
        next(stages)
    assert all(torch.equal(a, b) for a, b in zip(before, learn.model.parameters(), strict=True))


def test_learner_fine_tune_with_a_rule_tests_before_each_stage(monkeypatch):
    learn = make_learner()
    seen = []
    lr_find = Learner.lr_find

    def spy(self, *args, **kwargs):
        seen.append(self.frozen_idx)
        return lr_find(self, *args, **kwargs)

    monkeypatch.setattr(Learner, "lr_find", spy)
    learn.fine_tune(1, base_lr="minimum", freeze_epochs=1, lr_mult=10)
    assert seen == [2, 0]  # frozen body first, then every group
    lrs = [group["lr"] for group in learn.opt.param_groups]
    assert lrs[-1] / lrs[0] == pytest.approx(10)


def test_auto_plans_one_range_test_and_the_spread_from_the_heads_rate():
    frozen, unfrozen = fine_tune_plan(4, "auto")
    # the head's range test: the quick sweep (60 steps from 1e-4), the body's BatchNorm held
    head_test = {"num_it": 60, "start_lr": 1e-4, "hold_frozen": True}
    assert frozen == Stage("frozen", 1, "auto", freeze=True, pct_start=0.99, test_options=head_test)
    assert unfrozen.from_previous == 0.5  # fastai's base_lr / 2 ...
    assert unfrozen.lr_mult == 100 and unfrozen.freeze is False  # ... and spread 100
    assert unfrozen.one_cycle == {"pct_start": 0.3, "div": 5.0}
    assert fine_tune_plan(4, "auto", lr_mult=30)[1].lr_mult == 30
    (only,) = fine_tune_plan(2, "auto", freeze_epochs=0)  # no head rate: a range test instead
    assert only.from_previous is None and only.lr == "auto"
    assert fine_tune_plan(1, "valley")[1].lr_mult == stages.LR_MULT  # other rules: fastai's 100


def test_fine_tune_auto_trains_the_body_at_a_spread_of_the_heads_rate(monkeypatch):
    learn = make_learner()
    seen = []
    lr_find = Learner.lr_find

    def spy(self, *args, **kwargs):
        seen.append((self.frozen_idx, kwargs.get("num_it"), kwargs.get("hold_frozen")))
        return lr_find(self, *args, **kwargs)

    monkeypatch.setattr(Learner, "lr_find", spy)
    head, body = run_stages(learn, fine_tune_plan(1, "auto"), num_it=100, progress=False)
    # one range test, of the head alone (the body's BatchNorm held)
    assert seen == [(2, 100, True)]
    assert head.group_lrs[-1] == head.range_test.suggest("auto")
    assert body.range_test is None
    assert body.group_lrs[-1] == pytest.approx(0.5 * head.group_lrs[-1])
    assert body.group_lrs[-1] / body.group_lrs[0] == pytest.approx(100)


def test_fit_one_cycle_auto_on_an_unfrozen_learner_tests_and_trains_with_the_spread(monkeypatch):
    learn = make_learner()
    ratios = []
    lr_find = Learner.lr_find

    def spy(self, *args, **kwargs):
        lrs = [group["lr"] for group in self.opt.param_groups]
        ratios.append(lrs[-1] / lrs[0])
        return lr_find(self, *args, **kwargs)

    monkeypatch.setattr(Learner, "lr_find", spy)
    learn.fit_one_cycle(1, "auto")
    assert ratios == [pytest.approx(stages.AUTO_LR_MULT)]  # the curve of what then trains
    lrs = [group["lr"] for group in learn.opt.param_groups]
    assert lrs[-1] / lrs[0] == pytest.approx(stages.AUTO_LR_MULT)
    learn = make_learner()
    learn.freeze()  # one trainable group: one rate for every group, no spread
    learn.fit_one_cycle(1, "auto")
    assert len(ratios) == 2
    assert len({group["lr"] for group in learn.opt.param_groups}) == 1


def test_fine_tune_passes_its_range_test_options_on_and_returns_what_each_stage_trained_at():
    learn = make_learner()
    head, body = learn.fine_tune(1, "auto", **stages.QUICK_RANGE_TEST)
    assert len(head.range_test.lrs) <= stages.QUICK_RANGE_TEST["num_it"]
    assert head.range_test.start_lr == stages.QUICK_RANGE_TEST["start_lr"]
    assert head.group_lrs[-1] == head.range_test.suggest("auto")
    assert body.range_test is None and body.group_lrs[-1] == pytest.approx(0.5 * head.group_lrs[-1])


def test_a_held_range_test_sends_no_gradient_into_the_frozen_body_and_gives_it_back():
    learn = make_learner()
    learn.freeze()  # train_bn: the body's BatchNorm weights still train
    bn_weight = learn.model.body[1].weight
    assert bn_weight.requires_grad
    grads = []
    handle = bn_weight.register_hook(grads.append)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    learn.lr_find(num_it=20, hold_frozen=True, progress=False)
    assert grads == []  # backpropagation stopped at the head: the cheap range test
    assert bn_weight.requires_grad and learn.frozen_idx == 2  # the freezing as it was
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in before.items())
    learn.lr_find(num_it=20, progress=False)
    assert grads  # without holding, the BatchNorm weights get their gradient
    handle.remove()
