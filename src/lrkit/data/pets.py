"""Oxford-IIIT Pets: find or download the official archives, then the breed (or species) pipeline.

Layout: `images/<Breed_name>_<n>.jpg` (cats capitalised, dogs lower case) and
`annotations/trainval.txt` / `test.txt` (the official split, one stem per line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lrkit.data.dataloaders import DataLoaders
from lrkit.data.labels import regex_labeller
from lrkit.data.pipeline import PETS_LABEL_RE, image_dataloaders
from lrkit.data.splits import read_name_list
from lrkit.fetch import Remote, cache_dir, fetch_and_extract

BASE_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/data/"
REMOTES = [
    Remote(
        BASE_URL + "images.tar.gz",
        "67195c5e1c01f1ab5f9b6a5d22b8c27a580d896ece458917e61d459337fa318d",
        791918971,
    ),
    Remote(
        BASE_URL + "annotations.tar.gz",
        "52425fb6de5c424942b7626b428656fcbd798db970a937df61750c0f1d358e91",
        19173078,
    ),
]
_BREED = regex_labeller(PETS_LABEL_RE)


def species_of(path: Path) -> str:
    """Species from the breed in the name: capitalised breeds are cats, lower-case ones dogs."""
    breed = _BREED(path)[0]  # a name without a breed is a LabelError, reported as junk
    return "cat" if breed[:1].isupper() else "dog"


def pets_folder(path: str | Path | None = None, progress: bool = True) -> Path:
    """The Pets root (holding images/ and annotations/), downloaded into the cache if needed."""
    if path is not None:
        root = Path(path)
        if not (root / "images").is_dir():
            raise FileNotFoundError(
                f"{root} has no images/ folder; pass the Oxford-IIIT Pets root (with images/ "
                "and annotations/), or path=None to download it"
            )
        return root
    return fetch_and_extract(REMOTES, cache_dir("oxford-iiit-pet"), progress=progress)


def pets(
    path: str | Path | None = None,
    split: str = "official",
    label: str = "breed",
    **kwargs: Any,
) -> DataLoaders:
    """Pets as DataLoaders: 37 breeds (or cat/dog), official trainval/test or a random split.

    Other keyword arguments (presize, size, bs, seed, valid_pct, cache, ...) go to
    `image_dataloaders`.
    """
    if split not in ("official", "random"):
        raise ValueError(f'split must be "official" or "random", got {split!r}')
    if label not in ("breed", "species"):
        raise ValueError(f'label must be "breed" or "species", got {label!r}')
    root = pets_folder(path)
    labelling = {"label_func": species_of} if label == "species" else {"label_re": PETS_LABEL_RE}
    if split == "official":
        if "valid_pct" in kwargs:
            raise ValueError(
                "valid_pct goes with split='random'; the official split is trainval.txt / test.txt"
            )
        lists = root / "annotations"
        for name in ("trainval.txt", "test.txt"):
            if not (lists / name).is_file():
                raise FileNotFoundError(
                    f"{lists / name} is missing; use a random split (split='random')"
                )
        kwargs["train_names"] = read_name_list(lists / "trainval.txt")
        kwargs["valid_names"] = read_name_list(lists / "test.txt")
    return image_dataloaders(root / "images", **labelling, **kwargs)
