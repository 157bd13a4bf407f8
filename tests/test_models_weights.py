"""Pretrained weights: torchvision/timm files load strictly, bad files are named, ImageNet cache."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import socket
import struct
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from data_fixtures import FileServer, serve
from lrkit.datasets import DownloadError
from lrkit.models import (
    adapt_input_conv,
    imagenet_url,
    imagenet_weights,
    load_pretrained,
    read_state_dict,
    resnet18,
    resnet34,
    set_in_chans,
)
from test_models_resnet import torchvision_resnet18_shapes


def torchvision_state(seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """A resnet18 state_dict in torchvision's naming, random values, built from the test table."""
    gen = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for name, shape in torchvision_resnet18_shapes().items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7)
        else:
            state[name] = torch.randn(shape, generator=gen)
    return state


def assert_loaded(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert got.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(got[key], value), key


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A .safetensors file written by hand from the format's description."""
    codes = {torch.float32: "F32", torch.int64: "I64", torch.bfloat16: "BF16"}
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    chunks, offset = [], 0
    for name, tensor in tensors.items():
        raw = tensor.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
        header[name] = {
            "dtype": codes[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))


# ---------------------------------------------------------------- files that load


def test_torchvision_format_state_dict_loads_strictly(tmp_path):
    state = torchvision_state()
    path = tmp_path / "resnet18-tv.pth"
    torch.save(state, path)
    model = load_pretrained(resnet18(), path)
    assert_loaded(model, state)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: {"state_dict": s},
        lambda s: {"model": {f"module.{k}": v for k, v in s.items()}, "epoch": 3},
        lambda s: {f"_orig_mod.{k}": v for k, v in s.items()},
        lambda s: {"format": "lrkit-state", "version": 1, "model": s, "opt": None},
    ],
    ids=["state_dict", "model+module.", "compiled", "lrkit-save"],
)
def test_wrapped_and_prefixed_checkpoints_are_unwrapped(tmp_path, wrap):
    state = torchvision_state(1)
    path = tmp_path / "wrapped.pth"
    torch.save(wrap(state), path)
    assert_loaded(load_pretrained(resnet18(), path), state)


def test_timm_safetensors_file_loads(tmp_path):
    state = torchvision_state(2)
    path = tmp_path / "model.safetensors"
    write_safetensors(path, state)
    assert read_state_dict(path)["layer4.1.bn2.num_batches_tracked"].dtype == torch.int64
    assert_loaded(load_pretrained(resnet18(), path), state)


def test_safetensors_bf16_values_round_trip(tmp_path):
    tensor = torch.randn(3, 5).to(torch.bfloat16)
    path = tmp_path / "one.safetensors"
    write_safetensors(path, {"w": tensor})
    assert torch.equal(read_state_dict(path)["w"], tensor)


def test_other_number_of_classes_keeps_the_fresh_classifier(tmp_path):
    state = torchvision_state(3)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = resnet18(num_classes=10)
    fc_before = model.fc.weight.detach().clone()
    load_pretrained(model, path)
    assert torch.equal(model.fc.weight, fc_before)
    assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    headless = resnet18()
    headless.reset_classifier(0)
    load_pretrained(headless, path)
    assert torch.equal(headless.conv1.weight, state["conv1.weight"])


def test_one_channel_model_gets_the_rgb_filters_summed(tmp_path):
    state = torchvision_state(4)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = load_pretrained(resnet18(in_chans=1), path)
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


# ---------------------------------------------------------------- files that do not


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        read_state_dict(tmp_path / "nowhere.pth")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"this is a text file, not a checkpoint\n", "not a weights file torch can read"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(200), "not a weights file torch can read"),
        (
            pickle.dumps(OrderedDict(w=io.StringIO("code")), protocol=2),
            "not a weights file torch can read",
        ),
    ],
    ids=["text", "jpeg", "pickled-object"],
)
def test_files_that_are_not_checkpoints_are_named(tmp_path, content, reason):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=reason) as err:
        read_state_dict(path)
    assert str(path) in str(err.value)


def test_checkpoint_without_tensors_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ValueError, match="holds a list, not a state_dict"):
        read_state_dict(path)
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, path)
    with pytest.raises(ValueError, match=r"keys \['epoch', 'optimizer'\]"):
        read_state_dict(path)


def test_truncated_safetensors_is_named(tmp_path):
    path = tmp_path / "cut.safetensors"
    write_safetensors(path, {"w": torch.zeros(4, 4)})
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="cut or corrupt") as err:
        read_state_dict(path)
    assert "cut.safetensors" in str(err.value)
    path.write_bytes(b"\x00" * 4)
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_state_dict(path)


