"""lrkit's ResNets against torchvision's parameter names, shapes and counts, written out here."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrkit.models import resnet18, resnet34, resnet50, resnet101, resnet152, resnet_small

# torchvision's resnet18 parameters, name and shape, in state_dict order. Every BatchNorm
# (bn1, bn2, downsample.1) also has the buffers running_mean, running_var (C,) and
# num_batches_tracked ().
RESNET18_PARAMS = """
conv1.weight 64,3,7,7
bn1.weight 64
bn1.bias 64
layer1.0.conv1.weight 64,64,3,3
layer1.0.bn1.weight 64
layer1.0.bn1.bias 64
layer1.0.conv2.weight 64,64,3,3
layer1.0.bn2.weight 64
layer1.0.bn2.bias 64
layer1.1.conv1.weight 64,64,3,3
layer1.1.bn1.weight 64
layer1.1.bn1.bias 64
layer1.1.conv2.weight 64,64,3,3
layer1.1.bn2.weight 64
layer1.1.bn2.bias 64
layer2.0.conv1.weight 128,64,3,3
layer2.0.bn1.weight 128
layer2.0.bn1.bias 128
layer2.0.conv2.weight 128,128,3,3
layer2.0.bn2.weight 128
layer2.0.bn2.bias 128
layer2.0.downsample.0.weight 128,64,1,1
layer2.0.downsample.1.weight 128
layer2.0.downsample.1.bias 128
layer2.1.conv1.weight 128,128,3,3
layer2.1.bn1.weight 128
layer2.1.bn1.bias 128
layer2.1.conv2.weight 128,128,3,3
layer2.1.bn2.weight 128
layer2.1.bn2.bias 128
layer3.0.conv1.weight 256,128,3,3
layer3.0.bn1.weight 256
layer3.0.bn1.bias 256
layer3.0.conv2.weight 256,256,3,3
layer3.0.bn2.weight 256
layer3.0.bn2.bias 256
layer3.0.downsample.0.weight 256,128,1,1
layer3.0.downsample.1.weight 256
layer3.0.downsample.1.bias 256
layer3.1.conv1.weight 256,256,3,3
layer3.1.bn1.weight 256
layer3.1.bn1.bias 256
layer3.1.conv2.weight 256,256,3,3
layer3.1.bn2.weight 256
layer3.1.bn2.bias 256
layer4.0.conv1.weight 512,256,3,3
layer4.0.bn1.weight 512
layer4.0.bn1.bias 512
layer4.0.conv2.weight 512,512,3,3
layer4.0.bn2.weight 512
layer4.0.bn2.bias 512
layer4.0.downsample.0.weight 512,256,1,1
layer4.0.downsample.1.weight 512
layer4.0.downsample.1.bias 512
layer4.1.conv1.weight 512,512,3,3
layer4.1.bn1.weight 512
layer4.1.bn1.bias 512
layer4.1.conv2.weight 512,512,3,3
layer4.1.bn2.weight 512
layer4.1.bn2.bias 512
fc.weight 1000,512
fc.bias 1000
"""


def torchvision_resnet18_shapes() -> dict[str, tuple[int, ...]]:
    """Every state_dict key of torchvision's resnet18 with its shape, from the table above."""
    shapes: dict[str, tuple[int, ...]] = {}
    for line in RESNET18_PARAMS.strip().splitlines():
        name, dims = line.split()
        shape = tuple(int(d) for d in dims.split(","))
        shapes[name] = shape
        if name.endswith(".bias") and not name.startswith("fc."):  # a BatchNorm's last param
            stem = name[: -len(".bias")]
            shapes[f"{stem}.running_mean"] = shape
            shapes[f"{stem}.running_var"] = shape
            shapes[f"{stem}.num_batches_tracked"] = ()
    return shapes


