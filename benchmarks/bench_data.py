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

`--device cuda` runs lrkit's batch transform on the GPU (the workers then only decode,
presize and batch uint8) and moves every pipeline's batches there, the plain one's too.
`--breakdown` first times each stage alone, per image, on one thread, and prints the best
ratio any pipeline that includes that stage could reach on this machine.
Usage: python benchmarks/bench_data.py [--n 300] [--workers 2] [--bs 32] [--repeats 5]
                                       [--device cpu] [--breakdown]
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

from lrkit.data.augment import BatchTransform
from lrkit.data.decode import load_rgb
from lrkit.data.presize import PresizeConfig, crop_square, presize_image, presize_region
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


def epoch_rate(loader, device: torch.device) -> float:
    """Images per second over one full epoch of `loader`, each batch ending on `device`."""
    start, count = time.perf_counter(), 0
    for x, _y in loader:
        x = x.to(device, non_blocking=True)
        count += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return count / (time.perf_counter() - start)


def per_image_ms(step, n: int, repeats: int = 3) -> float:
    """Best-of-`repeats` milliseconds per image of `step()`, which handles `n` images."""
    step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best / n * 1e3


def breakdown(paths: list[Path], presize: int, size: int, bs: int) -> None:
    """Each stage alone, one thread, ms per image; and the ratio vs plain it caps a pipeline at.

    A pipeline that must run a stage can go no faster than that stage alone, so
    plain / stage is the best ratio against plain that any pipeline containing it can reach.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = PresizeConfig(presize)
    paths = paths[: 2 * bs]
    images = [load_rgb(p, presize) for p in paths]
    regions = [presize_region(img, cfg) for img in images]
    squares = torch.randint(0, 256, (bs, 3, presize, presize), dtype=torch.uint8)
    squares = squares.contiguous(memory_format=torch.channels_last)
    scratch = torch.empty(squares.shape, memory_format=torch.channels_last)
    transform = BatchTransform(size=size)
    plain = PlainPillow(paths, size)
    stages = {
        "plain Pillow, whole item": per_image_ms(
            lambda: [plain[i] for i in range(len(paths))], len(paths)
        ),
        "decode (lrkit load_rgb)": per_image_ms(
            lambda: [load_rgb(p, presize) for p in paths], len(paths)
        ),
        "presize resize + crop": per_image_ms(
            lambda: [presize_image(img, cfg, 0.5, 0.5) for img in images], len(paths)
        ),
        "cache read (square copy)": per_image_ms(
            lambda: [np.array(crop_square(r, 0.3, 0.7)) for r in regions], len(paths)
        ),
        "uint8 -> float batch": per_image_ms(lambda: scratch.copy_(squares), bs),
        "augment: one grid_sample + lighting + normalise": per_image_ms(
            lambda: transform(scratch, torch.Generator().manual_seed(0)), bs
        ),
    }
    torch.set_num_threads(threads)
    reference = stages["plain Pillow, whole item"]
    print(f"per-stage cost, 1 thread, presize {presize} -> size {size}:")
    for name, ms in stages.items():
        print(f"  {name:48s} {ms:6.3f} ms/image   caps a pipeline at {reference / ms:5.2f}x plain")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="number of JPEGs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--presize", type=int, default=460)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per pipeline")
    parser.add_argument("--device", default="cpu", help="where batches end (cpu, cuda)")
    parser.add_argument("--breakdown", action="store_true", help="time each stage alone first")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
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
            "device": device,
        }
        warnings.simplefilter("ignore")
        if args.breakdown:
            breakdown(paths, args.presize, args.size, args.bs)
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
            epoch_rate(loader, device)
        rates: dict[str, list[float]] = {name: [] for name in loaders}
        names = list(loaders)
        for r in range(args.repeats):  # interleaved, starting with a different one each round
            for name in names[r % len(names) :] + names[: r % len(names)]:
                rates[name].append(epoch_rate(loaders[name], device))
        del loaders, cached
        gc.collect()
    print(
        f"{args.n} JPEGs ~500x375, presize {args.presize}, size {args.size}, bs {args.bs}, "
        f"{args.workers} workers, main-process torch threads {torch.get_num_threads()}, "
        f"batches on {device}, "
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
