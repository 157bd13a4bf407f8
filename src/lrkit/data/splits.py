"""Train/valid splits: seeded random, from lists of file names, or from sub-folder names.

Each splitter returns a boolean numpy mask, True for validation items. Items are sorted by
path before splitting, and numpy's PCG64 stream is the same on every platform, so a seed
gives the same split on every machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from lrkit.config import DATA


def random_split(n: int, valid_pct: float = DATA.valid_pct, seed: int = DATA.seed) -> np.ndarray:
    """Mask with round(valid_pct * n) validation items, chosen by a seeded permutation."""
    if not 0 <= valid_pct < 1:
        raise ValueError(f"valid_pct must be in [0, 1), got {valid_pct}")
    n_valid = round(valid_pct * n)
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:n_valid]] = True
    return mask


def read_name_list(path: str | Path) -> list[str]:
    """File stems from a list file such as Pets' `trainval.txt` (first token of each line)."""
    lines = Path(path).read_text().splitlines()
    return [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]


def _stem(name: str) -> str:
    return Path(name).stem


def split_from_names(
    items: Sequence[Path], valid_names: Iterable[str], train_names: Iterable[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(valid mask, keep mask) from names (with or without extension); unlisted items drop out."""
    valid = {_stem(n) for n in valid_names}
    train = {_stem(n) for n in train_names} if train_names is not None else None
    stems = [p.stem for p in items]
    is_valid = np.array([s in valid for s in stems], dtype=bool)
    keep = np.array([s in valid or train is None or s in train for s in stems], dtype=bool)
    return is_valid, keep


def split_by_folder(
    items: Sequence[Path], root: str | Path, train: str = "train", valid: str = "valid"
) -> tuple[np.ndarray, np.ndarray]:
    """(valid mask, keep mask) from the first folder under `root`: `train`/ or `valid`/."""
    root = Path(root)
    tops = [
        p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else "" for p in items
    ]
    is_valid = np.array([t == valid for t in tops], dtype=bool)
    keep = np.array([t in (train, valid) for t in tops], dtype=bool)
    if not is_valid.any() or not (keep & ~is_valid).any():
        raise ValueError(f"{root} needs both a {train}/ and a {valid}/ folder with images")
    return is_valid, keep
