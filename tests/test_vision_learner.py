"""vision_learner: pretrained body + new head, loss, three layer groups, freezing, export."""

from __future__ import annotations

import socket
import sys
import types

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lrkit
from lrkit import DataLoaders, vision_learner
from lrkit.datasets import DownloadError
from lrkit.layer_groups import BN_TYPES
from lrkit.models import hub, resnet18

N_CLASSES = 3


def image_dls(channels: int = 3, size: int = 32, n: int = 8, seed: int = 0) -> DataLoaders:
    """Small random images (n train, n/2 valid) with class labels, as DataLoaders."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n + n // 2, channels, size, size, generator=gen)
    y = torch.arange(n + n // 2) % N_CLASSES
    train = DataLoader(TensorDataset(x[:n], y[:n]), batch_size=4)
    valid = DataLoader(TensorDataset(x[n:], y[n:]), batch_size=4)
    stats = ((0.5,) * channels, (0.25,) * channels)
    return DataLoaders(train, valid, vocab=["cat", "dog", "fox"], stats=stats)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A resnet18 weights file in torchvision's naming (random values)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18-test.pth"
    torch.save(resnet18().state_dict(), path)
    return path


def make(dls, arch="resnet18", **kwargs):
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("progress", False)
    torch.manual_seed(0)
    return vision_learner(dls, arch, **kwargs)


def body_params(learn, bn: bool) -> dict[str, torch.Tensor]:
    """Body parameters inside (bn=True) or outside (bn=False) BatchNorm layers, copied."""
    out = {}
    for module_name, module in learn.model.body.named_modules():
        if isinstance(module, BN_TYPES) != bn:
            continue
        for name, param in module.named_parameters(recurse=False):
            out[f"{module_name}.{name}"] = param.detach().clone()
    return out


def test_pretrained_body_is_loaded_split_in_three_and_frozen(weights_file):
    learn = make(image_dls(), pretrained=weights_file, metrics=[lrkit.error_rate])
    state = torch.load(weights_file, weights_only=True)
    assert torch.equal(learn.model.body.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])
    assert learn.n_groups == 3 and learn.frozen_idx == 2
    assert isinstance(learn.loss_fn, nn.CrossEntropyLoss)
    assert learn.model.head[-1].out_features == N_CLASSES
    text = learn.summary()
    assert "layer groups: 3; 2 of 3 groups frozen (groups 0–1); only the head (group 2)" in text
    assert all(f"group {i}:" in text for i in range(3))
    assert not learn.model.body.layer2[0].conv1.weight.requires_grad
    assert learn.model.body.layer2[0].bn1.weight.requires_grad  # train_bn
    assert all(p.requires_grad for p in learn.model.head.parameters())


def test_a_frozen_epoch_moves_the_head_and_leaves_the_body(weights_file):
    learn = make(image_dls(), pretrained=weights_file)
    convs, bns = body_params(learn, bn=False), body_params(learn, bn=True)
    head = {k: v.detach().clone() for k, v in learn.model.head.named_parameters()}
    learn.fit_one_cycle(1, 1e-2)
    assert all(torch.equal(v, body_params(learn, bn=False)[k]) for k, v in convs.items())
    moved_bn = [k for k, v in bns.items() if not torch.equal(v, body_params(learn, bn=True)[k])]
    assert moved_bn  # BatchNorm keeps training in frozen groups (train_bn=True)
    now = dict(learn.model.head.named_parameters())
    assert all(not torch.equal(v, now[k]) for k, v in head.items())
    learn.unfreeze()
    assert learn.frozen_idx == 0 and "nothing frozen: all 3 groups train" in learn.summary()


def test_from_scratch_nothing_is_frozen():
    learn = make(image_dls(), pretrained=False)
    assert learn.frozen_idx == 0
    assert all(p.requires_grad for p in learn.model.parameters())


def test_one_channel_data_adapts_the_pretrained_first_conv(weights_file):
    learn = make(image_dls(channels=1), pretrained=weights_file)
    state = torch.load(weights_file, weights_only=True)
    conv = learn.model.body.conv1.weight
    assert conv.shape == (64, 1, 7, 7)
    torch.testing.assert_close(conv, state["conv1.weight"].sum(1, keepdim=True))
    learn.fit(1, 1e-3)  # 1-channel batches go through


def test_resnet_small_for_28x28_and_export_round_trip(tmp_path):
    learn = make(image_dls(channels=1, size=28), "resnet_small", pretrained=False)
    assert learn.n_groups == 3
    learn.fit(1, 1e-3)
    x = torch.randn(1, 28, 28)
    expected = learn.predict(x)
    path = learn.export(tmp_path / "small.pt")
    loaded = lrkit.load_learner(path)
    got = loaded.predict(x)
    assert got.label == expected.label and got.index == expected.index
    torch.testing.assert_close(got.probs, expected.probs)


def test_default_names_and_bad_choices_get_clear_errors(tmp_path):
    dls = image_dls()
    with pytest.raises(ValueError, match="pretrained=False"):
        make(dls, "resnet_small", pretrained="imagenet")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        make(dls, pretrained=tmp_path / "nowhere.pth")
    with pytest.raises(TypeError, match="pretrained must be"):
        make(dls, pretrained=3)
    no_vocab = DataLoaders(dls.train, dls.valid)
    with pytest.raises(ValueError, match="n_out"):
        make(no_vocab, pretrained=False)
    assert make(no_vocab, pretrained=False, n_out=5).model.head[-1].out_features == 5


def test_unknown_name_without_timm(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(ValueError, match="unknown architecture 'convnext_tiny'"):
        make(image_dls(), "convnext_tiny", pretrained=False)


def test_imagenet_offline_tells_the_user_to_pass_a_path(tmp_path, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(hub, "BASE_URL", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("LRKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(DownloadError, match=r"pretrained='/path/to/resnet18-f37072fd\.pth'"):
        make(image_dls(), "resnet18", pretrained="imagenet", download_progress=False)


def fake_constructor(module: str, calls: list):
    """A stand-in for a torchvision/timm constructor: records its arguments, builds resnet18."""

    def resnet18_like(**kwargs):
        calls.append(kwargs)
        return resnet18()

    resnet18_like.__module__ = module
    return resnet18_like


@pytest.fixture
def online(monkeypatch):
    """timm's and torchvision's weight servers "reachable": a listening socket on 127.0.0.1."""
    from lrkit.models import foreign

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        for library in foreign.WEIGHT_HOSTS:
            monkeypatch.setitem(foreign.WEIGHT_HOSTS, library, server.getsockname())
        yield


def test_torchvision_constructors_get_their_weights_enum_names(online):
    calls: list = []
    build = fake_constructor("torchvision.models.resnet", calls)
    learn = make(image_dls(channels=1), build, pretrained="imagenet")
    assert calls == [{"weights": "IMAGENET1K_V1"}]
    assert learn.n_groups == 3 and learn.frozen_idx == 2
    assert learn.model.body.conv1.in_channels == 1  # adapted after torchvision built it
    make(image_dls(), build, pretrained=False)
    assert calls[-1] == {"weights": None}


def test_timm_constructors_and_names(monkeypatch, online):
    calls: list = []
    learn = make(image_dls(), fake_constructor("timm.models.resnet", calls), pretrained=True)
    assert calls == [{"pretrained": True, "in_chans": 3}]
    assert learn.frozen_idx == 2
    fake_timm = types.ModuleType("timm")
    fake_timm.create_model = lambda name, **kwargs: calls.append((name, kwargs)) or resnet18()
    fake_timm.list_models = lambda: ["resnet18d"]
    monkeypatch.setitem(sys.modules, "timm", fake_timm)
    make(image_dls(), "resnet18d", pretrained=False)
    assert calls[-1] == ("resnet18d", {"pretrained": False, "in_chans": 3})


class TinyCNN(nn.Module):
    """Not a ResNet: features, pool, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def test_other_models_split_into_body_and_head_or_by_a_user_function(tmp_path):
    learn = make(image_dls(), TinyCNN, pretrained=False)
    assert learn.n_groups == 2
    assert learn.model.head[2].num_features == 16  # concat pool of 8 channels
    path = tmp_path / "tiny.pth"
    torch.save(TinyCNN().state_dict(), path)
    frozen = make(image_dls(), TinyCNN, pretrained=path)
    assert frozen.frozen_idx == 1

    def three(model):
        return [model.body, model.head[:5], model.head[5:]]

    assert make(image_dls(), TinyCNN(), pretrained=False, splitter=three).n_groups == 3
    with pytest.raises(ValueError, match="brings its own weights"):
        make(image_dls(), TinyCNN(), pretrained="imagenet")
    with pytest.raises(ValueError, match="no ImageNet weights for 'TinyCNN'"):
        make(image_dls(), TinyCNN, pretrained="imagenet")
