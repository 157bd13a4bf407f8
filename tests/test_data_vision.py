"""The image pipeline on a Pets-like folder: items, labels, splits, decoding, junk, loaders."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lrkit
from data_fixtures import PETS_CLASSES, PETS_IMAGES, PETS_JUNK, make_pets, write_image
from lrkit.data.decode import check_image, draft_size, load_rgb
from lrkit.data.labels import (
    LabelError,
    folder_labeller,
    func_labeller,
    make_vocab,
    read_label_csv,
    regex_labeller,
)
from lrkit.data.pipeline import PETS_LABEL_RE
from lrkit.data.presize import (
    PresizeConfig,
    crop_square,
    presize_image,
    region_box,
    resize_rgb,
)
from lrkit.data.splits import random_split, split_by_folder, split_from_names
from lrkit.vision import (
    BadImagesError,
    JunkWarning,
    csv_dataloaders,
    get_image_files,
    image_dataloaders,
)

SMALL = {"presize": 32, "size": 24, "bs": 4, "num_workers": 0}


@pytest.fixture(scope="module")
def pets_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pets")
    make_pets(root)
    return root


def quiet_dataloaders(folder: Path, **kwargs) -> lrkit.DataLoaders:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JunkWarning)
        return image_dataloaders(folder, **{**SMALL, **kwargs})


# ---- items and labels ----------------------------------------------------------------------


def test_items_are_image_files_only_sorted(pets_root: Path) -> None:
    names = [p.name for p in get_image_files(pets_root)]
    assert names == sorted(names)
    assert set(names) == {n for n, _, _ in PETS_IMAGES} | set(PETS_JUNK)
    assert "British_Shorthair_3.JPG" in names and "Abyssinian_1.mat" not in names


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("Abyssinian_100.jpg", "Abyssinian"),
        ("american_pit_bull_terrier_12.jpg", "american_pit_bull_terrier"),
        ("British_Shorthair_3.JPG", "British_Shorthair"),
    ],
)
def test_regex_labels(name: str, label: str) -> None:
    assert regex_labeller(PETS_LABEL_RE)(Path("images") / name) == [label]


def test_regex_label_errors() -> None:
    with pytest.raises(LabelError, match="does not match"):
        regex_labeller(PETS_LABEL_RE)(Path("no_number_here.jpg"))
    with pytest.raises(ValueError, match="needs a group"):
        regex_labeller(r"\d+")


def test_folder_func_and_vocab() -> None:
    assert folder_labeller(Path("data/cat/1.jpg")) == ["cat"]
    assert func_labeller(lambda p: p.stem.upper())(Path("a/x.jpg")) == ["X"]
    with pytest.raises(LabelError, match="label function failed"):
        func_labeller(lambda p: 1 / 0)(Path("x.jpg"))
    assert make_vocab([["b"], ["a", "c"], ["b"]]) == ["a", "b", "c"]


def test_csv_labels_multi(tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text("fname,labels,is_valid\na.jpg,cat dog,False\nb.jpg,dog,True\n")
    rows = read_label_csv(csv, "fname", "labels", " ", "is_valid")
    assert rows == [("a.jpg", ["cat", "dog"], False), ("b.jpg", ["dog"], True)]
    with pytest.raises(ValueError, match="no column 'label'"):
        read_label_csv(csv, "fname", "label")


# ---- splits --------------------------------------------------------------------------------


def test_random_split_is_the_same_everywhere() -> None:
    # numpy's PCG64 stream does not depend on the platform: these are the masks forever
    assert random_split(10, 0.5, 73).astype(int).tolist() == [0, 0, 0, 1, 1, 0, 1, 1, 1, 0]
    assert random_split(12, 0.5, 73).sum() == 6
    assert not np.array_equal(random_split(12, 0.5, 73), random_split(12, 0.5, 74))
    with pytest.raises(ValueError, match="valid_pct"):
        random_split(10, 1.0)


def test_split_from_names_and_folders(tmp_path: Path) -> None:
    items = [Path("a_1.jpg"), Path("b_2.jpg"), Path("c_3.jpg")]
    is_valid, keep = split_from_names(items, ["b_2"], ["a_1.jpg"])
    assert is_valid.tolist() == [False, True, False] and keep.tolist() == [True, True, False]
    items = [
        tmp_path / "train" / "x" / "1.jpg",
        tmp_path / "valid" / "x" / "2.jpg",
        tmp_path / "other" / "3.jpg",
    ]
    is_valid, keep = split_by_folder(items, tmp_path)
    assert is_valid.tolist() == [False, True, False] and keep.tolist() == [True, True, False]
    with pytest.raises(ValueError, match="valid/"):
        split_by_folder(items[:1], tmp_path)


# ---- decoding ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "size", "mode"), PETS_IMAGES)
def test_every_mode_decodes_to_rgb(pets_root: Path, name: str, size: tuple, mode: str) -> None:
    img = load_rgb(pets_root / "images" / name)
    assert img.mode == "RGB" and img.size == size  # EXIF6 comes back upright


def test_exif_rotation_restores_the_pixels(tmp_path: Path) -> None:
    write_image(tmp_path / "upright.png", (48, 32), "RGB", seed=3)
    write_image(tmp_path / "sideways.jpg", (48, 32), "EXIF6", seed=3)
    upright = np.asarray(Image.open(tmp_path / "upright.png"), dtype=float)
    decoded = np.asarray(load_rgb(tmp_path / "sideways.jpg"), dtype=float)
    assert Image.open(tmp_path / "sideways.jpg").size == (32, 48)
    assert np.abs(decoded - upright).mean() < 12  # JPEG noise, not a rotation


def test_alpha_becomes_white_and_16_bit_is_scaled(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    assert np.asarray(load_rgb(tmp_path / "clear.png")).min() == 255
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert np.asarray(load_rgb(tmp_path / "deep.png")).min() == 255


def test_jpeg_draft_mode_decodes_smaller(tmp_path: Path) -> None:
    write_image(tmp_path / "big.jpg", (800, 600), "RGB")
    assert draft_size(800, 600, 100) == (134, 100)
    assert draft_size(800, 600, 400) is None
    small = load_rgb(tmp_path / "big.jpg", min_short=100)
    assert small.size == (200, 150)  # libjpeg's 1/4 scale, still >= 100 on the short side
    assert load_rgb(tmp_path / "big.jpg").size == (800, 600)


def test_check_image_reasons(pets_root: Path) -> None:
    images = pets_root / "images"
    assert check_image(images / "Bengal_1.jpg").startswith("truncated JPEG")
    assert check_image(images / "Bengal_2.jpg") == "empty file"
    assert check_image(images / "Bengal_3.jpg") == "not an image Pillow can read"
    assert all(check_image(images / n) is None for n, _, _ in PETS_IMAGES)


# ---- presizing -----------------------------------------------------------------------------


def test_presize_geometry() -> None:
    assert region_box(200, 100, 4 / 3) == (33, 0, 166, 100)  # long side trimmed to 133
    assert region_box(90, 100, 4 / 3) == (0, 0, 90, 100)
    region = np.arange(4 * 6).reshape(4, 6, 1)
    assert crop_square(region, 0.0, 0.5)[0, 0, 0] == 0
    assert crop_square(region, 1.0, 0.5)[0, 0, 0] == 2
    img = Image.fromarray(np.zeros((50, 120, 3), np.uint8))
    out = presize_image(img, PresizeConfig(presize=20), 0.3, 0.5)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8 and out.flags.writeable


# ---- the whole pipeline --------------------------------------------------------------------


def test_junk_is_reported_once_and_left_out(pets_root: Path) -> None:
    with pytest.warns(JunkWarning) as record:
        dls = image_dataloaders(pets_root / "images", **SMALL)
    assert len(record) == 1
    message = str(record[0].message)
    for name in PETS_JUNK:
        assert name in message
    assert "truncated JPEG" in message and "empty file" in message
    assert {j.path.name for j in dls.junk} == set(PETS_JUNK)
    assert dls.n_train + dls.n_valid == len(PETS_IMAGES)


def test_junk_can_be_an_error(pets_root: Path) -> None:
    with pytest.raises(BadImagesError, match=r"Bengal_2\.jpg: empty file"):
        image_dataloaders(pets_root / "images", on_junk="error", **SMALL)


def test_batches_shapes_labels_and_normalisation(pets_root: Path) -> None:
    dls = quiet_dataloaders(pets_root / "images")
    assert dls.vocab == PETS_CLASSES and dls.c == 4
    assert (dls.n_train, dls.n_valid) == (6, 6)  # valid_pct 0.5
    for loader in (dls.train, dls.valid):
        x, y = next(iter(loader))
        assert x.shape == (4, 3, 24, 24) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.min() > -2.2 and x.max() < 2.7  # ImageNet-normalised range
    names = [p.name for p in dls.valid.dataset.paths]
    truth = [PETS_CLASSES.index(n.rsplit("_", 1)[0]) for n in names]
    assert dls.valid.dataset.targets.tolist() == truth


def test_split_is_stable_and_seeded(pets_root: Path) -> None:
    first = quiet_dataloaders(pets_root / "images").valid.dataset.paths
    again = quiet_dataloaders(pets_root / "images").valid.dataset.paths
    other = quiet_dataloaders(pets_root / "images", seed=1).valid.dataset.paths
    assert first == again and first != other
    y1 = [next(iter(quiet_dataloaders(pets_root / "images").train))[1] for _ in range(2)]
    assert torch.equal(*y1)


def test_split_folders_and_label_from_folder(tmp_path: Path) -> None:
    for split in ("train", "valid"):
        for label in ("cat", "dog"):
            (tmp_path / split / label).mkdir(parents=True)
            write_image(tmp_path / split / label / f"{label}.jpg", (40, 30), "RGB")
    dls = image_dataloaders(
        tmp_path, label_from_folder=True, split_folders=("train", "valid"), **SMALL
    )
    assert dls.vocab == ["cat", "dog"] and (dls.n_train, dls.n_valid) == (2, 2)
    with pytest.raises(ValueError, match="one of label_re"):
        image_dataloaders(tmp_path, label_re="(x)", label_from_folder=True)


def test_csv_dataloaders_multi_label(pets_root: Path, tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    rows = [
        "file,tags,valid",
        "Abyssinian_1.jpg,cat small,0",
        "Abyssinian_2.jpg,cat,1",
        "great_pyrenees_1.jpg,dog big,0",
        "missing_1.jpg,dog,0",
        "Bengal_2.jpg,cat,1",
    ]
    csv.write_text("\n".join(rows) + "\n")
    with pytest.warns(JunkWarning, match=r"missing_1\.jpg: listed in labels\.csv but missing"):
        dls = lrkit.vision.csv_dataloaders(
            pets_root / "images", csv, "file", "tags", multi_label=True, valid_col="valid", **SMALL
        )
    assert dls.multi_label and dls.vocab == ["big", "cat", "dog", "small"]
    assert (dls.n_train, dls.n_valid) == (2, 1)
    _x, y = next(iter(dls.train))
    assert y.dtype == torch.float32 and y.shape == (2, 4)
    assert sorted(y.sum(1).tolist()) == [2.0, 2.0]
    fig = dls.show_batch(tmp_path / "multi.png")
    assert {ax.get_title() for ax in fig.axes if ax.get_title()} == {"cat;small", "big;dog"}


def test_show_batch_writes_a_png_and_leaves_no_trace(pets_root: Path, tmp_path: Path) -> None:
    dls = quiet_dataloaders(pets_root / "images")
    fig = dls.show_batch(tmp_path / "batch.png", n=4)
    assert (tmp_path / "batch.png").read_bytes()[:4] == b"\x89PNG"
    titles = [ax.get_title() for ax in fig.axes[:4]]
    _x, y = next(iter(dls.train))
    assert titles == [dls.vocab[int(i)] for i in y]


def test_workers_give_the_same_batches(pets_root: Path) -> None:
    serial = quiet_dataloaders(pets_root / "images", num_workers=0)
    parallel = quiet_dataloaders(pets_root / "images", num_workers=2)
    for a, b in zip(serial.train, parallel.train, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_presize_resize_matches_pillow_bilinear() -> None:
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:90, 0:120]
    smooth = np.stack([xs * 2, ys * 2, (xs + ys) % 256], -1).astype(np.uint8)
    noisy = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)
    for height, width in ((40, 53), (150, 200)):  # down (antialiased) and up
        ours = resize_rgb(noisy, height, width).astype(float)
        pil = Image.fromarray(noisy).resize((width, height), Image.Resampling.BILINEAR)
        assert ours.shape == (height, width, 3)
        assert np.abs(ours - np.asarray(pil, dtype=float)).mean() < 1.0


def test_settings_that_cannot_make_a_classifier_are_refused(
    pets_root: Path, tmp_path: Path
) -> None:
    folder = pets_root / "images"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JunkWarning)
        with pytest.raises(ValueError, match="needs two classes"):  # forgot label_re: one folder
            image_dataloaders(folder, label_from_folder=True, **SMALL)
        with pytest.raises(ValueError, match="train_names needs valid_names"):
            image_dataloaders(folder, train_names=["Abyssinian_1"], **SMALL)
        with pytest.raises(ValueError, match="at least 8 pixels"):
            image_dataloaders(folder, presize=32, size=1, bs=4, num_workers=0)
        with pytest.raises(ValueError, match="has 2 labels"):  # single-label data, two labels
            image_dataloaders(folder, label_func=lambda path: ["cat", "dog"], **SMALL)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no image files under .*empty"):
        image_dataloaders(tmp_path / "empty", **SMALL)


def test_a_file_listed_twice_with_other_labels_in_a_csv_is_refused(
    pets_root: Path, tmp_path: Path
) -> None:
    csv = tmp_path / "labels.csv"
    rows = "fname,labels\nAbyssinian_1.jpg,cat\ngreat_pyrenees_2.jpeg,dog\n"
    csv.write_text(rows + "Abyssinian_1.jpg,cat\n")  # the same row twice is harmless
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JunkWarning)
        dls = csv_dataloaders(pets_root / "images", csv, valid_pct=0.5, **SMALL)
        assert dls.n_train + dls.n_valid == 2
        csv.write_text(rows + "Abyssinian_1.jpg,dog\n")
        with pytest.raises(ValueError, match=r"Abyssinian_1\.jpg is listed twice"):
            csv_dataloaders(pets_root / "images", csv, valid_pct=0.5, **SMALL)
