"""Fashion-MNIST: find or fetch the four IDX files, load them, and serve in-memory batches.

Source order: `path` if given, else the Debian package's folder, else lrkit's cache folder,
else a download into that cache. The images stay one uint8 tensor in memory; a batch is
indexed, scaled, normalised (and resized / repeated to 3 channels when asked) in one go,
with no per-item work.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lrkit.config import DATA
from lrkit.data.dataloaders import DataLoaders, drops_last_train_batch
from lrkit.data.idx import read_idx
from lrkit.data.preprocess import Preprocess
from lrkit.data.subset import balanced_subset
from lrkit.fetch import DownloadError, Remote, cache_dir, download

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Mean and std of the 60k training pixels scaled to [0, 1] (checked by a test).
MEAN, STD = 0.2860, 0.3530

# array name -> official file (sha256 and size of the upstream .gz files)
FILES = {
    "x_train": Remote(
        BASE_URL + "train-images-idx3-ubyte.gz",
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        26421880,
    ),
    "y_train": Remote(
        BASE_URL + "train-labels-idx1-ubyte.gz",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        29515,
    ),
    "x_test": Remote(
        BASE_URL + "t10k-images-idx3-ubyte.gz",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        4422102,
    ),
    "y_test": Remote(
        BASE_URL + "t10k-labels-idx1-ubyte.gz",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        5148,
    ),
}


def _find_file(folder: Path, filename: str) -> Path | None:
    """The file in `folder`, gzipped or not."""
    for name in (filename, filename.removesuffix(".gz")):
        if (folder / name).is_file():
            return folder / name
    return None


def fashion_mnist_files(path: str | Path | None = None, progress: bool = True) -> dict[str, Path]:
    """Locate (or download into the cache) the four Fashion-MNIST files; array name -> path."""
    if path is not None:
        folder = Path(path)
        found = {key: _find_file(folder, r.filename) for key, r in FILES.items()}
        missing = [FILES[key].filename for key, p in found.items() if p is None]
        if missing:
            raise FileNotFoundError(
                f"{folder} lacks the Fashion-MNIST files {missing}; pass the folder that holds "
                "them, or path=None to use the system copy or download"
            )
        return found  # type: ignore[return-value]
    for folder in (SYSTEM_DIR, cache_dir("fashion-mnist")):
        found = {key: _find_file(folder, r.filename) for key, r in FILES.items()}
        if all(p is not None for p in found.values()):
            return found  # type: ignore[return-value]
    target = cache_dir("fashion-mnist")
    try:
        return {
            key: download(r, target / r.filename, progress=progress) for key, r in FILES.items()
        }
    except DownloadError as err:
        raise DownloadError(
            f"Fashion-MNIST is not in {SYSTEM_DIR} (Debian package dataset-fashion-mnist) "
            f"nor in {target}, and downloading failed: {err}"
        ) from err


def load_fashion_mnist(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The raw arrays: x_train uint8 (60000, 28, 28), y_train uint8, x_test, y_test."""
    arrays = {key: read_idx(p) for key, p in fashion_mnist_files(path).items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"Fashion-MNIST {split} files disagree: images {x.shape}, labels {y.shape}"
            )
    return arrays


class TensorImages:
    """In-memory uint8 images + labels; `__getitems__` builds a whole normalised batch at once."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        channels: int = 1,
        size: int = 28,
        mean: float = MEAN,
        std: float = STD,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.images, self.labels = images, labels
        self.channels, self.size, self.mean, self.std = channels, size, mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([index])
        return x[0], y[0]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(x float32 (B, C, size, size) normalised, y int64 (B,)) for the given indices."""
        index = torch.as_tensor(indices, dtype=torch.long)
        x = self.images[index].unsqueeze(1).float().div_(255)  # (B, 1, 28, 28) in [0, 1]
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        x = x.sub_(self.mean).div_(self.std)
        if self.channels == 3:
            x = x.expand(-1, 3, -1, -1).contiguous()  # (B, 3, size, size): grey copied 3 times
        return x, self.labels[index]


def _whole_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """collate_fn for datasets whose `__getitems__` already returns the batch."""
    return batch


def array_dataloaders(
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    vocab: list[str],
    bs: int = 128,
    channels: int = 1,
    size: int = 28,
    seed: int = DATA.seed,
    num_workers: int = 0,
) -> DataLoaders:
    """DataLoaders over in-memory (uint8 images (N, H, W), labels (N,)) pairs: train shuffled
    with a seeded generator, valid in order, batches built whole with no per-item work."""
    datasets = [
        TensorImages(
            torch.from_numpy(np.ascontiguousarray(x)),
            torch.from_numpy(np.asarray(y).astype(np.int64)),
            channels=channels,
            size=size,
        )
        for x, y in (train, valid)
    ]
    generator = torch.Generator().manual_seed(seed)
    common = {"batch_size": bs, "num_workers": num_workers, "collate_fn": _whole_batch}
    return DataLoaders(
        DataLoader(
            datasets[0],
            shuffle=True,
            generator=generator,
            drop_last=drops_last_train_batch(len(datasets[0]), bs),
            **common,
        ),
        DataLoader(datasets[1], shuffle=False, **common),
        vocab=vocab,
        preprocess=Preprocess(size=size, mean=(MEAN,) * channels, std=(STD,) * channels),
    )


def fashion_mnist(
    path: str | Path | None = None,
    bs: int = 128,
    channels: int = 1,
    size: int = 28,
    train_subset: int | None = None,
    valid_subset: int | None = None,
    seed: int = DATA.seed,
    num_workers: int = 0,
) -> DataLoaders:
    """Fashion-MNIST as DataLoaders: shuffled, seeded train (60k) and the 10k test set as valid."""
    arrays = load_fashion_mnist(path)
    splits = []
    for split, n, offset in (("train", train_subset, 0), ("test", valid_subset, 1)):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        keep = balanced_subset(y, n, seed + offset) if n is not None else np.arange(len(y))
        splits.append((x[keep], y[keep]))
    return array_dataloaders(
        splits[0], splits[1], list(CLASSES), bs, channels, size, seed, num_workers
    )
