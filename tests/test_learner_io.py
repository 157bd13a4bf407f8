"""Saving, loading, exporting, predicting, the summary and the figures of a Learner."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from learner_fixtures import N_IN, TinyNet, make_dls, make_learner
from lrkit import Prediction, load_learner, register_model
from lrkit.data.preprocess import Preprocess


def _trained():
    learn = make_learner()
    learn.fit_one_cycle(1, 1e-2)
    return learn


def _outputs(learn) -> torch.Tensor:
    x, _ = learn.dls.valid.dataset.tensors
    learn.model.eval()
    with torch.no_grad():
        return learn.model(x)


def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    learn = _trained()
    path = learn.save(tmp_path / "model.pth")
    expected = _outputs(learn)
    opt_state = learn.opt.state_dict()

    other = make_learner()
    assert not torch.equal(_outputs(other), expected)
    other.load(path)
    assert torch.equal(_outputs(other), expected)
    loaded = other.opt.state_dict()
    assert loaded["param_groups"] == opt_state["param_groups"]
    for key, state in opt_state["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(loaded["state"][key][name]))
    # with the optimizer state restored, training on gives the same weights as the original
    learn.dls, other.dls = make_dls(), make_dls()
    learn.fit(1, 1e-3)
    other.fit(1, 1e-3)
    assert torch.equal(_outputs(other), _outputs(learn))
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed away


def test_load_errors_name_the_file(tmp_path):
    learn = make_learner()
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        learn.load(tmp_path / "missing.pth")
    torch.save({"something.else": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other\.pth do not fit this model"):
        learn.load(tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"junk\.pth is not a readable"):
        learn.load(tmp_path / "junk.pth")


def test_a_plain_state_dict_file_loads(tmp_path):
    source = TinyNet()
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    learn = make_learner()
    learn.load(tmp_path / "weights.pth")
    assert torch.equal(learn.model.head.weight, source.head.weight)


def test_export_and_predict(tmp_path):
    learn = _trained()
    path = learn.export(tmp_path / "export.pth")
    x = learn.dls.valid.dataset.tensors[0][3]
    expected = learn.predict(x)
    assert isinstance(expected, Prediction)
    label, index, probs = expected
    assert label == ["a", "b", "c"][index]
    assert probs.shape == (3,) and probs.sum().item() == pytest.approx(1.0)
    assert index == int(_outputs(learn)[3].argmax())

    predictor = load_learner(path)
    got = predictor.predict(x)
    assert got.label == label and got.index == index
    assert torch.allclose(got.probs, probs)
    assert predictor.predict(x.numpy()).index == index
    assert not predictor.model.training


def test_export_checks_the_model_can_be_rebuilt(tmp_path):
    learn = make_learner()
    learn.model.head = nn.Linear(16, 5)  # TinyNet() would build a 3-way head
    with pytest.raises(ValueError, match=r"does not rebuild this model \(head\.weight"):
        learn.export(tmp_path / "bad.pth")
    learn.export(tmp_path / "good.pth", factory=TinyNet, kwargs={"n_out": 5})
    assert load_learner(tmp_path / "good.pth").model.head.out_features == 5
    with pytest.raises(ValueError, match="lambda or a local"):
        learn.export(tmp_path / "lambda.pth", factory=lambda: TinyNet(n_out=5))
    assert not (tmp_path / "bad.pth").exists()


def test_export_warns_when_the_constructor_lives_in_the_script(tmp_path, monkeypatch):
    class ScriptNet(TinyNet):
        pass

    ScriptNet.__module__, ScriptNet.__qualname__ = "__main__", "ScriptNet"
    monkeypatch.setattr(sys.modules["__main__"], "ScriptNet", ScriptNet, raising=False)
    register_model(ScriptNet)
    learn = make_learner()
    learn.model = ScriptNet()
    with pytest.warns(UserWarning, match=r"__main__:ScriptNet lives in the running script"):
        learn.export(tmp_path / "script.pth")
    assert load_learner(tmp_path / "script.pth").model.__class__ is ScriptNet


def test_pickled_export_needs_explicit_trust(tmp_path):
    class LocalNet(nn.Module):  # a local class cannot be rebuilt by name
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(N_IN, 3)

        def forward(self, x):
            return self.fc(x)

    learn = make_learner()
    learn.model = LocalNet()
    with pytest.raises(ValueError, match="pickle_model=True"):
        learn.export(tmp_path / "local.pth")
    # a module-level class pickles and unpickles by reference
    learn.model = TinyNet(n_hidden=4)
    learn.export(tmp_path / "pickled.pth", pickle_model=True)
    with pytest.raises(ValueError, match="trust_pickle=True"):
        load_learner(tmp_path / "pickled.pth")
    predictor = load_learner(tmp_path / "pickled.pth", trust_pickle=True)
    assert predictor.model.body[0].out_features == 4


@register_model
class TinyImageNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))  # (B, 3, H, W) -> (B, 3) -> (B, 2)


def test_predict_an_image_file_with_exported_preprocessing(tmp_path):
    learn = make_learner()
    learn.model = TinyImageNet()
    learn.dls.vocab = ["cat", "dog"]
    preprocess = {"size": 4, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    learn.export(tmp_path / "img.pth", preprocess=preprocess)
    pixels = np.zeros((6, 8, 3), dtype=np.uint8)
    pixels[:, :, 0] = 255
    Image.fromarray(pixels).save(tmp_path / "red.png")
    predictor = load_learner(tmp_path / "img.pth")
    got = predictor.predict(tmp_path / "red.png")
    # resized to 4x5, centre-cropped to 4x4: red channel (1 - 0.5) / 0.25 = 2, others -2
    x = torch.tensor([2.0, -2.0, -2.0]).view(3, 1, 1).expand(3, 4, 4)
    assert torch.allclose(got.probs, torch.softmax(learn.model(x[None])[0], dim=0), atol=1e-6)
    assert got.label in ("cat", "dog")
    with pytest.raises(TypeError, match="vision_learner"):  # image files are lrkit.vision's
        learn.predict(tmp_path / "red.png")


def test_export_keeps_the_loaders_normalisation_stats(tmp_path):
    learn = make_learner()
    learn.model = TinyImageNet()
    learn.dls.vocab = ["cat", "dog"]  # one class per output
    learn.dls.stats = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    learn.export(tmp_path / "stats.pth")
    predictor = load_learner(tmp_path / "stats.pth")
    assert predictor.preprocess == Preprocess(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    image = Image.fromarray(np.full((3, 5, 3), 255, dtype=np.uint8))  # white: (1 - 0.5) / 0.25
    got = predictor.predict(image)
    expected = torch.softmax(learn.model(torch.full((1, 3, 3, 5), 2.0))[0], dim=0)
    assert torch.allclose(got.probs, expected, atol=1e-6)


def test_multi_label_predict():
    learn = make_learner()
    learn.dls.multi_label = True
    with torch.no_grad():
        learn.model.head.bias.copy_(torch.tensor([50.0, -50.0, 50.0]))
        learn.model.head.weight.zero_()
    label, index, probs = learn.predict(torch.zeros(N_IN))
    assert index == [0, 2] and label == ["a", "c"]
    assert probs.tolist() == pytest.approx([1.0, 0.0, 1.0])


def test_summary_names_modules_groups_and_totals():
    learn = make_learner()
    learn.freeze()
    text = learn.summary()
    assert "body      Sequential   (16, 16)         176  part       0" in text
    assert "  body.0  Linear       (16, 16)         144  no         0" in text
    assert "head      Linear       (16, 3)           51  yes        1" in text
    assert "layer groups: 2; 1 of 2 groups frozen (group 0); only the head (group 1) trains" in text
    assert "total params: 227" in text
    assert "trainable params: 83" in text  # head 51 + BatchNorm 32
    assert "non-trainable params: 144" in text
    assert "optimizer: AdamW" in text and "loss: CrossEntropyLoss()" in text
    state = torch.random.get_rng_state()
    learn.summary()
    assert torch.equal(state, torch.random.get_rng_state())
    assert learn.model.training
    # without a valid loader the (shuffled) train loader gives the batch, and its order is kept
    learn.dls.valid = None
    order = learn.dls.train.generator.get_state()
    assert "head      Linear       (16, 3)" in learn.summary()
    assert torch.equal(order, learn.dls.train.generator.get_state())


def test_plots_return_figures_and_write_png(tmp_path):
    learn = make_learner()
    learn.fit_one_cycle(2, slice(1e-3, 1e-2))
    fig = learn.recorder.plot_losses(tmp_path / "losses.png")
    assert isinstance(fig, Figure)
    assert (tmp_path / "losses.png").stat().st_size > 0
    fig = learn.recorder.plot_schedule(tmp_path / "schedule.png")
    lr_axis = fig.axes[0]
    assert len(lr_axis.lines) == 2  # one line per layer group
    assert (tmp_path / "schedule.png").stat().st_size > 0
