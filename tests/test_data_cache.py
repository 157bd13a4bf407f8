"""The presize cache: same pixels as decoding, reused when fresh, rebuilt when not."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from data_fixtures import PETS_IMAGES, make_pets, write_image
from lrkit.data import cache as cache_module
from lrkit.data.cache import PresizeCache
from lrkit.data.decode import load_rgb
from lrkit.data.presize import PresizeConfig, crop_square, presize_image
from lrkit.vision import JunkWarning, image_dataloaders

CFG = PresizeConfig(presize=32)


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    make_pets(tmp_path / "pets")
    return [tmp_path / "pets" / "images" / name for name, _, _ in PETS_IMAGES]


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Paths the cache decoded, in order (builds run in-process with num_workers=0)."""
    seen: list[Path] = []
    real = cache_module._decode_region

    def counting(task):
        seen.append(task[0])
        return real(task)

    monkeypatch.setattr(cache_module, "_decode_region", counting)
    return seen


def build(folder: Path, paths: list[Path], cfg: PresizeConfig = CFG) -> PresizeCache:
    store = PresizeCache(folder, cfg)
    assert store.build(paths) == []
    return store


def test_cached_pixels_match_direct_decoding(tmp_path: Path, images: list[Path]) -> None:
    store = build(tmp_path / "cache", images)
    for i, path in enumerate(images):
        for u, v in ((0.5, 0.5), (0.0, 1.0), (1.0, 0.0)):
            cached = crop_square(store.region(i), u, v)
            direct = presize_image(load_rgb(path, CFG.presize), CFG, u, v)
            assert cached.shape == direct.shape == (32, 32, 3)
            assert np.array_equal(cached, direct), path.name


def test_fresh_cache_is_reused(tmp_path: Path, images: list[Path], decodes: list[Path]) -> None:
    build(tmp_path / "cache", images)
    assert len(decodes) == len(images)
    store = build(tmp_path / "cache", images)
    assert len(decodes) == len(images)  # nothing decoded the second time
    assert store.region(0) is not None


def test_changed_file_is_decoded_again(
    tmp_path: Path, images: list[Path], decodes: list[Path]
) -> None:
    first = build(tmp_path / "cache", images)
    old = np.array(first.region(2))
    write_image(images[2], (80, 80), "RGB", seed=42)  # new content, new mtime and size
    stat = images[2].stat()
    os.utime(images[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    decodes.clear()
    store = build(tmp_path / "cache", images)
    assert decodes == [images[2]]
    assert not np.array_equal(np.array(store.region(2)), old)


def test_other_settings_rebuild(tmp_path: Path, images: list[Path], decodes: list[Path]) -> None:
    build(tmp_path / "cache", images)
    decodes.clear()
    store = build(tmp_path / "cache", images, PresizeConfig(presize=24))
    assert len(decodes) == len(images) and min(store.region(0).shape[:2]) == 24


@pytest.mark.parametrize("damage", ["index", "truncate"])
def test_corrupt_cache_is_rebuilt(
    tmp_path: Path, images: list[Path], decodes: list[Path], damage: str
) -> None:
    build(tmp_path / "cache", images)
    if damage == "index":
        (tmp_path / "cache" / "index.json").write_text("{not json")
    else:
        data = tmp_path / "cache" / "data.u8"
        data.write_bytes(data.read_bytes()[:1000])
    decodes.clear()
    store = build(tmp_path / "cache", images)
    assert len(decodes) == len(images)
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["data_bytes"] == (tmp_path / "cache" / "data.u8").stat().st_size
    assert store.region(len(images) - 1) is not None


def test_flipped_bytes_are_caught_by_the_crc(tmp_path: Path, images: list[Path]) -> None:
    store = build(tmp_path / "cache", images)
    offset = store.entries[3][0]
    data = bytearray((tmp_path / "cache" / "data.u8").read_bytes())
    data[offset + 5] ^= 0xFF
    (tmp_path / "cache" / "data.u8").write_bytes(bytes(data))
    fresh = build(tmp_path / "cache", images)  # sizes still match: the index is trusted...
    assert fresh.region(3) is None  # ...but the damaged entry is refused on read
    assert fresh.region(4) is not None


def test_pipeline_with_cache_matches_without(tmp_path: Path, images: list[Path]) -> None:
    folder = images[0].parent
    common = {"presize": 32, "size": 24, "bs": 4, "num_workers": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JunkWarning)
        plain = image_dataloaders(folder, **common)
        cached = image_dataloaders(folder, cache=tmp_path / "cache", **common)
        again = image_dataloaders(folder, cache=tmp_path / "cache", **common)
    assert (tmp_path / "cache" / "data.u8").exists()
    for split in ("valid", "train"):  # the same batches, augmented ones included
        loaders = (getattr(dls, split) for dls in (plain, cached, again))
        for a, b, c in zip(*loaders, strict=True):
            assert torch.equal(a[0], b[0]) and torch.equal(b[0], c[0]) and torch.equal(a[1], b[1])
    xb, _yb = next(iter(cached.train))
    assert xb.shape == (4, 3, 24, 24) and torch.isfinite(xb).all()


def test_an_unwritable_cache_folder_means_no_cache_and_a_warning(
    tmp_path: Path, images: list[Path]
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where the cache folder would go")
    common = {"presize": 32, "size": 24, "bs": 4, "num_workers": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JunkWarning)
        with pytest.warns(UserWarning, match="cannot be written .* going on without it"):
            dls = image_dataloaders(images[0].parent, cache=blocker / "cache", **common)
        plain = image_dataloaders(images[0].parent, **common)
    for a, b in zip(dls.train, plain.train, strict=True):
        assert torch.equal(a[0], b[0])  # the same batches as without a cache
