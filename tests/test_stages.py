"""lrkit.stages: fine_tune's plan, a rule's rate before each stage, NaN refused, fine_tune."""

from __future__ import annotations

import math

import pytest
import torch

from learner_fixtures import TinyNet, make_dls, three_groups
from lrkit import suggest
from lrkit.learner import Learner
from lrkit.range_test_result import UnusableCurveError
from lrkit.stages import Stage, fine_tune_plan, run_stages, stage_lr


def make_learner() -> Learner:
    torch.manual_seed(0)
    return Learner(TinyNet(), make_dls(), torch.nn.CrossEntropyLoss(), splitter=three_groups,
                   progress=False)  # fmt: skip


def test_the_plan_for_a_number_a_rule_and_no_head_epochs():
    frozen, unfrozen = fine_tune_plan(3, 1e-2, freeze_epochs=2, lr_mult=50)
    assert frozen == Stage("frozen", 2, 1e-2, freeze=True)
    assert unfrozen.lr == slice(1e-2 / 50, 1e-2) and unfrozen.freeze is False
    _, by_rule = fine_tune_plan(1, "valley", 1, 100)
    assert by_rule == Stage("unfrozen", 1, "valley", freeze=False, lr_mult=100)
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
