"""Images per second of the lrkit image pipeline vs a plain per-image Pillow pipeline.

Not a test: it builds a few hundred Pets-like JPEGs (about 500x375) in a temporary folder,
then times epochs of decode + presize + augment + batch for:

  plain       Pillow per image: full decode, convert, resize, random crop, flip, to tensor
  lrkit       image_dataloaders without the cache (draft decode, presize, batch augmentation)
  lrkit+cache the same with a warm memory-mapped presize cache

all with the same worker count (persistent workers), in one process. Every loader is built
and warmed up with one full epoch first (workers started, files in the page cache, the
cache mapped and checked); then the pipelines take turns, one epoch each, for `--repeats`
rounds, so load from elsewhere on the machine hits them alike. It prints the median rate of
each and the median of the per-round ratios against `plain`.
Usage: python benchmarks/bench_data.py [--n 300] [--workers 2] [--bs 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lrkit.vision import IMAGENET_STATS, image_dataloaders

BREEDS = ["Abyssinian", "Bengal", "Persian", "beagle", "pug", "american_pit_bull_terrier"]


def make_images(folder: Path, n: int, seed: int = 0) -> None:
    """Pets-like JPEGs: around 500x375 (some portrait), smooth shapes plus sensor-like noise."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        w, h = int(rng.integers(440, 520)), int(rng.integers(330, 400))
        if i % 4 == 0:
            w, h = h, w
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack(
            [
                np.sin(xs / rng.uniform(20, 60)),
                np.cos(ys / rng.uniform(20, 60)),
                np.sin((xs + ys) / rng.uniform(30, 90)),
            ],
            axis=-1,
        )
        pixels = 127 + 100 * base + rng.normal(0, 12, size=(h, w, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        image.save(folder / f"{BREEDS[i % len(BREEDS)]}_{i}.jpg", quality=90)


class PlainPillow:
    """The usual per-image pipeline, the reference the ratios are measured against."""

    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths, self.size = paths, size
        self.mean = torch.tensor(IMAGENET_STATS[0]).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STATS[1]).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = Image.open(self.paths[i]).convert("RGB")
        w, h = img.size
        scale = self.size / min(w, h)
        img = img.resize(
            (max(self.size, round(w * scale)), max(self.size, round(h * scale))),
            Image.Resampling.BILINEAR,
        )
        left = random.randint(0, img.size[0] - self.size)
        top = random.randint(0, img.size[1] - self.size)
        img = img.crop((left, top, left + self.size, top + self.size))
        if random.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div_(255)
        return (x - self.mean) / self.std, 0


def epoch_rate(loader) -> float:
    """Images per second over one full epoch of `loader`."""
    start, count = time.perf_counter(), 0
    for x, _y in loader:
        count += x.shape[0]
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="number of JPEGs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--presize", type=int, default=460)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per pipeline")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    random.seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        make_images(folder, args.n)
        paths = sorted(folder.glob("*.jpg"))
        common = {
            "valid_pct": 0.0,
            "presize": args.presize,
            "size": args.size,
            "bs": args.bs,
            "num_workers": args.workers,
        }
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        cached = image_dataloaders(folder, cache=Path(tmp) / "cache", **common)  # builds it
        build = time.perf_counter() - start
        loaders = {
            "plain Pillow": DataLoader(
                PlainPillow(paths, args.size),
                batch_size=args.bs,
                shuffle=True,
                num_workers=args.workers,
                persistent_workers=args.workers > 0,
            ),
            "lrkit (no cache)": image_dataloaders(folder, **common).train,
            "lrkit (warm cache)": cached.train,
        }
        for loader in loaders.values():  # warm-up: workers up, page cache and memory map warm
            epoch_rate(loader)
        rates: dict[str, list[float]] = {name: [] for name in loaders}
        names = list(loaders)
        for r in range(args.repeats):  # interleaved, starting with a different one each round
            for name in names[r % len(names) :] + names[: r % len(names)]:
                rates[name].append(epoch_rate(loaders[name]))
        del loaders, cached
        gc.collect()
    print(
        f"{args.n} JPEGs ~500x375, presize {args.presize}, size {args.size}, bs {args.bs}, "
        f"{args.workers} workers, main-process torch threads {torch.get_num_threads()}, "
        f"{args.repeats} interleaved epochs each"
    )
    print(f"cache build (once): {build:.2f} s")
    reference = rates["plain Pillow"]
    for name, values in rates.items():
        ratios = [v / ref for v, ref in zip(values, reference, strict=True)]
        print(
            f"{name:20s} {statistics.median(values):8.1f} images/s "
            f"(min {min(values):.0f}, max {max(values):.0f})   "
            f"{statistics.median(ratios):5.2f}x plain "
            f"(per round {min(ratios):.2f}-{max(ratios):.2f})"
        )


if __name__ == "__main__":
    main()
