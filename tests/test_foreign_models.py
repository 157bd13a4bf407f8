"""timm/torchvision models in vision_learner, through a FAKE timm package on sys.path (CI has
no timm): names, forward_features bodies, broken installs, offline weights, export, ONNX."""

from __future__ import annotations

import socket
import sys
import textwrap
from importlib import import_module

import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lrkit import DataLoaders, load_learner, vision_learner
from lrkit.cli import main
from lrkit.fetch import DownloadError, reachable
from lrkit.models import foreign, hub
from lrkit.models.registry import is_allowed
from lrkit.models.vision_model import FeaturesBody, create_body

FAKE_TIMM = '''
"""A stand-in for timm: list_models / create_model, records every call in CALLS."""
import torch
from torch import nn

CALLS = []


class TinyNet(nn.Module):
    """Children in order: conv, act, pool, fc; forward_features = conv + act."""

    def __init__(self, in_chans=3, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)
        self.num_features = 8

    def forward_features(self, x):
        return self.act(self.conv(x))

    def forward(self, x):
        return self.fc(self.global_pool(self.forward_features(x)).flatten(1))

    def reset_classifier(self, num_classes):
        self.fc = nn.Linear(8, num_classes) if num_classes else nn.Identity()


class SkipNet(TinyNet):
    """forward_features is NOT its children in order (a residual around conv2)."""

    def __init__(self, in_chans=3, num_classes=10):
        super().__init__(in_chans, num_classes)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward_features(self, x):
        x = self.act(self.conv(x))
        return x + self.conv2(x)


MODELS = {"tinynet": TinyNet, "skipnet": SkipNet}


def list_models(pattern=""):
    return sorted(MODELS)


def create_model(name, pretrained=False, in_chans=3, **kwargs):
    CALLS.append((name, pretrained, in_chans))
    if name not in MODELS:
        raise RuntimeError(f"Unknown model ({name})")
    if pretrained:
        raise RuntimeError("the fake timm cannot download (HTTP retries would go here)")
    return MODELS[name](in_chans=in_chans, **kwargs)
'''


def _forget(name: str) -> None:
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def _install(tmp_path, monkeypatch, source: str):
    folder = tmp_path / "site"
    (folder / "timm").mkdir(parents=True)
    (folder / "timm" / "__init__.py").write_text(textwrap.dedent(source))
    _forget("timm")
    monkeypatch.syspath_prepend(str(folder))
    yield
    _forget("timm")  # the next test imports (or fails to import) timm afresh


@pytest.fixture
def fake_timm(tmp_path, monkeypatch):
    yield from _install(tmp_path, monkeypatch, FAKE_TIMM)


