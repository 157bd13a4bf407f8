"""Edge cases of the image pipeline found in review: files with trailing bytes, 16-bit
greyscale, Excel and Latin-1 CSVs, an empty split, broken links, and same-size replacements."""

from __future__ import annotations

import io
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_fixtures import pets_pixels, write_image
from lrkit.data.cache import PresizeCache
from lrkit.data.decode import check_image, load_rgb
from lrkit.data.labels import read_label_csv
from lrkit.data.presize import PresizeConfig, presize_region
from lrkit.vision import BadImagesError, JunkWarning, get_image_files, image_dataloaders

SMALL = {"presize": 32, "size": 24, "bs": 4, "num_workers": 0}
LABEL_RE = r"^(.+)_\d+\.\w+$"


def small_folder(folder: Path, n: int = 3) -> list[Path]:
    """`n` good JPEGs per class (cat, dog), named like Pets' files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, name in enumerate(f"{c}_{i}.jpg" for c in ("cat", "dog") for i in range(n)):
        write_image(folder / name, (60, 50), "RGB", seed=k)
        paths.append(folder / name)
    return paths


# ---- 1. the quick check: trailing data is not truncation ------------------------------------


def test_jpeg_with_trailing_data_passes_the_quick_check(tmp_path: Path) -> None:
    path = tmp_path / "motion.jpg"
    write_image(path, (96, 72), "RGB")
    with open(path, "ab") as f:  # a motion photo's video after the end marker
        f.write(b"\x00\x00\x00\x18ftypmp42" + bytes(4096))
    assert check_image(path) is None
    assert check_image(path, full=True) is None


def test_png_with_padding_passes_the_quick_check(tmp_path: Path) -> None:
    path = tmp_path / "padded.png"
    write_image(path, (80, 60), "RGB")
    with open(path, "ab") as f:
        f.write(bytes(2048))
    assert check_image(path) is None


@pytest.mark.parametrize("name", ["half.jpg", "half.png"])
def test_a_file_cut_in_half_is_still_truncated(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_image(path, (200, 150), "RGB")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "truncated" in check_image(path)


def test_a_cut_jpeg_is_truncated_despite_a_thumbnail_end_marker(tmp_path: Path) -> None:
    thumb = io.BytesIO()
    Image.fromarray(pets_pixels(16, 12, 1)).save(thumb, "JPEG")  # ends in its own marker
    big = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(big).save(path, "JPEG", comment=thumb.getvalue())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert check_image(path) == "truncated JPEG (no end-of-image marker)"


# ---- 2. 16-bit greyscale scales by the bit depth, not by the image --------------------------


def test_dark_16_bit_images_stay_dark_and_consistent(tmp_path: Path) -> None:
    values = np.arange(256, dtype=np.uint16).reshape(16, 16)
    brighter = values.copy()
    brighter[0, 0] = 256  # one step past 8-bit range
    out = []
    for name, array in (("a.png", values), ("b.png", brighter)):
        Image.fromarray(array).save(tmp_path / name)
        assert Image.open(tmp_path / name).mode == "I;16"
        out.append(np.asarray(load_rgb(tmp_path / name)).astype(int))
    assert out[0].max() <= 1 and out[1].max() <= 1  # 255 / 65535 of full scale
    assert np.array_equal(out[0][1:], out[1][1:])  # same values, same output


# ---- 3. CSV encodings -----------------------------------------------------------------------


def test_csv_with_an_excel_byte_order_mark_finds_named_columns(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("\ufefffname,label\ncat_1.jpg,cat\n", encoding="utf-8")
    assert read_label_csv(path, "fname", "label") == [("cat_1.jpg", ["cat"], False)]


def test_latin_1_csv_says_to_save_as_utf_8(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes("fname,label\ncafé_1.jpg,chat\n".encode("latin-1"))
    with pytest.raises(ValueError, match="save it as UTF-8") as info:
        read_label_csv(path, "fname", "label")
    assert not isinstance(info.value, UnicodeDecodeError)
    assert str(path) in str(info.value)


# ---- 4. showing an empty split --------------------------------------------------------------


def test_show_batch_of_an_empty_valid_split_says_so(tmp_path: Path) -> None:
    small_folder(tmp_path / "d")
    dls = image_dataloaders(tmp_path / "d", label_re=LABEL_RE, valid_pct=0.0, **SMALL)
    assert dls.n_valid == 0
    with pytest.raises(ValueError, match="valid split has no items"):
        dls.show_batch(split="valid")


# ---- 5. links that point nowhere are reported, not dropped ----------------------------------


def test_broken_and_folder_links_are_reported_as_junk(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    good = small_folder(folder, n=2)
    (folder / "cat_9.jpg").symlink_to(tmp_path / "gone.jpg")
    (tmp_path / "a_folder").mkdir()
    (folder / "dog_9.jpg").symlink_to(tmp_path / "a_folder")
    assert [p.name for p in get_image_files(folder)][-1] == "dog_9.jpg"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", JunkWarning)
        dls = image_dataloaders(folder, label_re=LABEL_RE, **SMALL)
    reasons = {j.path.name: j.reason for j in dls.junk}
    assert reasons == {
        "cat_9.jpg": f"broken link: its target {tmp_path / 'gone.jpg'} does not exist",
        "dog_9.jpg": "not a regular file (a folder, pipe or device)",
    }
    assert "cat_9.jpg: broken link" in str(caught[0].message)
    assert dls.n_train + dls.n_valid == len(good)
    assert sum(len(y) for _, y in dls.train) + sum(len(y) for _, y in dls.valid) == len(good)
    with pytest.raises(BadImagesError, match=r"cat_9\.jpg: broken link"):
        image_dataloaders(folder, label_re=LABEL_RE, on_junk="error", **SMALL)


# ---- 6. the cache notices a same-size replacement with the old mtime ------------------------


def write_padded_jpeg(path: Path, seed: int, n_bytes: int = 20_000) -> None:
    """A JPEG padded after its end marker to exactly `n_bytes`, so two differ in pixels only."""
    write_image(path, (80, 60), "RGB", seed=seed)
    data = path.read_bytes()
    assert len(data) < n_bytes
    path.write_bytes(data + bytes(n_bytes - len(data)))


def test_cache_decodes_a_same_size_replacement_with_the_old_mtime(tmp_path: Path) -> None:
    cfg = PresizeConfig(presize=32)
    path = tmp_path / "cat_1.jpg"
    write_padded_jpeg(path, seed=0)
    store = PresizeCache(tmp_path / "cache", cfg)
    assert store.build([path]) == []
    old = np.array(store.region(0))
    before = path.stat()
    time.sleep(0.05)  # the ctime clock ticks coarsely; let the replacement get a later one
    write_padded_jpeg(path, seed=42)  # like `cp -p`: other pixels, same size and mtime
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    store = PresizeCache(tmp_path / "cache", cfg)
    assert store.build([path]) == []
    new = presize_region(load_rgb(path, cfg.presize), cfg)
    assert not np.array_equal(new, old)
    assert np.array_equal(np.array(store.region(0)), new)
