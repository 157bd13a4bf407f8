"""What both sides of benchmarks/bench_vs_fastai.py share: the photos, the split, the sizes.

Imports nothing but the standard library, so fastai's venv can load it beside lrkit's.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

PETS = Path(__file__).resolve().parents[2] / "shared" / "pets_sample" / "images"
LABEL_RE = r"^(.+)_\d+\.jpe?g$"
PRESIZE, SIZE, BS, MIN_SCALE = 192, 160, 32, 0.75  # the seed recipe, scaled for 2 CPU cores
EPOCHS, FREEZE_EPOCHS = 4, 1  # fine_tune(4)


def breed(name: str) -> str:
    """`Great_Pyrenees_12.jpg` -> `Great_Pyrenees`."""
    match = re.match(LABEL_RE, name)
    if match is None:
        raise ValueError(f"{name} is not named <Breed>_<number>.jpg")
    return match.group(1)


def split(seed: int, folder: Path = PETS, half: int = 0) -> tuple[list[str], list[str]]:
    """(train names, valid names): per breed, shuffled by `seed`, 3 then 2 photos to validation
    in turn (5 photos per breed -> 92 train, 93 valid for the 37 breeds); `half` 1 swaps the
    two, so that the two halves of a seed validate on every photo once."""
    by_breed: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.jpg")):
        by_breed.setdefault(breed(path.name), []).append(path.name)
    rng = random.Random(seed)
    train, valid = [], []
    for i, name in enumerate(sorted(by_breed)):
        names = by_breed[name]
        rng.shuffle(names)
        n_valid = len(names) // 2 + (1 if i % 2 == 0 and len(names) % 2 else 0)
        valid += names[:n_valid]
        train += names[n_valid:]
    train, valid = sorted(train), sorted(valid)
    return (valid, train) if half else (train, valid)
