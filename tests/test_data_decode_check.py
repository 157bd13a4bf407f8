"""Files whose image data is corrupted (headers and end markers intact) are found by a full
decode before training, listed once with their reason, and never train as stand-in images."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_fixtures import write_image
from lrkit.data import check as check_module
from lrkit.data.check import check_files
from lrkit.data.decode import ImageDecodeError, check_image, load_rgb
from lrkit.data.loader import ImageItems
from lrkit.data.presize import PresizeConfig
from lrkit.vision import BadImagesError, JunkWarning, image_dataloaders

SMALL = {"presize": 32, "size": 24, "bs": 4, "num_workers": 0}
LABEL_RE = r"^(.+)_\d+\.\w+$"


def noisy(path: Path, fmt: str, seed: int = 0) -> None:
    """A 160x120 noise image (much scan / pixel data to corrupt)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))


def corrupt_jpeg_scan(path: Path) -> None:
    """Overwrite 200 bytes in the middle of the entropy-coded scan with random bytes (0xFF
    among them: with this seed libjpeg meets a bogus marker and fails); SOI, headers, EOI kept.

    Corruption without 0xFF bytes makes libjpeg only warn, and Pillow drops its warnings, so
    such a file decodes to a distorted picture that no decode check can tell from a photo."""
    data = bytearray(path.read_bytes())
    start = data.find(b"\xff\xda")
    middle = start + (len(data) - start) // 2
    data[middle : middle + 200] = np.random.default_rng(3).integers(0, 256, 200, np.uint8).tobytes()
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    path.write_bytes(bytes(data))


def corrupt_png_idat(path: Path, fix_crc: bool) -> None:
    """Zero 100 bytes inside the first IDAT chunk's data; its CRC fixed up or left stale."""
    data = bytearray(path.read_bytes())
    kind = data.find(b"IDAT")
    (length,) = struct.unpack(">I", data[kind - 4 : kind])
    data[kind + 4 + length // 2 : kind + 4 + length // 2 + 100] = bytes(100)
    if fix_crc:
        crc = zlib.crc32(data[kind : kind + 4 + length])
        data[kind + 4 + length : kind + 8 + length] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def broken_folder(folder: Path) -> dict[str, Path]:
    """Three good images per class and three with corrupted image data."""
    folder.mkdir(parents=True)
    for k, name in enumerate(f"{c}_{i}.jpg" for c in ("cat", "dog") for i in range(3)):
        write_image(folder / name, (60, 50), "RGB", seed=k)
    bad = {
        "cat_7.jpg": folder / "cat_7.jpg",
        "dog_7.png": folder / "dog_7.png",
        "dog_8.png": folder / "dog_8.png",
    }
    noisy(bad["cat_7.jpg"], "JPEG")
    corrupt_jpeg_scan(bad["cat_7.jpg"])
    noisy(bad["dog_7.png"], "PNG", 1)
    corrupt_png_idat(bad["dog_7.png"], fix_crc=True)
    noisy(bad["dog_8.png"], "PNG", 2)
    corrupt_png_idat(bad["dog_8.png"], fix_crc=False)
    return bad


def test_corrupted_image_data_passes_the_header_check_but_not_the_decode(tmp_path: Path) -> None:
    bad = broken_folder(tmp_path / "d")
    for path in bad.values():
        assert check_image(path) is None  # header and end marker look fine
        with pytest.raises(ImageDecodeError, match=path.name):
            load_rgb(path, 32)
        assert check_image(path, full=True, min_short=32).startswith("decode failed")


def test_undecodable_files_are_left_out_before_training_and_listed_once(tmp_path: Path) -> None:
    bad = broken_folder(tmp_path / "d")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dls = image_dataloaders(tmp_path / "d", label_re=LABEL_RE, valid_pct=0.5, **SMALL)
        seen = sum(len(y) for _, y in dls.train) + sum(len(y) for _, y in dls.valid)
    assert sorted(j.path.name for j in dls.junk) == sorted(bad)
    assert all(j.reason.startswith("decode failed") for j in dls.junk)
    assert dls.n_train + dls.n_valid == seen == 6
    junk_warnings = [w for w in caught if issubclass(w.category, JunkWarning)]
    assert len(junk_warnings) == 1  # one report, every file in it once
    report = str(junk_warnings[0].message)
    assert all(report.count(f"{name}: decode failed") == 1 for name in bad)
    assert len(caught) == 1  # no worker warnings, no stand-in notes
    with pytest.raises(BadImagesError, match=r"cat_7\.jpg: decode failed"):
        image_dataloaders(tmp_path / "d", label_re=LABEL_RE, on_junk="error", **SMALL)


def test_no_stand_in_image_when_a_file_fails_at_training_time(tmp_path: Path) -> None:
    bad = broken_folder(tmp_path / "d")
    items = ImageItems([bad["cat_7.jpg"]], np.zeros(1, np.int64), PresizeConfig(32))
    with pytest.raises(ImageDecodeError, match=r"cat_7\.jpg: cannot be decoded"):
        items.pixels(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JunkWarning)
        dls = image_dataloaders(
            tmp_path / "d", label_re=LABEL_RE, valid_pct=0.0, full_check=False, **SMALL
        )
    with pytest.raises(ImageDecodeError, match=r"\.(jpg|png): cannot be decoded"):
        for _ in dls.train:
            pass


def test_a_decode_failure_in_a_worker_process_stays_an_image_decode_error(tmp_path: Path) -> None:
    broken_folder(tmp_path / "d")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JunkWarning)
        dls = image_dataloaders(
            tmp_path / "d",
            label_re=LABEL_RE,
            valid_pct=0.0,
            full_check=False,
            **{**SMALL, "num_workers": 1},
        )
    with pytest.raises(ImageDecodeError, match=r"\.(jpg|png): cannot be decoded"):
        for _ in dls.train:
            pass