@pytest.fixture
def broken_timm(tmp_path, monkeypatch):
    """A timm whose import raises RuntimeError, like a torchvision built for another torch."""
    yield from _install(tmp_path, monkeypatch, "raise RuntimeError('built for another torch')\n")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def image_dls(n: int = 8, size: int = 16) -> DataLoaders:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n + n // 2, 3, size, size, generator=gen)
    y = torch.arange(n + n // 2) % 3
    train = DataLoader(TensorDataset(x[:n], y[:n]), batch_size=4)
    valid = DataLoader(TensorDataset(x[n:], y[n:]), batch_size=4)
    return DataLoaders(train, valid, vocab=["a", "b", "c"], stats=((0.5,) * 3, (0.25,) * 3))


def make(arch, **kwargs):
    torch.manual_seed(0)
    return vision_learner(image_dls(), arch, device="cpu", progress=False, **kwargs)


def test_timm_names_build_with_forward_features_bodies(fake_timm):
    learn = make("tinynet", pretrained=False)  # a bare name is timm's
    assert list(dict(learn.model.body.named_children())) == ["conv", "act"]  # children kept
    skip = make("timm:skipnet", pretrained=False)
    assert isinstance(skip.model.body, FeaturesBody)  # children in order would drop the skip
    x = torch.randn(2, 3, 16, 16)
    network = skip.model.body.network
    skip.model.eval()
    assert torch.equal(skip.model.body(x), network.forward_features(x))
    assert isinstance(network.fc, nn.Identity)  # the old classifier is not dead weight
    assert skip.n_groups == 2 and skip.validate()["valid_loss"] > 0


def test_a_body_is_cut_without_touching_the_global_random_state(fake_timm):
    network = import_module("timm").create_model("skipnet")
    torch.manual_seed(3)
    want = torch.rand(1)
    torch.manual_seed(3)
    create_body(network)  # probes forward_features on a seeded input of its own
    assert torch.equal(torch.rand(1), want)


def test_unknown_timm_name_is_one_line_naming_lrkits_archs(fake_timm):
    with pytest.raises(ValueError, match=r"unknown architecture 'vgg99': neither lrkit \(.*resnet"):
        make("vgg99", pretrained=False)
    assert ("vgg99", False, 3) not in import_module("timm").CALLS  # never reached timm


@pytest.mark.parametrize("installed", ["fake_timm", "broken_timm"])
def test_cli_unknown_arch_is_one_line(installed, request, tmp_path, capsys):
    request.getfixturevalue(installed)
    folder = tmp_path / "imgs"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (20, 20), (i * 90, 10, 200)).save(folder / label / f"{i}.png")
    argv = ["find", "--data", str(folder), "--arch", "vgg99", "--pretrained", "none", "--size",
            "16", "--presize", "20", "--device", "cpu", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "unknown architecture 'vgg99'" in err and "resnet50" in err


def test_a_broken_timm_counts_as_not_installed(broken_timm):
    with pytest.raises(ValueError, match="timm, for its model names, is not installed or does not"):
        make("convnext_tiny", pretrained=False)
    with pytest.raises(ValueError, match="timm is not installed here, or does not load"):
        make("timm:convnext_tiny", pretrained=False)
    assert not is_allowed("timm:convnext_tiny")
    assert foreign.optional_import("timm") is None


def test_offline_pretrained_timm_name_fails_with_one_line(fake_timm, monkeypatch):
    monkeypatch.setitem(foreign.WEIGHT_HOSTS, "timm", ("127.0.0.1", closed_port()))
    offline = r"cannot reach 127\.0\.0\.1 to download timm's"
    with pytest.raises(DownloadError, match=offline) as info:
        make("tinynet", pretrained="imagenet")
    assert "\n" not in str(info.value)
    assert ("tinynet", True, 3) not in import_module("timm").CALLS  # no download was attempted


def test_library_download_errors_are_one_line(fake_timm, monkeypatch):
    with socket.socket() as server:  # "online": the probe connects
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setitem(foreign.WEIGHT_HOSTS, "timm", server.getsockname())
        with pytest.raises(DownloadError, match="timm could not build 'tinynet' with its") as info:
            make("tinynet", pretrained=True)
    assert "\n" not in str(info.value) and "fake timm cannot download" in str(info.value)


def test_lrkit_weights_offline_fail_at_the_probe(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "BASE_URL", f"http://127.0.0.1:{closed_port()}/")
    monkeypatch.setenv("LRKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(DownloadError, match=r"no connection to 127\.0\.0\.1:\d+ in 1\.5 s") as e:
        hub.imagenet_weights("resnet18", progress=False)
    assert "\n" not in str(e.value)
    assert "pretrained='/path/to/resnet18-f37072fd.pth'" in str(e.value)


def test_reachable_bounds_the_wait():
    assert not reachable("127.0.0.1", closed_port(), 1.0)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert reachable(*server.getsockname(), 1.0)


def test_export_of_a_timm_body_reloads_without_a_pickle(fake_timm, tmp_path):
    for arch in ("tinynet", "timm:skipnet"):
        learn = make(arch, pretrained=False)
        learn.fit(1, 1e-2)
        path = learn.export(tmp_path / "model.lrk")
        loaded = load_learner(path)  # trust_pickle is False: the builder is allow-listed
        x = torch.randn(3, 3, 16, 16)
        learn.model.eval()
        assert torch.equal(loaded.model(x), learn.model(x))


def test_to_onnx_matches_pytorch(tmp_path):
    pytest.importorskip("onnx", reason="pip install 'lrkit[onnx]' to test the ONNX export")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime runs the exported file")
    learn = make("resnet18", pretrained=False)
    learn.fit(1, 1e-2)
    path = learn.to_onnx(tmp_path / "model.onnx", size=16)
    assert learn.model.training  # the mode is restored
    x = torch.randn(5, 3, 16, 16)  # another batch size than the export's example
    learn.model.eval()
    with torch.no_grad():
        want = learn.model(x).numpy()
    got = ort.InferenceSession(str(path)).run(None, {"images": x.numpy()})[0]
    assert got.shape == (5, 3)
    assert abs(got - want).max() < 1e-4


def test_to_onnx_without_onnx_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'lrkit\[onnx\]'"):
        make("resnet18", pretrained=False).to_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