def _raw_safetensors(header: object, body: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + body


F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    "content",
    [
        struct.pack("<Q", 2**40) + b"{}",  # announces a terabyte of header
        struct.pack("<Q", 3) + b"abc",  # header not JSON
        _raw_safetensors([1, 2], b""),  # header not an object
        _raw_safetensors({"w": {**F32_2, "dtype": "X9"}}, bytes(8)),  # unknown dtype
        _raw_safetensors({"w": {**F32_2, "shape": [4]}}, bytes(8)),  # shape larger than bytes
        _raw_safetensors({"w": {**F32_2, "data_offsets": [0, 16]}}, bytes(8)),  # past the end
        _raw_safetensors({"w": F32_2, "v": F32_2}, bytes(8)),  # two tensors on the same bytes
        _raw_safetensors({"w": F32_2}, bytes(12)),  # bytes no tensor claims
    ],
    ids=["huge-header", "not-json", "list", "dtype", "shape", "past-end", "overlap", "gap"],
)
def test_malformed_safetensors_is_one_error_naming_the_file(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a safetensors file, or it is cut or corrupt") as err:
        read_state_dict(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_other_architecture_is_refused_with_the_first_mismatches(tmp_path):
    path = tmp_path / "resnet34-weights.pth"
    torch.save(resnet34().state_dict(), path)
    model = resnet18()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as err:
        load_pretrained(model, path)
    message = str(err.value)
    assert str(path) in message
    assert "not in the model: layer1.2.conv1.weight" in message
    assert "(+" in message  # more than the five shown
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_wrong_shapes_and_missing_keys_are_listed(tmp_path):
    state = torchvision_state(5)
    state["layer3.0.conv1.weight"] = torch.zeros(256, 128, 1, 1)
    del state["layer2.1.bn1.running_var"]
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        load_pretrained(resnet18(), path)
    message = str(err.value)
    assert "missing from the file: layer2.1.bn1.running_var" in message
    assert "layer3.0.conv1.weight (256, 128, 1, 1) in the file, (256, 128, 3, 3) in the model" in (
        message
    )


def test_deep_stem_files_get_a_hint(tmp_path):
    state = torchvision_state(6)
    state["conv1.0.weight"] = state.pop("conv1.weight")[:32]
    path = tmp_path / "resnet50d.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="deep stem"):
        load_pretrained(resnet18(), path)


# ---------------------------------------------------------------- input channels


def test_adapted_filters_answer_grey_images_as_before():
    torch.manual_seed(0)
    weight = torch.randn(8, 3, 3, 3)
    grey = torch.rand(2, 1, 10, 10)
    reference = nn.functional.conv2d(grey.expand(-1, 3, -1, -1), weight)
    for in_chans in (1, 2, 4, 5, 6):
        adapted = adapt_input_conv(weight, in_chans)
        assert adapted.shape == (8, in_chans, 3, 3)
        out = nn.functional.conv2d(grey.expand(-1, in_chans, -1, -1), adapted)
        torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)
    assert adapt_input_conv(weight, 3) is weight
    torch.testing.assert_close(adapt_input_conv(weight, 1), weight.sum(1, keepdim=True))
    torch.testing.assert_close(adapt_input_conv(weight, 6), weight.repeat(1, 2, 1, 1) / 2)


def test_set_in_chans_swaps_the_first_conv_of_any_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.ReLU()), nn.Conv2d(4, 2, 1)
    )
    old = model[0][0]
    set_in_chans(model, 1)
    new = model[0][0]
    assert new.in_channels == 1 and model[1].in_channels == 4
    torch.testing.assert_close(new.weight, old.weight.sum(1, keepdim=True))
    assert torch.equal(new.bias, old.bias)
    with pytest.raises(ValueError, match="no Conv2d"):
        set_in_chans(nn.Linear(2, 2), 1)


# ---------------------------------------------------------------- ImageNet files


def hashed_file(tmp_path: Path) -> tuple[str, bytes]:
    """A small torch file and the torchvision-style name carrying its sha256 prefix."""
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(6.0)}, buffer)
    data = buffer.getvalue()
    return f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth", data


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_imagenet_download_checks_the_hash_prefix_and_caches(tmp_path):
    name, data = hashed_file(tmp_path)
    cache = tmp_path / "cache"
    with serve(FileServer(files={name: data})) as server:
        path = imagenet_weights("resnet18", cache=cache, url=server.url(name), progress=False)
    assert path == cache / name and path.read_bytes() == data
    again = imagenet_weights(
        "resnet18", cache=cache, url=f"http://127.0.0.1:{closed_port()}/{name}", progress=False
    )
    assert again == path  # served from the cache, no network needed


def test_imagenet_download_with_a_wrong_hash_is_removed(tmp_path):
    _, data = hashed_file(tmp_path)
    name = "resnet18-00000000.pth"
    cache = tmp_path / "cache"
    with serve(FileServer(files={name: data})) as server, pytest.raises(DownloadError) as err:
        imagenet_weights("resnet18", cache=cache, url=server.url(name), progress=False)
    assert "promises 00000000" in str(err.value)
    assert not (cache / name).exists()


def test_offline_message_says_to_pass_a_path(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/resnet50-0676ba61.pth"
    with pytest.raises(DownloadError) as err:
        imagenet_weights("resnet50", cache=tmp_path, url=url, progress=False)
    message = str(err.value)
    assert "pretrained='/path/to/resnet50-0676ba61.pth'" in message
    assert str(tmp_path / "resnet50-0676ba61.pth") in message


def test_a_copy_in_torch_hub_cache_is_used(tmp_path, monkeypatch):
    name, data = hashed_file(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("LRKIT_CACHE", str(tmp_path / "lrkit"))
    hub_copy = tmp_path / "torch" / "hub" / "checkpoints" / name
    hub_copy.parent.mkdir(parents=True)
    hub_copy.write_bytes(data)
    url = f"http://127.0.0.1:{closed_port()}/{name}"
    assert imagenet_weights("resnet18", url=url, progress=False) == hub_copy


def test_imagenet_urls_are_torchvisions_and_unknown_ones_are_refused():
    assert imagenet_url("resnet50") == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert imagenet_url("resnet50", "imagenet_v2").endswith("resnet50-11ad3fa6.pth")
    with pytest.raises(ValueError, match="pretrained=False"):
        imagenet_url("resnet_small")
    with pytest.raises(ValueError, match="no imagenet_v2 weights for 'resnet18'"):
        imagenet_url("resnet18", "imagenet_v2")
