"""Items: the image files under a folder, found recursively in a stable order."""

from __future__ import annotations

from pathlib import Path

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


def get_image_files(folder: str | Path, recurse: bool = True) -> list[Path]:
    """Image files under `folder` (extension checked case-insensitively), sorted by path.

    Links are kept even when broken or not pointing at a file, so that `check_image` reports
    them with the reason instead of the file vanishing from the data unnoticed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; pass the folder that holds the images")
    found = folder.rglob("*") if recurse else folder.iterdir()
    files = [
        p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS and (p.is_symlink() or p.is_file())
    ]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())
