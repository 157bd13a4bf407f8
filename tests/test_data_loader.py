"""The batch loader: per-batch plans and seeds, batches built in workers, scratch reuse."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import lrkit
from data_fixtures import PETS_IMAGES, make_pets
from lrkit.data.augment import BatchTransform
from lrkit.data.cache import PresizeCache
from lrkit.data.loader import BatchBuilder, BatchPlan, ImageItems
from lrkit.data.presize import PresizeConfig
from lrkit.vision import JunkWarning, image_dataloaders

CFG = PresizeConfig(presize=32)


@pytest.fixture(scope="module")
def pets_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pets")
    make_pets(root)
    return root


def items_of(root: Path, cache: PresizeCache | None = None) -> ImageItems:
    paths = [root / "images" / name for name, _, _ in PETS_IMAGES]
    return ImageItems(paths, torch.arange(len(paths)), CFG, cache)


def test_batch_plan_draws_nothing_until_the_first_batch() -> None:
    # DataLoader calls iter() twice when it starts workers and once without: an eager
    # plan would then shuffle differently with workers than without.
    plan = BatchPlan(10, 4, shuffle=True, generator=torch.Generator().manual_seed(3))
    discarded = iter(plan)  # never consumed
    batches = list(iter(plan))
    del discarded
    expected = list(BatchPlan(10, 4, shuffle=True, generator=torch.Generator().manual_seed(3)))
    assert batches == expected
    assert [len(items) for _, items in batches] == [4, 4, 2]
    assert sorted(i for _, items in batches for i, _, _ in items) == list(range(10))
    assert len({seed for seed, _ in batches}) == 3  # every batch its own augmentation seed
    assert list(plan) != batches  # the next epoch draws again


def test_batch_plan_in_order_and_drop_last() -> None:
    plan = BatchPlan(10, 4, shuffle=False, drop_last=True, generator=torch.Generator())
    batches = list(plan)
    assert len(plan) == len(batches) == 2
    assert [item for _, items in batches for item in items] == [(i, 0.5, 0.5) for i in range(8)]
    with pytest.raises(ValueError, match="batch size must be at least 1, got 0"):
        BatchPlan(10, 0, shuffle=False)


@pytest.mark.parametrize("cached", [False, True])
def test_accelerator_path_matches_the_worker_path(
    pets_root: Path, tmp_path: Path, cached: bool
) -> None:
    cache = None
    if cached:
        cache = PresizeCache(tmp_path / "cache", CFG)
        assert cache.build(items_of(pets_root).paths) == []
    items = items_of(pets_root, cache)
    transform = BatchTransform(size=24)
    plan = (1234, [(0, 0.1, 0.9), (3, 0.5, 0.5), (9, 1.0, 0.0)])
    x8, y8, seed = BatchBuilder(items, None)[plan]  # what workers hand to an accelerator
    assert x8.dtype == torch.uint8 and x8.shape == (3, 3, 32, 32) and int(seed) == 1234
    x, y = BatchBuilder(items, transform)[plan]  # built and augmented in the worker
    assert torch.equal(y, y8) and y.tolist() == [0, 3, 9]
    torch.testing.assert_close(x, transform(x8, torch.Generator().manual_seed(int(seed))))


def test_returned_batches_never_share_the_scratch_buffer(pets_root: Path) -> None:
    items = items_of(pets_root)
    builder = BatchBuilder(items, BatchTransform(size=32, train=False))  # no resize at all
    plans = [(0, [(i, 0.5, 0.5) for i in range(k, k + 3)]) for k in (0, 3, 6)]
    batches = [builder[p][0] for p in plans]
    for plan, x in zip(plans, batches, strict=True):  # earlier batches are still intact
        assert torch.equal(x, BatchBuilder(items, BatchTransform(size=32, train=False))[plan][0])
    assert not torch.equal(batches[0], batches[1])


def test_workers_give_the_same_batches_with_the_cache(pets_root: Path, tmp_path: Path) -> None:
    common = {"presize": 32, "size": 24, "bs": 4, "cache": tmp_path / "cache"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JunkWarning)
        serial = image_dataloaders(pets_root / "images", num_workers=0, **common)
        parallel = image_dataloaders(pets_root / "images", num_workers=2, **common)
    for _epoch in range(2):  # the second epoch too: new order, new seeds, same in both
        for split in ("train", "valid"):
            pairs = zip(getattr(serial, split), getattr(parallel, split), strict=True)
            for a, b in pairs:
                assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_training_batches_are_whole_so_batchnorm_never_sees_one_image(pets_root: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JunkWarning)
        dls = image_dataloaders(
            pets_root / "images", presize=32, size=24, bs=5, valid_pct=0.5, num_workers=0
        )
    assert dls.n_train % 5 == 1  # 6 training images: the old last batch held one
    assert [len(x) for x, _ in dls.train] == [5]
    assert sum(len(x) for x, _ in dls.valid) == dls.n_valid  # validation keeps every item
    torch.manual_seed(0)
    learn = lrkit.vision_learner(dls, "resnet18", pretrained=False, progress=False)
    learn.fit(1, 1e-3)  # BatchNorm in training mode fails on a batch of one
    assert len(learn.recorder.log) == 1
