"""Model files are data: loading never runs code they name, and a load is all or nothing."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image
from torch import nn

import lrkit
import lrkit.export_file
from learner_fixtures import TinyNet, make_learner
from lrkit import DataLoaders, Learner, load_learner, register_model, vision_learner
from lrkit.cli import main
from lrkit.models import resnet18, resnet34

torch.set_num_threads(1)


class UnlistedNet(TinyNet):
    """A module-level model nobody registered: exportable, but loading it needs trust."""


@register_model
class ListedNet(TinyNet):
    """A module-level model its own module registered, so its exports load without trust."""


@pytest.fixture
def export_file(tmp_path):
    """A genuine export of an allow-listed lrkit model, to be tampered with."""
    learn = make_learner()
    learn.model = lrkit.models.vision_model("resnet_small", n_out=3, in_chans=1)
    path = tmp_path / "good.lrk"
    learn.export(path, factory=lrkit.models.vision_model,
                 kwargs={"arch": "resnet_small", "n_out": 3, "in_chans": 1})  # fmt: skip
    return path


def tampered(source, target, **changes):
    """`source`'s payload with keys replaced (a value of ... deletes the key), saved to `target`."""
    payload = torch.load(source, weights_only=True)
    for key, value in changes.items():
        if value is ...:
            del payload[key]
        else:
            payload[key] = value
    torch.save(payload, target)
    return target


def image(tmp_path):
    path = tmp_path / "cat.png"
    Image.new("L", (28, 28), 128).save(path)
    return path


# Each would create the marker file if lrkit called it with the stored keyword arguments.
def code_running_builders(marker):
    return [
        ("os:system", {"command": f"touch {marker}"}),
        ("subprocess:run", {"args": ["touch", str(marker)]}),
        ("builtins:open", {"file": str(marker), "mode": "w"}),
        ("pathlib:Path.touch", {"self": str(marker)}),
        ("lrkit.data.cache:Path", {"args": str(marker)}),  # lrkit's own, but not a model builder
    ]


