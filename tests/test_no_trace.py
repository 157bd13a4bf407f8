"""The range test leaves no trace, as a seeded randomized property over many configurations.

Each configuration trains one epoch, runs `lr_find` (with a fault injected at a random step
in some), and trains one more epoch; a twin run skips `lr_find`. Every tensor, the optimizer
and scheduler states, the RNGs, and the next epoch's batches and weights must be equal bit
for bit (`torch.equal`). Worker processes are the costly part, so few configurations use them.
"""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

import lrkit
from data_fixtures import write_image
from lrkit.snapshot import loader_generators

torch.set_num_threads(1)


class NoisyItems(Dataset):
    """24 items whose augmentation is drawn in `__getitem__` from torch's and numpy's RNGs,
    so the worker processes' own random states decide the batches."""

    def __init__(self, n: int = 24) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        jitter = 0.1 * torch.randn(4) + float(np.random.rand()) * 0.01
        return self.x[i] + jitter, self.y[i]


@dataclass(frozen=True)
class Config:
    seed: int
    norm: bool  # BatchNorm and dropout in the model
    opt: str  # "sgd", "adam", "adamw" or "groups" (SGD, two groups, own lrs and momenta)
    sched: str | None  # torch LR scheduler stepped every batch
    workers: int
    persistent: bool
    fault: str | None  # "error", "interrupt" or "nan", at step `fault_step` of the test
    fault_step: int
    num_it: int


class InjectedError(RuntimeError):
    pass


def make_configs(n: int, seed: int = 2024) -> list[Config]:
    """`n` random configurations; the first four use 2 workers (persistent or not)."""
    rng = random.Random(seed)
    worker_settings = [(2, True), (2, True), (2, False), (2, False)]
    configs = []
    for index in range(n):
        workers, persistent = worker_settings[index] if index < 4 else (0, False)
        num_it = rng.randint(10, 16)
        configs.append(
            Config(
                seed=rng.randrange(10_000),
                norm=rng.random() < 0.5,
                opt=rng.choice(["sgd", "adam", "adamw", "groups"]),
                sched=rng.choice([None, "step", "exponential", "onecycle"]),
                workers=workers,
                persistent=persistent,
                fault=rng.choice([None, "error", "interrupt", "nan"]),
                fault_step=rng.randrange(num_it),
                num_it=num_it,
            )
        )
    return configs


def build(config: Config):
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    if config.norm:
        model = nn.Sequential(
            nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3)
        )
    else:
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    params = list(model.parameters())
    if config.opt == "sgd":
        opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-3)
    elif config.opt == "adam":
        opt = torch.optim.Adam(params, lr=1e-2, weight_decay=1e-3)
    elif config.opt == "adamw":
        opt = torch.optim.AdamW(params, lr=1e-2)
    else:
        opt = torch.optim.SGD(
            [{"params": params[:2], "lr": 1e-3, "momentum": 0.5}, {"params": params[2:]}],
            lr=0.05,
            momentum=0.9,
        )
    sched = None
    if config.sched == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    elif config.sched == "exponential":
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    elif config.sched == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=50)
    loader = DataLoader(
        NoisyItems(),
        batch_size=8,
        shuffle=True,
        num_workers=config.workers,
        persistent_workers=config.persistent,
        generator=torch.Generator().manual_seed(config.seed + 1),
    )
    return model, opt, sched, loader


