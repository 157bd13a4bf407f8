"""The splitter checker: every parameter in exactly one group, with the culprits named."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrkit.layer_groups import bn_parameter_ids, check_layer_groups, one_group, split_by_modules


def _model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def test_default_splitter_is_one_group():
    model = _model()
    groups = check_layer_groups(model, one_group(model))
    assert len(groups) == 1
    assert len(groups[0]) == len(list(model.parameters()))


def test_modules_are_accepted_as_groups():
    model = _model()
    groups = check_layer_groups(model, [model[:2], model[3]])
    assert [len(g) for g in groups] == [4, 2]
    assert split_by_modules(model[:2], model[3]) == groups


def test_missing_parameter_is_named():
    model = _model()
    with pytest.raises(ValueError, match=r"in no layer group: 3\.weight, 3\.bias"):
        check_layer_groups(model, [model[:2]])


def test_repeated_parameter_is_named_with_its_groups():
    model = _model()
    with pytest.raises(ValueError, match=r"in two layer groups: 0\.weight \(groups 0 and 1\)"):
        check_layer_groups(model, [model[:2], [model[0].weight, *model[3].parameters()]])


def test_foreign_and_empty_groups_are_refused():
    model = _model()
    stranger = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match=r"not parameters of the model: group 1: tensor of shape"):
        check_layer_groups(model, [model, [stranger]])
    with pytest.raises(ValueError, match="group 1 of 2 is empty"):
        check_layer_groups(model, [model, []])
    with pytest.raises(ValueError, match="no layer groups"):
        check_layer_groups(model, [])
    with pytest.raises(TypeError, match=r"not an nn\.Parameter"):
        check_layer_groups(model, [[torch.zeros(2)]])


def test_bn_parameter_ids():
    model = _model()
    assert bn_parameter_ids(model) == {id(model[1].weight), id(model[1].bias)}