@pytest.mark.parametrize("index", range(5))
def test_an_export_naming_a_code_running_function_is_refused(export_file, tmp_path, index):
    marker = tmp_path / "marker"
    ref, kwargs = code_running_builders(marker)[index]
    path = tampered(export_file, tmp_path / "evil.lrk", factory=ref, kwargs=kwargs)
    with pytest.raises(ValueError, match="not on lrkit's allow-list") as err:
        load_learner(path)
    assert ref in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_the_cli_refuses_it_in_one_line_and_runs_nothing(export_file, tmp_path, capsys):
    marker = tmp_path / "marker"
    path = tampered(export_file, tmp_path / "evil.lrk", factory="os:system",
                    kwargs={"command": f"touch {marker}"})  # fmt: skip
    assert main(["predict", str(path), str(image(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "os:system" in err and "Traceback" not in err
    assert not marker.exists()


def test_trust_is_the_one_opt_in_to_run_what_the_file_names(export_file, tmp_path):
    marker = tmp_path / "marker"
    path = tampered(export_file, tmp_path / "trusted.lrk", factory="builtins:open",
                    kwargs={"file": str(marker), "mode": "w"})  # fmt: skip
    with pytest.raises(ValueError, match=r"not an nn\.Module"):
        load_learner(path, trust_pickle=True)
    assert marker.exists()  # the guard, not luck, is what kept the other tests' markers away


def test_registered_and_lrkit_builders_load_unregistered_ones_need_trust(tmp_path):
    learn = make_learner()
    learn.model = ListedNet()
    listed = learn.export(tmp_path / "listed.lrk")
    assert isinstance(load_learner(listed).model, ListedNet)

    learn.model = UnlistedNet()
    with pytest.warns(UserWarning, match="register_model"):
        unlisted = learn.export(tmp_path / "unlisted.lrk")
    with pytest.raises(ValueError, match=r"test_untrusted_files:UnlistedNet"):
        load_learner(unlisted)
    assert isinstance(load_learner(unlisted, trust_pickle=True).model, UnlistedNet)


def test_library_names_are_built_without_weights_of_their_own(export_file, tmp_path):
    timm = pytest.importorskip("timm", reason="timm is not installed here")
    name = timm.list_models()[0]
    path = tampered(export_file, tmp_path / "timm.lrk", factory=f"timm:{name}",
                    kwargs={"checkpoint_path": "/etc/passwd"})  # fmt: skip
    with pytest.raises(ValueError, match="checkpoint_path"):
        load_learner(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"factory": ...}, "has no 'factory'"),
        ({"state_dict": ...}, "has no 'state_dict'"),
        ({"vocab": ...}, "has no 'vocab'"),
        ({"factory": 42}, "'factory' should be"),
        ({"kwargs": ["arch"]}, "'kwargs' should be"),
        ({"multi_label": "yes"}, "'multi_label' should be"),
        ({"thresh": "high"}, "'thresh' should be"),
        ({"state_dict": {"body.conv1.weight": [1.0]}}, "is not a tensor"),
        ({"kwargs": {"arch": "resnet_small", "n_out": 3, "colour": 1}}, "fails to build"),
        ({"kwargs": {"arch": "resnet_small", "n_out": 7, "in_chans": 1}}, "do not fit"),
        ({"factory": "no colon here"}, "looks like"),
        ({"format": "something"}, "not an lrkit export"),
    ],
)
def test_a_malformed_export_is_one_clear_error(export_file, tmp_path, changes, message):
    path = tampered(export_file, tmp_path / "bad.lrk", **changes)
    with pytest.raises(ValueError, match=message) as err:
        load_learner(path)
    assert "bad.lrk" in str(err.value) and "\n" not in str(err.value)


def test_a_half_written_export_is_one_clear_error(export_file, tmp_path, capsys):
    half = tmp_path / "half.lrk"
    half.write_bytes(export_file.read_bytes()[: export_file.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"half\.lrk is not a readable"):
        load_learner(half)
    assert main(["predict", str(half), str(image(tmp_path))]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# ------------------------------------------------------------------- all-or-nothing loads


def snapshot(learn: Learner) -> tuple[dict, dict]:
    """Copies of the model's and the optimizer's state."""
    return copy.deepcopy(learn.model.state_dict()), copy.deepcopy(learn.opt.state_dict())


def assert_unchanged(learn: Learner, before: tuple[dict, dict]) -> None:
    model, opt = before
    now_model, now_opt = snapshot(learn)
    assert now_model.keys() == model.keys()
    assert all(torch.equal(now_model[k], model[k]) for k in model)
    assert now_opt["param_groups"] == opt["param_groups"]
    assert now_opt["state"].keys() == opt["state"].keys()
    for key, state in opt["state"].items():
        assert all(torch.equal(state[n], now_opt["state"][key][n]) for n in state)


def resnet_learner(build, n_groups: int = 1) -> Learner:
    torch.manual_seed(n_groups)  # another start for each kind of learner
    model = build(num_classes=3)
    x = torch.randn(8, 3, 32, 32)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, torch.arange(8) % 3), batch_size=4
    )
    splitter = None
    if n_groups == 2:
        splitter = lambda m: [[p for n, p in m.named_parameters() if not n.startswith("fc")],  # noqa: E731
                              list(m.fc.parameters())]  # fmt: skip
    learn = Learner(model, DataLoaders(loader, loader), nn.CrossEntropyLoss(), splitter=splitter,
                    progress=False)  # fmt: skip
    learn.fit(1, 1e-3)  # optimizer state to protect
    return learn


def test_weights_of_another_architecture_change_nothing(tmp_path):
    path = resnet_learner(resnet34).save(tmp_path / "resnet34.pth")
    learn = resnet_learner(resnet18)
    before = snapshot(learn)
    with pytest.raises(ValueError, match=r"resnet34\.pth do not fit.*nothing was loaded"):
        learn.load(path)
    assert_unchanged(learn, before)


def test_fitting_weights_with_unfitting_optimizer_groups_change_nothing(tmp_path):
    path = resnet_learner(resnet18, n_groups=2).save(tmp_path / "two_groups.pth")
    learn = resnet_learner(resnet18, n_groups=1)
    before = snapshot(learn)
    with pytest.raises(ValueError, match="2 param groups, this optimizer 1"):
        learn.load(path)
    assert_unchanged(learn, before)
    learn.load(path, with_opt=False)  # the weights alone fit
    assert not torch.equal(learn.model.conv1.weight, before[0]["conv1.weight"])


def test_wrong_dtype_or_optimizer_state_shape_changes_nothing(tmp_path):
    source = make_learner()
    source.fit(1, 1e-2)
    state = torch.load(source.save(tmp_path / "ok.pth"), weights_only=True)
    learn = make_learner()
    learn.fit(1, 1e-3)
    before = snapshot(learn)

    bad_dtype = {**state, "model": dict(state["model"])}
    bad_dtype["model"]["body.1.num_batches_tracked"] = torch.tensor(1.5)
    torch.save(bad_dtype, tmp_path / "dtype.pth")
    with pytest.raises(ValueError, match=r"num_batches_tracked: torch\.float32 in the file"):
        learn.load(tmp_path / "dtype.pth")
    assert_unchanged(learn, before)

    bad_opt = {**state, "opt": {**state["opt"], "state": dict(state["opt"]["state"])}}
    first = next(iter(bad_opt["opt"]["state"]))
    bad_opt["opt"]["state"][first] = {
        k: (v[:1] if v.ndim else v) for k, v in bad_opt["opt"]["state"][first].items()
    }
    torch.save(bad_opt, tmp_path / "opt.pth")
    with pytest.raises(ValueError, match="has shape"):
        learn.load(tmp_path / "opt.pth")
    assert_unchanged(learn, before)


def image_dls(n: int = 8) -> DataLoaders:
    x = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % 3
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    return DataLoaders(loader, loader, vocab=["a", "b", "c"], stats=((0.5,), (0.25,)))


@pytest.mark.parametrize("kind", ["save", "export"])
def test_lrkit_own_files_are_accepted_as_pretrained(tmp_path, kind):
    torch.manual_seed(1)
    source = vision_learner(image_dls(), "resnet_small", pretrained=False, progress=False)
    path = tmp_path / f"{kind}.lrk"
    source.save(path) if kind == "save" else source.export(path)
    torch.manual_seed(2)
    learn = vision_learner(image_dls(), "resnet_small", pretrained=path, progress=False,
                           n_out=5)  # fmt: skip
    mine, theirs = learn.model.body.state_dict(), source.model.body.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    assert learn.frozen_idx == learn.n_groups - 1  # a pretrained body starts frozen


def test_the_cli_takes_its_own_model_file_as_pretrained(tmp_path, capsys):
    from data_fixtures import fake_fashion_files

    folder = tmp_path / "fashion"
    folder.mkdir()
    for name, content in fake_fashion_files(n_train=100, n_test=20).items():
        (folder / name).write_bytes(content)
    common = ["--dataset", "fashion-mnist", "--data", str(folder), "--bs", "50",
              "--device", "cpu", "--seed", "1", "--epochs", "1", "--lr", "1e-3"]  # fmt: skip
    assert main(["train", *common, "--out", str(tmp_path / "first")]) == 0
    model = tmp_path / "first" / "model.lrk"
    assert main(["train", *common, "--arch", "resnet_small", "--pretrained", str(model),
                 "--out", str(tmp_path / "second")]) == 0, capsys.readouterr().err  # fmt: skip


def trained_state(tmp_path, opt=None) -> dict:
    """The payload `Learner.save` writes after one epoch (with `opt`, or the default SGD)."""
    source = make_learner() if opt is None else make_learner(opt=opt)
    source.fit(1, 1e-2)
    return torch.load(source.save(tmp_path / "source.pth"), weights_only=True)


@pytest.mark.parametrize("kind", ["sparse", "meta"])
def test_a_tensor_without_dense_data_changes_nothing(tmp_path, kind):
    state = trained_state(tmp_path)
    last = list(state["model"])[-1]  # copied last, after every other key
    value = state["model"][last]
    state["model"][last] = (
        value.to_sparse() if kind == "sparse" else torch.empty(value.shape, device="meta")
    )
    torch.save(state, tmp_path / "odd.pth")
    learn = make_learner()
    learn.fit(1, 1e-3)
    before = snapshot(learn)
    with pytest.raises(ValueError, match=rf"{last} is a {kind}.*nothing was loaded") as err:
        learn.load(tmp_path / "odd.pth")
    assert "\n" not in str(err.value)
    assert_unchanged(learn, before)


@pytest.mark.parametrize(
    ("saved_with", "loaded_into"),
    [(torch.optim.Adam, "sgd"), ("sgd", torch.optim.Adam)],
)
def test_another_optimizers_state_is_refused_and_changes_nothing(tmp_path, saved_with, loaded_into):
    from functools import partial

    sgd = partial(torch.optim.SGD, momentum=0.9)
    state = trained_state(tmp_path, opt=sgd if saved_with == "sgd" else saved_with)
    torch.save(state, tmp_path / "other_opt.pth")
    learn = make_learner(opt=sgd if loaded_into == "sgd" else loaded_into)
    learn.fit(1, 1e-3)
    before = snapshot(learn)
    with pytest.raises(ValueError, match=r"another kind of optimizer.*with_opt=False") as err:
        learn.load(tmp_path / "other_opt.pth")
    assert "other_opt.pth" in str(err.value) and "\n" not in str(err.value)
    assert_unchanged(learn, before)
    learn.load(tmp_path / "other_opt.pth", with_opt=False)
    learn.fit(1, 1e-3)  # the learner still trains


def damage_state(opt: dict, how: str) -> None:
    first = next(iter(opt["state"]))
    if how == "state_list":
        opt["state"] = [1, 2]
    elif how == "group_not_dict":
        opt["param_groups"] = ["lr"]
    elif how == "lr_string":
        opt["param_groups"][0]["lr"] = "abc"
    elif how == "duplicate_ids":
        opt["param_groups"][0]["params"] = [0] * len(opt["param_groups"][0]["params"])
    elif how == "complex_state":
        opt["state"][first]["exp_avg"] = opt["state"][first]["exp_avg"].to(torch.complex64)
    elif how == "sparse_state":
        opt["state"][first]["exp_avg"] = opt["state"][first]["exp_avg"].to_sparse()
    elif how == "extra_state":
        opt["state"][first]["zzz"] = torch.zeros(())


@pytest.mark.parametrize(
    "how",
    ["state_list", "group_not_dict", "lr_string", "duplicate_ids", "complex_state",
     "sparse_state", "extra_state"],
)  # fmt: skip
def test_a_malformed_optimizer_state_is_one_line_and_changes_nothing(tmp_path, how):
    state = trained_state(tmp_path, opt=torch.optim.Adam)
    damage_state(state["opt"], how)
    torch.save(state, tmp_path / "bad_opt.pth")
    learn = make_learner(opt=torch.optim.Adam)
    learn.fit(1, 1e-3)
    before = snapshot(learn)
    with pytest.raises(ValueError, match=r"optimizer state in .*bad_opt\.pth") as err:
        learn.load(tmp_path / "bad_opt.pth")
    assert "\n" not in str(err.value)
    assert_unchanged(learn, before)


# ------------------------------------------------------- small file, big model: refused unbuilt

REAL_BUILDS: list[dict] = []  # the keyword arguments of each build that allocated memory


class Scratch(nn.Module):
    """A linear layer plus a non-persistent buffer (in no state_dict, so in no file)."""

    def __init__(self, scratch: int) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.register_buffer("scratch", torch.arange(float(scratch)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


@register_model
def counted_model(width: int = 4, scratch: int = 8) -> nn.Module:
    """simple_cnn (or Scratch for width=0), recording every build off the meta device."""
    if torch.empty(0).device.type != "meta":
        REAL_BUILDS.append({"width": width, "scratch": scratch})
    if width == 0:
        return Scratch(scratch)
    return lrkit.models.simple_cnn(num_classes=3, in_channels=1, width=width)


@pytest.mark.parametrize(
    ("kwargs", "huge", "message"),
    [({"width": 4}, {"width": 1500}, "MiB more than"),  # ~1 GB of weights the file lacks
     ({"width": 0, "scratch": 8}, {"width": 0, "scratch": 10**8}, "MiB more than")],  # 400 MB
)  # fmt: skip
def test_a_small_export_asking_for_a_huge_model_is_refused_before_building_it(
    tmp_path, kwargs, huge, message
):
    good = tmp_path / "good.lrk"
    lrkit.export_file.export(counted_model(**kwargs), good, factory=counted_model, kwargs=kwargs)
    path = tampered(good, tmp_path / "huge.lrk", kwargs=huge)
    REAL_BUILDS.clear()
    with pytest.raises(ValueError, match=message) as err:
        load_learner(path)
    assert "huge.lrk" in str(err.value) and "\n" not in str(err.value)
    assert REAL_BUILDS == []  # refused from shapes alone: nothing was allocated for it


def test_buffers_outside_the_file_are_built_as_the_builder_makes_them(tmp_path):
    kwargs = {"width": 0, "scratch": 5}
    path = lrkit.export_file.export(
        counted_model(**kwargs), tmp_path / "scratch.lrk", factory=counted_model, kwargs=kwargs
    )
    model = load_learner(path).model
    assert torch.equal(model.scratch, torch.arange(5.0))


# ------------------------------------------- preprocessing, vocabulary, threshold: checked on load

SQUARE = {"size": 16, "mean": [0.5], "std": [0.25]}  # fits the export_file model (1 channel)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"preprocess": {"size": -5}}, "size should be a whole number"),
        ({"preprocess": {"size": "big"}}, "size should be a whole number"),
        ({"preprocess": {"size": 16.5}}, "size should be a whole number"),
        ({"preprocess": {"size": 10**9}}, "size should be a whole number"),
        ({"preprocess": {"presize": -1, "size": 16}}, "presize should be"),
        ({"preprocess": {"size": 16, "channels": 7}}, "channels should be 1 or 3"),
        ({"preprocess": {"size": 16, "channels": 3}}, "cannot take a 3-channel 16x16 image"),
        ({"preprocess": {**SQUARE, "mean": [0.5, 0.5]}}, "mean has 2 values"),
        ({"preprocess": {**SQUARE, "std": [0.25] * 3}}, "std has 3 values for 1-channel"),
        ({"preprocess": {**SQUARE, "std": [0.0]}}, "std should hold finite numbers above 0"),
        ({"preprocess": {**SQUARE, "mean": [float("nan")]}}, "mean should hold finite"),
        ({"preprocess": {**SQUARE, "mean": "abc"}}, "mean should be a list of numbers"),
        ({"preprocess": {**SQUARE, "crop": True}}, "unknown preprocess keys"),
        ({"preprocess": SQUARE, "vocab": []}, "vocabulary is empty"),
        ({"preprocess": SQUARE, "vocab": [1, 2, 3]}, r"class names \(str\)"),
        ({"preprocess": SQUARE, "vocab": ["a", "a", "b"]}, "names a class twice"),
        ({"preprocess": SQUARE, "vocab": ["a"]}, "gives 3 scores per image for 1 classes"),
        ({"preprocess": SQUARE, "thresh": float("nan")}, "'thresh' should be a number between"),
        ({"preprocess": SQUARE, "thresh": 1.5}, "'thresh' should be a number between"),
        ({"kwargs": {"arch": "resnet_small", "n_out": 10**40, "in_chans": 1}}, "fails to build"),
    ],
)
def test_a_malformed_export_never_reaches_predict(export_file, tmp_path, changes, message, capsys):
    path = tampered(export_file, tmp_path / "bad.lrk", **{"vocab": ["a", "b", "c"], **changes})
    with pytest.raises(ValueError, match=message) as err:
        load_learner(path)
    assert "bad.lrk" in str(err.value) and "\n" not in str(err.value)
    assert main(["predict", str(path), str(image(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.lrk" in err and "Traceback" not in err


def test_the_sound_preprocessing_still_predicts(export_file, tmp_path):
    path = tampered(export_file, tmp_path / "ok.lrk", vocab=["a", "b", "c"], preprocess=SQUARE)
    label, index, probs = load_learner(path).predict(image(tmp_path))
    assert label == ["a", "b", "c"][index] and probs.shape == (3,)


def test_a_vocabulary_of_another_length_is_refused_when_predicting(export_file, tmp_path):
    path = tampered(export_file, tmp_path / "short.lrk", vocab=["a", "b"], preprocess=None)
    predictor = load_learner(path)  # no image size stored: the output is known only when run
    with pytest.raises(ValueError, match=r"gives \(3,\) scores for 2 classes"):
        predictor.predict(torch.zeros(1, 28, 28))
    with pytest.raises(ValueError, match=r"cannot take an input of shape \(5,\)") as err:
        predictor.predict(torch.zeros(5))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_that_are_not_finite_are_refused(export_file, tmp_path, bad, capsys):
    state = torch.load(export_file, weights_only=True)["state_dict"]
    key = "head.4.weight" if "head.4.weight" in state else list(state)[-2]
    state = {**state, key: state[key].clone().index_fill_(0, torch.tensor([0]), bad)}
    path = tampered(export_file, tmp_path / "nan.lrk", state_dict=state)
    with pytest.raises(ValueError, match=rf"nan\.lrk: its weights hold NaN or infinity .*{key}"):
        load_learner(path)
    assert main(["predict", str(path), str(image(tmp_path))]) == 2  # not exit 0 with "(nan)"
    assert capsys.readouterr().err.count("\n") == 1


def test_a_plain_pickle_is_refused_in_one_line_without_warnings(tmp_path, capsys):
    import pickle
    import warnings

    path = tmp_path / "plain.lrk"
    path.write_bytes(pickle.dumps({"format": "lrkit-export"}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # a warning would print lines before the error's one
        assert main(["predict", str(path), str(image(tmp_path))]) == 2
    assert [str(w.message) for w in caught] == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plain.lrk is not a readable" in err


def test_pretrained_weights_without_dense_data_are_one_clear_error(tmp_path):
    source = vision_learner(image_dls(), "resnet_small", pretrained=False, progress=False)
    state = torch.load(source.save(tmp_path / "source.pth"), weights_only=True)
    key = next(k for k in state["model"] if k.endswith("conv1.weight"))
    state["model"][key] = state["model"][key].to_sparse()
    torch.save(state, tmp_path / "sparse.pth")
    with pytest.raises(ValueError, match=r"sparse\.pth do not fit.*is a sparse_coo tensor") as err:
        vision_learner(image_dls(), "resnet_small", pretrained=tmp_path / "sparse.pth")
    assert "\n" not in str(err.value)
