"""Fashion-MNIST: IDX parsing, source order, subsets, batches, normalisation."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

import lrkit
from data_fixtures import FileServer, fake_fashion_files, idx_bytes, serve
from lrkit.data import fashion
from lrkit.data.idx import IdxError, parse_idx, read_idx
from lrkit.data.subset import balanced_subset
from lrkit.fetch import Remote

HAVE_SYSTEM_COPY = (fashion.SYSTEM_DIR / "train-images-idx3-ubyte.gz").exists()
needs_system_copy = pytest.mark.skipif(not HAVE_SYSTEM_COPY, reason="dataset-fashion-mnist absent")


def test_parse_idx_round_trip() -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_idx(idx_bytes(array)), array)


def test_parse_idx_big_endian_ints() -> None:
    data = bytes([0, 0, 0x0C, 1]) + (2).to_bytes(4, "big") + (1).to_bytes(4, "big")
    data += (-5).to_bytes(4, "big", signed=True)
    np.testing.assert_array_equal(parse_idx(data), np.array([1, -5], dtype=np.int32))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x02\x08\x01", "bad magic"),
        (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 7]), "type code"),
        (bytes([0, 0, 8, 3, 0, 0]), "truncated IDX header"),
        (idx_bytes(np.zeros((4, 5), np.uint8))[:-3], "truncated or corrupt"),
    ],
)
def test_parse_idx_errors(data: bytes, message: str) -> None:
    with pytest.raises(IdxError, match=message):
        parse_idx(data, "broken.idx")


def test_read_idx_names_a_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((3, 28, 28), np.uint8)))[:-20])
    with pytest.raises(IdxError, match=r"train-images-idx3-ubyte\.gz"):
        read_idx(path)


def test_balanced_subset_is_balanced_and_seeded() -> None:
    labels = np.repeat(np.arange(10), [50] * 9 + [3])  # the last class is rare
    keep = balanced_subset(labels, 95, seed=1)
    counts = np.bincount(labels[keep], minlength=10)
    assert len(keep) == len(set(keep.tolist())) == 95
    assert counts[9] == 3 and set(counts[:9].tolist()) <= {10, 11}
    np.testing.assert_array_equal(keep, balanced_subset(labels, 95, seed=1))
    assert not np.array_equal(keep, balanced_subset(labels, 95, seed=2))
    with pytest.raises(ValueError, match="between 1 and"):
        balanced_subset(labels, 0)


def test_fashion_mnist_from_a_folder(tmp_path: Path) -> None:
    for name, data in fake_fashion_files().items():
        (tmp_path / name).write_bytes(data)
    dls = lrkit.datasets.fashion_mnist(tmp_path, bs=16, channels=3, size=32, seed=5)
    assert isinstance(dls, lrkit.DataLoaders)
    assert (dls.n_train, dls.n_valid, dls.c) == (40, 20, 10)
    assert dls.vocab[0] == "T-shirt/top" and dls.vocab[9] == "Ankle boot"
    x, y = next(iter(dls.train))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x[:, 0], x[:, 2])  # grey repeated
    # the same seed gives the same order; another seed another order
    y_again = next(iter(lrkit.datasets.fashion_mnist(tmp_path, bs=16, seed=5).train))[1]
    y_other = next(iter(lrkit.datasets.fashion_mnist(tmp_path, bs=16, seed=6).train))[1]
    assert torch.equal(y, y_again) and not torch.equal(y, y_other)


def test_fashion_mnist_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\.gz"):
        lrkit.datasets.fashion_mnist(tmp_path)


def test_fashion_mnist_downloads_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = fake_fashion_files()
    monkeypatch.setenv("LRKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fashion, "SYSTEM_DIR", tmp_path / "no-system-copy")
    with serve(FileServer(files=files)) as server:
        remotes = {
            key: Remote(server.url(r.filename), hashlib.sha256(files[r.filename]).hexdigest())
            for key, r in fashion.FILES.items()
        }
        monkeypatch.setattr(fashion, "FILES", remotes)
        arrays = lrkit.datasets.load_fashion_mnist()
        server.files.clear()  # the second time the cache answers
        again = lrkit.datasets.load_fashion_mnist()
    assert arrays["x_train"].shape == (40, 28, 28) and arrays["y_test"].shape == (20,)
    np.testing.assert_array_equal(arrays["x_train"], again["x_train"])
    assert (tmp_path / "cache" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").exists()


@pytest.fixture(scope="module")
def real_fashion() -> lrkit.DataLoaders:
    return lrkit.datasets.fashion_mnist(bs=64, train_subset=500, valid_subset=200, seed=0)


@needs_system_copy
def test_real_fashion_mnist_arrays() -> None:
    arrays = lrkit.datasets.load_fashion_mnist()
    assert arrays["x_train"].shape == (60000, 28, 28) and arrays["x_train"].dtype == np.uint8
    assert arrays["x_test"].shape == (10000, 28, 28)
    assert np.bincount(arrays["y_train"]).tolist() == [6000] * 10
    pixels = arrays["x_train"].astype(np.float64) / 255
    assert pixels.mean() == pytest.approx(fashion.MEAN, abs=5e-4)
    assert pixels.std() == pytest.approx(fashion.STD, abs=5e-4)


@needs_system_copy
def test_real_fashion_mnist_batches(real_fashion: lrkit.DataLoaders) -> None:
    assert (real_fashion.n_train, real_fashion.n_valid) == (500, 200)
    labels = real_fashion.train.dataset.labels.numpy()
    assert np.bincount(labels).tolist() == [50] * 10
    xs, ys = zip(*real_fashion.train, strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    # whole batches only: the last 500 % 64 = 52 items of each shuffled epoch wait their turn
    assert x.shape == (448, 1, 28, 28) and y.dtype == torch.int64
    assert abs(x.mean().item()) < 0.1 and abs(x.std().item() - 1) < 0.1
    assert [len(v) for v, _ in real_fashion.valid] == [64, 64, 64, 8]  # valid keeps every item
    # the items an epoch visits are shuffled, and another epoch visits others
    seen = torch.cat([yy for _, yy in real_fashion.train])
    assert y.tolist() != labels[: len(y)].tolist() and not torch.equal(seen, y)


@needs_system_copy
def test_show_batch_leaves_the_order_alone(real_fashion: lrkit.DataLoaders, tmp_path: Path) -> None:
    before = torch.random.get_rng_state()
    fig = real_fashion.show_batch(tmp_path / "batch.png", n=4)
    assert (tmp_path / "batch.png").stat().st_size > 1000
    assert [ax.get_title() for ax in fig.axes][:4] == [
        real_fashion.vocab[int(i)] for i in next(iter(real_fashion.train))[1][:4]
    ]
    assert torch.equal(before, torch.random.get_rng_state())
