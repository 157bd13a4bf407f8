"""fastai's head and the body/head split: layers in order, init, pooling, groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrkit import check_layer_groups
from lrkit.models import (
    ConcatPool2d,
    VisionModel,
    children_split,
    create_body,
    default_split,
    new_head,
    resnet18,
    resnet_split,
    vision_model,
)


def test_head_layers_are_fastais_in_order():
    head = new_head(512, 37)
    kinds = [type(m) for m in head]
    assert kinds == [
        ConcatPool2d,
        nn.Flatten,
        nn.BatchNorm1d,
        nn.Dropout,
        nn.Linear,
        nn.ReLU,
        nn.BatchNorm1d,
        nn.Dropout,
        nn.Linear,
    ]
    assert head[2].num_features == 1024 and head[6].num_features == 512
    assert (head[3].p, head[7].p) == (0.25, 0.5)
    assert (head[4].in_features, head[4].out_features) == (1024, 512)
    assert (head[8].in_features, head[8].out_features) == (512, 37)
    assert head[4].bias is None and head[8].bias is None


def test_head_linears_start_kaiming_normal():
    torch.manual_seed(0)
    head = new_head(2048, 300)
    for linear, fan_in in ((head[4], 4096), (head[8], 512)):
        weight = linear.weight.detach()
        assert float(weight.std()) == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
        assert abs(float(weight.mean())) < 0.1 * float(weight.std())


def test_concat_pool_puts_max_then_average_side_by_side():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    out = ConcatPool2d()(x)
    assert out.shape == (2, 6, 1, 1)
    torch.testing.assert_close(out[:, :3, 0, 0], x.amax(dim=(2, 3)))
    torch.testing.assert_close(out[:, 3:, 0, 0], x.mean(dim=(2, 3)))


def test_head_variants_and_bad_arguments():
    short = new_head(64, 5, lin_ftrs=None, concat_pool=False)
    assert [type(m) for m in short] == [
        nn.AdaptiveAvgPool2d,
        nn.Flatten,
        nn.BatchNorm1d,
        nn.Dropout,
        nn.Linear,
    ]
    assert short[2].num_features == 64 and short[3].p == 0.5
    assert short.eval()(torch.randn(2, 64, 3, 3)).shape == (2, 5)
    with pytest.raises(ValueError, match="n_out"):
        new_head(64, 0)
    with pytest.raises(ValueError, match="ps"):
        new_head(64, 3, ps=1.0)


def test_body_is_the_network_up_to_its_global_pool():
    network = resnet18()
    body = create_body(network)
    names = [name for name, _ in body.named_children()]
    assert names == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    x = torch.randn(2, 3, 64, 64)
    network.eval()
    torch.testing.assert_close(body(x), network.forward_features(x))
    with pytest.raises(ValueError, match="cut="):
        create_body(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))


def test_vision_model_names_and_output():
    model = vision_model("resnet18", n_out=4)
    assert isinstance(model, VisionModel)
    assert "body.layer4.1.bn2.running_var" in model.state_dict()
    assert "head.8.weight" in model.state_dict()
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    with pytest.raises(ValueError, match="unknown architecture 'resnet7'"):
        vision_model("resnet7")


def names_of(model: nn.Module, groups: list[list[nn.Parameter]]) -> list[set[str]]:
    by_id = {id(p): name for name, p in model.named_parameters()}
    return [{by_id[id(p)] for p in group} for group in groups]


def test_resnet_split_in_three_for_body_head_and_bare_resnets():
    model = vision_model("resnet18", n_out=3)
    groups = check_layer_groups(model, resnet_split(model))
    named = names_of(model, groups)
    assert {n.split(".")[1] for n in named[0]} == {"conv1", "bn1", "layer1", "layer2"}
    assert {n.split(".")[1] for n in named[1]} == {"layer3", "layer4"}
    assert {n.split(".")[0] for n in named[2]} == {"head"}
    bare = resnet18()
    named = names_of(bare, check_layer_groups(bare, resnet_split(bare)))
    assert {n.split(".")[0] for n in named[0]} == {"conv1", "bn1", "layer1", "layer2"}
    assert {n.split(".")[0] for n in named[1]} == {"layer3", "layer4"}
    assert named[2] == {"fc.weight", "fc.bias"}


def test_other_models_split_by_top_level_children():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten())
    groups = check_layer_groups(model, default_split(model))
    assert names_of(model, groups) == [{"0.weight", "0.bias"}, {"2.weight", "2.bias"}]
    with pytest.raises(ValueError, match=r"layer1\.\.layer4"):
        resnet_split(model)
    wrapped = VisionModel(nn.Sequential(nn.Conv2d(3, 4, 3)), nn.Linear(4, 2))
    assert [len(g) for g in children_split(wrapped)] == [2, 2]
