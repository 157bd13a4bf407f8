"""lrkit.datasets.pets: official and random splits, breed and species labels, download."""

from __future__ import annotations

import hashlib
import io
import tarfile
import warnings
from pathlib import Path

import pytest

import lrkit
from data_fixtures import PETS_CLASSES, FileServer, make_pets, serve
from lrkit.data import pets as pets_module
from lrkit.fetch import DownloadError, Remote
from lrkit.vision import JunkWarning

SMALL = {"presize": 32, "size": 24, "bs": 4, "num_workers": 0}


@pytest.fixture(scope="module")
def pets_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[str]]]:
    root = tmp_path_factory.mktemp("pets")
    return root, make_pets(root)


def quiet_pets(*args, **kwargs) -> lrkit.DataLoaders:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JunkWarning)
        return lrkit.datasets.pets(*args, **{**SMALL, **kwargs})


def test_official_split_follows_the_annotation_lists(pets_root) -> None:
    root, split = pets_root
    dls = quiet_pets(root)
    assert dls.vocab == PETS_CLASSES
    assert sorted(p.stem for p in dls.train.dataset.paths) == sorted(split["trainval"])
    assert sorted(p.stem for p in dls.valid.dataset.paths) == sorted(split["test"])


def test_species_and_random_split(pets_root) -> None:
    root, _ = pets_root
    dls = quiet_pets(root, split="random", label="species", valid_pct=0.25)
    assert dls.vocab == ["cat", "dog"]
    assert (dls.n_train, dls.n_valid) == (9, 3)
    for path, target in zip(dls.train.dataset.paths, dls.train.dataset.targets, strict=True):
        assert dls.vocab[int(target)] == ("cat" if path.name[0].isupper() else "dog")


def test_bad_arguments_are_named(pets_root, tmp_path: Path) -> None:
    root, _ = pets_root
    with pytest.raises(ValueError, match="split must be"):
        lrkit.datasets.pets(root, split="test")
    with pytest.raises(ValueError, match="label must be"):
        lrkit.datasets.pets(root, label="colour")
    with pytest.raises(FileNotFoundError, match="no images/ folder"):
        lrkit.datasets.pets(tmp_path)
    with pytest.raises(ValueError, match="valid_pct goes with split='random'"):
        lrkit.datasets.pets(root, valid_pct=0.3)


def archive(root: Path, folder: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(root / folder, arcname=folder)
    return buffer.getvalue()


def test_download_into_the_cache(pets_root, tmp_path: Path, monkeypatch) -> None:
    root, split = pets_root
    files = {
        "images.tar.gz": archive(root, "images"),
        "annotations.tar.gz": archive(root, "annotations"),
    }
    monkeypatch.setenv("LRKIT_CACHE", str(tmp_path / "cache"))
    with serve(FileServer(files=files)) as server:
        remotes = [
            Remote(server.url(name), hashlib.sha256(data).hexdigest(), len(data))
            for name, data in files.items()
        ]
        monkeypatch.setattr(pets_module, "REMOTES", remotes)
        dls = quiet_pets()
        server.files.clear()  # once complete, the cache answers
        again = quiet_pets()
    cached = tmp_path / "cache" / "oxford-iiit-pet"
    assert (cached / "images" / "Abyssinian_1.jpg").exists()
    assert (cached / "annotations" / "test.txt").exists()
    assert sorted(p.stem for p in dls.valid.dataset.paths) == sorted(split["test"])
    assert again.vocab == dls.vocab == PETS_CLASSES


def test_offline_message_names_the_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LRKIT_CACHE", str(tmp_path / "cache"))
    with serve(FileServer()) as server:
        port = server.port
    monkeypatch.setattr(pets_module, "REMOTES", [Remote(f"http://127.0.0.1:{port}/images.tar.gz")])
    with pytest.raises(DownloadError, match="offline") as info:
        lrkit.datasets.pets()
    assert "oxford-iiit-pet" in str(info.value)