def train_epoch(model, opt, sched, loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of a plain loop; returns the batches it saw."""
    model.train()
    seen = []
    for x, y in loader:
        seen.append((x, y))
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()
    return seen


def state_of(model, opt, sched, loader) -> dict:
    """Everything the range test could change, as comparable values (copies)."""
    return {
        "params": [p.detach().clone() for p in model.parameters()],
        "buffers": [b.detach().clone() for b in model.buffers()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "optimizer": clone(opt.state_dict()),
        "scheduler": clone(sched.state_dict()) if sched is not None else None,
        "generators": [g.get_state() for g in loader_generators(loader)],
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": clone(np.random.get_state()),
        "python_rng": random.getstate(),
    }


def clone(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {key: clone(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clone(item) for item in value)
    return value


def assert_identical(a, b, where: str = "state") -> None:
    """Equal bit for bit: tensors with torch.equal (and the same dtype), recursively."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{index}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, where


def faulty_loss(config: Config):
    calls = [0]

    def loss_fn(prediction, target):
        loss = F.cross_entropy(prediction, target)
        step, calls[0] = calls[0], calls[0] + 1
        if step == config.fault_step and config.fault == "error":
            raise InjectedError(f"injected at step {step}")
        if step == config.fault_step and config.fault == "interrupt":
            raise KeyboardInterrupt
        if step == config.fault_step and config.fault == "nan":
            return loss * math.nan
        return loss

    return loss_fn


def run(config: Config, range_test: bool):
    """Epoch, (range test), epoch: the second epoch's batches, the end state, next randoms."""
    model, opt, sched, loader = build(config)
    train_epoch(model, opt, sched, loader)
    if range_test:
        before = state_of(model, opt, sched, loader)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lrkit.lr_find(
                    model, loader, faulty_loss(config), opt, num_it=config.num_it, progress=False
                )
        except (InjectedError, KeyboardInterrupt):
            assert config.fault in ("error", "interrupt")
        else:
            assert config.fault not in ("error", "interrupt")
        assert_identical(before, state_of(model, opt, sched, loader), "after lr_find")
    batches = train_epoch(model, opt, sched, loader)
    end = state_of(model, opt, sched, loader)
    randoms = (torch.rand(3), np.random.rand(3), random.random())
    return batches, end, randoms


CONFIGS = make_configs(20)


@pytest.mark.parametrize("config", CONFIGS, ids=[f"cfg{i}" for i in range(len(CONFIGS))])
def test_training_after_the_range_test_equals_training_without_it(config: Config) -> None:
    batches, end, randoms = run(config, range_test=True)
    twin_batches, twin_end, twin_randoms = run(config, range_test=False)
    assert_identical(twin_batches, batches, "next epoch's batches")
    assert_identical(twin_end, end, "after the next epoch")
    assert_identical(twin_randoms, randoms, "next random numbers")


def test_the_configurations_cover_every_kind():
    """The property above really sees each option (a guard against a drifting seed)."""
    seen = {name: {getattr(c, name) for c in CONFIGS} for name in ("norm", "opt", "sched", "fault")}
    assert seen["norm"] == {True, False}
    assert seen["opt"] == {"sgd", "adam", "adamw", "groups"}
    assert seen["sched"] == {None, "step", "exponential", "onecycle"}
    assert seen["fault"] == {None, "error", "interrupt", "nan"}
    assert {(c.workers, c.persistent) for c in CONFIGS} == {(0, False), (2, False), (2, True)}


def test_live_persistent_workers_serve_no_range_test_batch():
    """Issue 10 item 3: after one epoch the persistent workers are live, and their random
    state (augmentation in __getitem__) decides the next epoch."""
    config = Config(0, True, "adamw", None, 2, True, None, 0, 10)
    batches, _, _ = run(config, range_test=True)
    twin, _, _ = run(config, range_test=False)
    assert_identical(twin, batches, "next epoch's batches")


def test_lr_find_repeated_leaves_live_persistent_workers_alone():
    config = Config(1, False, "sgd", None, 2, True, None, 0, 10)
    model, opt, sched, loader = build(config)
    train_epoch(model, opt, sched, loader)
    live = loader._iterator
    lrkit.lr_find_repeated(model, loader, F.cross_entropy, opt, repeats=2, num_it=10)
    assert loader._iterator is live  # the same workers will serve the next epoch
    twin_model, twin_opt, twin_sched, twin_loader = build(config)
    train_epoch(twin_model, twin_opt, twin_sched, twin_loader)
    assert_identical(
        train_epoch(twin_model, twin_opt, twin_sched, twin_loader),
        train_epoch(model, opt, sched, loader),
        "next epoch's batches",
    )


def test_the_image_loaders_worker_generator_is_restored(tmp_path):
    """lrkit's image loader draws its workers' base seed from a generator of its own."""
    for index in range(8):
        label = "cat" if index % 2 else "dog"
        write_image(tmp_path / f"{label}_{index}.jpg", (40, 30), "RGB", index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dls = lrkit.vision.image_dataloaders(
            tmp_path, label_re=r"^(.+)_\d+", valid_pct=0.25, seed=3, presize=24, size=16, bs=2,
            num_workers=2,
        )  # fmt: skip
    train = dls.train
    assert train.worker_generator in [g for g in loader_generators(train)]
    state = train.worker_generator.get_state()
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2))
    lrkit.lr_find(model, train, F.cross_entropy, num_it=10, progress=False)
    assert torch.equal(train.worker_generator.get_state(), state)
    assert train.loader._iterator is None  # the workers the test opened are gone


class OwnRngSampler:
    """A sampler (or, with `batch`, a batch sampler) drawing its order from an RNG of its own,
    held under an attribute name lrkit cannot guess; it need not subclass Sampler."""

    def __init__(self, kind: str, n: int = 24, batch: bool = False) -> None:
        self.n, self.batch = n, batch
        self.order_rng = {
            "numpy_generator": lambda: np.random.default_rng(0),
            "numpy_random_state": lambda: np.random.RandomState(0),
            "torch_generator": lambda: torch.Generator().manual_seed(0),
            "python_random": lambda: random.Random(0),
        }[kind]()

    def __len__(self) -> int:
        return self.n // 8 if self.batch else self.n

    def __iter__(self):
        rng = self.order_rng
        if isinstance(rng, torch.Generator):
            order = torch.randperm(self.n, generator=rng).tolist()
        elif isinstance(rng, random.Random):
            order = list(range(self.n))
            rng.shuffle(order)
        else:
            order = rng.permutation(self.n).tolist()
        return iter([order[i : i + 8] for i in range(0, self.n, 8)] if self.batch else order)


@pytest.mark.parametrize(
    "kind, batch",
    [
        ("numpy_generator", False),
        ("numpy_random_state", False),
        ("torch_generator", False),
        ("python_random", True),
    ],
)
def test_a_samplers_own_rng_is_restored(kind: str, batch: bool) -> None:
    """Outside testing: a sampler with a numpy default_rng, one with a torch.Generator not
    named `generator`, and a batch sampler with a random.Random: the next epoch differed."""

    def second_epoch(range_test: bool) -> list:
        torch.manual_seed(0)
        np.random.seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sampler = OwnRngSampler(kind, batch=batch)
        if batch:
            loader = DataLoader(NoisyItems(), batch_sampler=sampler)
        else:
            loader = DataLoader(NoisyItems(), batch_size=8, sampler=sampler)
        train_epoch(model, opt, None, loader)
        if range_test:
            lrkit.lr_find(model, loader, F.cross_entropy, opt, num_it=10, progress=False)
        return train_epoch(model, opt, None, loader)

    assert_identical(second_epoch(False), second_epoch(True), "next epoch's batches")