def shapes_of(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_resnet18_has_exactly_torchvisions_keys_and_shapes():
    expected = torchvision_resnet18_shapes()
    assert len(expected) == 122
    got = shapes_of(resnet18())
    assert got == expected
    assert sorted(got) == sorted(expected)


def test_resnet34_keys_spot_checks_and_count():
    got = shapes_of(resnet34())
    assert len(got) == 218
    assert got["layer1.2.conv2.weight"] == (64, 64, 3, 3)
    assert got["layer2.3.bn2.running_var"] == (128,)
    assert got["layer3.5.conv1.weight"] == (256, 256, 3, 3)
    assert got["layer4.2.bn2.num_batches_tracked"] == ()
    assert got["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert got["fc.weight"] == (1000, 512)
    assert not any(k.startswith("layer1.0.downsample") for k in got)  # 64 -> 64: no projection
    blocks = {tuple(k.split(".")[:2]) for k in got if k.startswith("layer")}
    assert blocks == {
        (f"layer{s}", str(b))
        for s, n in zip((1, 2, 3, 4), (3, 4, 6, 3), strict=True)
        for b in range(n)
    }


def test_resnet50_keys_spot_checks_count_and_stride_placement():
    model = resnet50()
    got = shapes_of(model)
    assert len(got) == 320
    assert got["conv1.weight"] == (64, 3, 7, 7)
    assert got["layer1.0.conv1.weight"] == (64, 64, 1, 1)
    assert got["layer1.0.conv2.weight"] == (64, 64, 3, 3)
    assert got["layer1.0.conv3.weight"] == (256, 64, 1, 1)
    assert got["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert got["layer2.0.downsample.0.weight"] == (512, 256, 1, 1)
    assert got["layer3.5.bn3.weight"] == (1024,)
    assert got["layer4.2.conv3.weight"] == (2048, 512, 1, 1)
    assert got["fc.weight"] == (1000, 2048)
    assert "layer3.6.conv1.weight" not in got and "layer4.3.conv1.weight" not in got
    # ResNet v1.5 (torchvision, timm): the stride sits on the 3x3 convolution
    assert model.layer2[0].conv1.stride == (1, 1)
    assert model.layer2[0].conv2.stride == (2, 2)
    assert model.layer2[0].downsample[0].stride == (2, 2)


@pytest.mark.parametrize(
    ("factory", "count"),
    [
        (resnet18, 11_689_512),
        (resnet34, 21_797_672),
        (resnet50, 25_557_032),
        (resnet101, 44_549_160),
        (resnet152, 60_192_808),
    ],
)
def test_parameter_counts_match_torchvision(factory, count):
    assert sum(p.numel() for p in factory().parameters()) == count


def test_forward_features_head_and_logits_agree():
    torch.manual_seed(0)
    model = resnet18(num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    features = model.forward_features(x)
    assert features.shape == (2, 512, 2, 2)  # 64 / 32
    pooled = model.forward_head(features, pre_logits=True)
    assert pooled.shape == (2, 512)
    torch.testing.assert_close(pooled, features.mean(dim=(2, 3)))
    torch.testing.assert_close(model(x), model.fc(pooled))
    assert model.get_classifier() is model.fc


def test_reset_classifier_changes_outputs_and_zero_gives_features():
    model = resnet18()
    model.reset_classifier(5)
    assert model.fc.weight.shape == (5, 512) and model.num_classes == 5
    model.reset_classifier(0)
    out = model.eval()(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 512)


def test_in_chans_changes_only_the_first_conv():
    one = shapes_of(resnet34(in_chans=1))
    three = shapes_of(resnet34())
    assert one["conv1.weight"] == (64, 1, 7, 7)
    assert {k: v for k, v in one.items() if k != "conv1.weight"} == {
        k: v for k, v in three.items() if k != "conv1.weight"
    }


def test_resnet_small_on_28x28_keeps_the_names_and_starts_as_identity_blocks():
    model = resnet_small(num_classes=10, in_chans=1)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert model.forward_features(torch.randn(1, 1, 28, 28)).shape == (1, 128, 4, 4)
    names = {k.split(".")[0] for k in model.state_dict()}
    assert names == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"}
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    stages = (model.layer1, model.layer2, model.layer3, model.layer4)
    assert all(not block.bn2.weight.detach().any() for stage in stages for block in stage)
    assert sum(p.numel() for p in model.parameters()) == 308_538


def test_a_train_step_reaches_every_parameter():
    torch.manual_seed(0)
    model = resnet_small(num_classes=3, in_chans=3, width=8)
    x, y = torch.randn(4, 3, 28, 28), torch.tensor([0, 1, 2, 0])
    nn.functional.cross_entropy(model(x), y).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []
