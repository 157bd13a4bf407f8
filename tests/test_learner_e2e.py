"""The whole fine-tuning workflow on real data (Fashion-MNIST subset); slow, run with -m slow."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lrkit
from lrkit.models.small import simple_cnn


@pytest.mark.slow
def test_fashion_mnist_workflow(tmp_path):
    try:
        dls = lrkit.datasets.fashion_mnist(train_subset=4096, valid_subset=1024, bs=128)
    except (FileNotFoundError, OSError) as err:
        pytest.skip(f"Fashion-MNIST is not available here: {err}")
    torch.manual_seed(0)
    model = simple_cnn(num_classes=10)
    learn = lrkit.Learner(
        model,
        dls,
        nn.CrossEntropyLoss(),
        metrics=[lrkit.error_rate, lrkit.accuracy],
        splitter=lambda m: [m[0], m[1], m[2:]],
        device="cpu",
        progress=False,
    )
    learn.freeze()
    result = learn.lr_find(num_it=60, progress=False)
    lr = result.suggest("auto")
    assert math.isfinite(lr) and 1e-5 < lr < 1.0
    learn.fine_tune(1, base_lr=min(lr * 2, 1e-2))
    assert learn.frozen_idx == 0
    error = learn.recorder.log[-1]["error_rate"]
    assert error < 0.35, learn.recorder.log

    path = learn.export(tmp_path / "fashion.pth", factory=simple_cnn, kwargs={"num_classes": 10})
    predictor = lrkit.load_learner(path)
    x, _ = next(iter(dls.valid))
    label, index, probs = predictor.predict(x[0])
    assert label == dls.vocab[index] and probs.shape == (10,)
    assert index == int(learn.model.eval()(x[:1]).argmax())
