"""Extra tasks for the suggestion-rule study, in the shape of the open suite's tasks.py.

Each is a `tasks.Task` (train/test tensors, a model factory, epochs, batch size, optimizer)
trained with the suite's recipe (`tasks.fit`: the optimizer + OneCycleLR, pct_start 0.25, one
thread). They vary what the open suite holds fixed: the optimizer (SGD with momentum), the
architecture (no BatchNorm), the data (tabular), the schedule length, and the pretrained body
(real ImageNet weights on real photos).

- S1 sgd-cnn: the T1 CNN (BN) on 4000 Fashion-MNIST images, SGD momentum 0.9, 2 epochs, bs 64.
- S2 nobn-cnn: the T1 CNN without BatchNorm (conv + bias + ReLU), AdamW, 4000 images, 2 epochs.
- S3 tabular: breast-cancer (sklearn, 30 standardised features), MLP 30-64-64-2, AdamW,
  30 epochs, bs 32, fixed 50/50 split.
- S4 long-mlp: Fashion-MNIST MLP 784-128-10 (no BN), AdamW, 3000 images, 10 epochs, bs 64.
- S5 digits-sgd: T2's digits MLP with SGD momentum 0.9, 20 epochs, bs 64.
- S6 pets-head: a new linear head on EfficientNet-Lite0's ImageNet body (frozen, eval mode;
  pooled features of ../shared/pets_sample at 160 px cached once), 37 breeds, 3 photos per
  breed to train and 2 to test, AdamW, 10 epochs, bs 16.

- S7 fewshot-head: T3's frozen body and a new head from only 100 labelled images, 10 epochs,
  bs 10 (the range test's 100 steps are 10 epochs: its training loss never turns up).
- S8 wine: wine (sklearn, 13 standardised features), MLP 13-32-3, AdamW, 40 epochs, bs 8.
- S9 sgd-mlp-long: Fashion-MNIST MLP 784-128-10, SGD momentum 0.9, 2000 images, 8 epochs.

S7-S9 were added after S6 showed the first `auto` failing on a curve that never turns up, to
check the revised rule on tasks it had not seen. Test sets are small for S3 (285), S6 (74
photos: one photo is 1.35 points) and S8 (89), so their regrets are noisy.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tasks  # the open suite's tasks.py (the study puts its folder on sys.path)
import torch
import torch.nn as nn

PETS = Path(__file__).resolve().parents[2] / "shared" / "pets_sample" / "images"


def _fm_subset(n: int, n_test: int = 5000):
    """A fixed random `n`-image Fashion-MNIST train subset and the first `n_test` test images."""
    xtr, ytr, xte, yte = tasks.fmnist()
    g = torch.Generator().manual_seed(4321)
    idx = torch.randperm(len(xtr), generator=g)[:n]
    return xtr[idx], ytr[idx], xte[:n_test], yte[:n_test]


def _nobn_cnn() -> nn.Module:
    def block(ni: int, nf: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(ni, nf, 3, stride=2, padding=1), nn.ReLU())

    return nn.Sequential(
        block(1, 16),
        block(16, 32),
        block(32, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def task_sgd_cnn() -> tasks.Task:
    return tasks.Task(
        "S1",
        *_fm_subset(4000),
        lambda: nn.Sequential(tasks.cnn_body(), nn.Linear(64, 10)),
        epochs=2,
        bs=64,
        opt="sgd",
        desc="Fashion-MNIST CNN (BN) from scratch, SGD momentum 0.9, 4000 images, 2 epochs",
    )


def task_nobn_cnn() -> tasks.Task:
    return tasks.Task(
        "S2",
        *_fm_subset(4000),
        _nobn_cnn,
        epochs=2,
        bs=64,
        desc="Fashion-MNIST CNN without BatchNorm, AdamW, 4000 images, 2 epochs",
    )


def _split_half(x: torch.Tensor, y: torch.Tensor):
    g = torch.Generator().manual_seed(1234)
    p = torch.randperm(len(x), generator=g)
    h = len(x) // 2
    return x[p[:h]], y[p[:h]], x[p[h:]], y[p[h:]]


def task_tabular() -> tasks.Task:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    x = torch.tensor(d.data, dtype=torch.float32)
    xtr, ytr, xte, yte = _split_half(x, torch.tensor(d.target).long())
    mean, std = xtr.mean(0), xtr.std(0)
    return tasks.Task(
        "S3",
        (xtr - mean) / std,
        ytr,
        (xte - mean) / std,
        yte,
        lambda: nn.Sequential(
            nn.Linear(30, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2)
        ),
        epochs=30,
        bs=32,
        desc="breast-cancer tabular (standardised), MLP 30-64-64-2, AdamW, 30 epochs, bs 32",
    )


def task_long_mlp() -> tasks.Task:
    xtr, ytr, xte, yte = _fm_subset(3000)
    return tasks.Task(
        "S4",
        xtr.flatten(1),
        ytr,
        xte.flatten(1),
        yte,
        lambda: nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)),
        epochs=10,
        bs=64,
        desc="Fashion-MNIST MLP 784-128-10 (no BN), AdamW, 3000 images, 10 epochs, bs 64",
    )


def task_digits_sgd() -> tasks.Task:
    t2 = tasks.task_t2()
    return tasks.Task(
        "S5",
        t2.xtr,
        t2.ytr,
        t2.xte,
        t2.yte,
        t2.make_model,
        epochs=20,
        bs=64,
        opt="sgd",
        desc="sklearn digits MLP 64-128-10 (T2) with SGD momentum 0.9, 20 epochs, bs 64",
    )


def _pets_features(size: int = 160):
    """(features (N, 1280), breed index (N,), photo names) of the Pets sample, cached."""
    cache = tasks.RESULTS / f"pets_lite0_{size}.pt"
    if cache.exists():
        return torch.load(cache)
    from PIL import Image

    from lrkit.models import efficientnet_lite0
    from lrkit.models.hub import imagenet_weights, weights_stats
    from lrkit.models.weights import load_pretrained

    model = load_pretrained(efficientnet_lite0(), imagenet_weights("efficientnet_lite0")).eval()
    mean, std = (torch.tensor(s).view(3, 1, 1) for s in weights_stats("efficientnet_lite0"))
    names = sorted(p.name for p in PETS.glob("*.jpg"))
    feats = []
    with torch.no_grad():
        for name in names:
            img = Image.open(PETS / name).convert("RGB")
            scale = size / min(img.size)
            img = img.resize(
                (max(size, round(img.width * scale)), max(size, round(img.height * scale)))
            )
            left, top = (img.width - size) // 2, (img.height - size) // 2
            img = img.crop((left, top, left + size, top + size))
            x = torch.tensor(np.asarray(img), dtype=torch.float32).permute(2, 0, 1) / 255
            x = ((x - mean) / std).unsqueeze(0)  # (1, 3, size, size)
            feats.append(model.forward_head(model.forward_features(x), pre_logits=True))
    breeds = [re.match(r"^(.+)_\d+\.jpg$", n).group(1) for n in names]
    vocab = sorted(set(breeds))
    out = (torch.cat(feats), torch.tensor([vocab.index(b) for b in breeds]), names)
    torch.save(out, cache)
    return out


def task_pets_head() -> tasks.Task:
    feats, labels, _ = _pets_features()
    train = torch.zeros(len(labels), dtype=torch.bool)
    for breed in labels.unique():
        train[torch.nonzero(labels == breed).squeeze(1)[:3]] = True  # 3 of 5 photos per breed
    return tasks.Task(
        "S6",
        feats[train],
        labels[train],
        feats[~train],
        labels[~train],
        lambda: nn.Linear(feats.shape[1], 37),
        epochs=10,
        bs=16,
        desc="Pets sample, frozen EfficientNet-Lite0 ImageNet body (160 px features), new "
        "linear head, 111 train / 74 test photos, AdamW, 10 epochs, bs 16",
    )


def task_fewshot_head() -> tasks.Task:
    t3 = tasks.task_t3()
    return tasks.Task(
        "S7",
        t3.xtr[:100],
        t3.ytr[:100],
        t3.xte,
        t3.yte,
        t3.make_model,
        epochs=10,
        bs=10,
        desc="T3's frozen body, new linear head from 100 labelled images, 10 epochs, bs 10",
    )


def task_wine() -> tasks.Task:
    from sklearn.datasets import load_wine

    d = load_wine()
    x = torch.tensor(d.data, dtype=torch.float32)
    xtr, ytr, xte, yte = _split_half(x, torch.tensor(d.target).long())
    mean, std = xtr.mean(0), xtr.std(0)
    return tasks.Task(
        "S8",
        (xtr - mean) / std,
        ytr,
        (xte - mean) / std,
        yte,
        lambda: nn.Sequential(nn.Linear(13, 32), nn.ReLU(), nn.Linear(32, 3)),
        epochs=40,
        bs=8,
        desc="wine tabular (standardised), MLP 13-32-3, AdamW, 89 train / 89 test, 40 epochs, bs 8",
    )


def task_sgd_mlp_long() -> tasks.Task:
    xtr, ytr, xte, yte = _fm_subset(2000)
    return tasks.Task(
        "S9",
        xtr.flatten(1),
        ytr,
        xte.flatten(1),
        yte,
        lambda: nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)),
        epochs=8,
        bs=64,
        opt="sgd",
        desc="Fashion-MNIST MLP 784-128-10, SGD momentum 0.9, 2000 images, 8 epochs, bs 64",
    )


EXTRA = {
    "S1": task_sgd_cnn,
    "S2": task_nobn_cnn,
    "S3": task_tabular,
    "S4": task_long_mlp,
    "S5": task_digits_sgd,
    "S6": task_pets_head,
    "S7": task_fewshot_head,
    "S8": task_wine,
    "S9": task_sgd_mlp_long,
}