def test_check_results_are_kept_and_changed_files_checked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = broken_folder(tmp_path / "d")
    paths = sorted((tmp_path / "d").iterdir())
    decoded: list[Path] = []
    real = check_module.check_image

    def counting(path, full=False, min_short=None):
        decoded.append(path)
        return real(path, full=full, min_short=min_short)

    monkeypatch.setattr(check_module, "check_image", counting)
    results = tmp_path / "checks.json"
    first = check_files(paths, 32, results_file=results)
    assert sorted(j.path.name for j in first) == sorted(bad)
    assert len(decoded) == len(paths)
    decoded.clear()
    assert check_files(paths, 32, results_file=results) == first
    assert decoded == []  # nothing decoded the second time
    good = tmp_path / "d" / "cat_0.jpg"
    noisy(good, "JPEG", 5)
    corrupt_jpeg_scan(good)  # a good file replaced by a broken one
    again = check_files(paths, 32, results_file=results)
    assert decoded == [good]
    assert good in {j.path for j in again}
    decoded.clear()
    check_files(paths, 64, results_file=results)  # another decode scale: checked again
    assert len(decoded) == len(paths)


def test_parallel_check_with_progress_finds_the_same_files(tmp_path: Path) -> None:
    broken_folder(tmp_path / "d")
    paths = sorted((tmp_path / "d").iterdir())
    serial = check_files(paths, 32)
    assert check_files(paths, 32, num_workers=3, progress=True) == serial
    assert len(serial) == 3


def test_a_second_run_over_the_same_folder_decodes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = broken_folder(tmp_path / "d")
    decoded: list[Path] = []
    real = check_module.check_image

    def counting(path, full=False, min_short=None):
        decoded.append(path)
        return real(path, full=full, min_short=min_short)

    monkeypatch.setattr(check_module, "check_image", counting)
    runs = []
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", JunkWarning)
            runs.append(image_dataloaders(tmp_path / "d", label_re=LABEL_RE, **SMALL))
    assert len(decoded) == 9  # every file once, in the first run only
    assert [j.path.name for j in runs[1].junk] == sorted(bad) == [j.path.name for j in runs[0].junk]
