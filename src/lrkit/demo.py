"""`lrkit demo`: the whole workflow on real data, with no network needed.

Part 1, real photos (`demo_pets`): the seed's workflow on the 185 Pets photos bundled with
lrkit and an ImageNet-pretrained EfficientNet-Lite0: show_batch, range test on the frozen body,
the rules compared on the head, fit_one_cycle at `auto`, unfreeze, range test,
fit_one_cycle(slice(lo, hi)), a confusion summary.
Part 2, from scratch (Fashion-MNIST): a range test of a small ResNet and proof that it left the
model untouched, then the seed article's experiment: train once per rule, compare error rates.
report.md + report.html with every plot, in the output folder; every section ends with one
sentence on what its numbers mean and whether a difference is beyond the validation noise.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from lrkit.callbacks import ProgressCallback
from lrkit.compare import CompareConfig, compare_rules, write_comparison
from lrkit.data.dataloaders import DataLoaders
from lrkit.data.fashion import CLASSES, SYSTEM_DIR, array_dataloaders, load_fashion_mnist
from lrkit.data.idx import read_idx
from lrkit.data.subset import balanced_subset
from lrkit.demo_pets import (
    ARCH,
    PETS_FULL,
    PETS_QUICK,
    PetsSizes,
    compare_section,
    print_range_test,
    run_pets,
    suggestion_table,
)
from lrkit.fetch import DownloadError, cache_dir
from lrkit.learner import Learner
from lrkit.metrics import error_rate
from lrkit.models.resnet import resnet_small
from lrkit.range_test_result import UnusableCurveError, json_ready
from lrkit.report import Report
from lrkit.vision.learner import vision_learner

BUNDLED_DIR = Path(__file__).parent / "data" / "bundled"
# A resnet_small at half width: four times cheaper, so every step fits the demo's budget.
DEMO_WIDTH = 8


def demo_network(in_chans: int = 1, num_classes: int = 10) -> torch.nn.Module:
    """The demo's architecture: lrkit's small ResNet for 28x28 images at width 8."""
    return resnet_small(num_classes=num_classes, in_chans=in_chans, width=DEMO_WIDTH)


@dataclass(frozen=True)
class DemoSizes:
    """How much Fashion-MNIST data and training part 2 gets; `quick` keeps every step, smaller."""

    n_train: int  # items, all 10 classes
    n_valid: int
    bs: int
    num_it: int  # range-test steps
    compare_epochs: int
    pretrain_items: int = 15000  # classes 0-4, for `pretrained_body` (benchmarks/bench_rules.py)
    pretrain_epochs: int = 3


# Chosen for the time budget on 2 CPU cores (whole demo <= 5 min, --quick <= 90 s).
FULL = DemoSizes(n_train=6000, n_valid=2000, bs=64, num_it=100, compare_epochs=2)
QUICK = DemoSizes(
    n_train=2000,
    n_valid=1000,
    bs=64,
    num_it=60,
    compare_epochs=2,
    pretrain_items=4000,
    pretrain_epochs=2,
)


@dataclass(frozen=True)
class DemoConfig:
    """What `lrkit demo` was asked to do; saved in the report."""

    quick: bool = False
    seed: int = 0
    data_path: str | None = None
    device: str = "cpu"
    rules: tuple[str, ...] = ("lowest", "minimum", "steep", "valley", "auto")
    pets: PetsSizes | None = None  # None: PETS_QUICK or PETS_FULL, as `quick` says
    fashion: DemoSizes | None = None  # None: QUICK or FULL

    @property
    def sizes(self) -> DemoSizes:
        """Part 2's sizes."""
        if self.fashion is not None:
            return self.fashion
        return QUICK if self.quick else FULL

    @property
    def pets_sizes(self) -> PetsSizes:
        """Part 1's sizes."""
        if self.pets is not None:
            return self.pets
        return PETS_QUICK if self.quick else PETS_FULL


def bundled_fashion_mnist() -> dict[str, np.ndarray]:
    """The 10k test split shipped inside lrkit, as train (8000) and valid (200 per class)."""
    x = read_idx(BUNDLED_DIR / "t10k-images-idx3-ubyte.gz")
    y = read_idx(BUNDLED_DIR / "t10k-labels-idx1-ubyte.gz")
    valid = balanced_subset(y, 2000, seed=0)
    train = np.setdiff1d(np.arange(len(y)), valid)
    return {"x_train": x[train], "y_train": y[train], "x_test": x[valid], "y_test": y[valid]}


def demo_arrays(path: str | Path | None) -> tuple[dict[str, np.ndarray], str]:
    """Fashion-MNIST as arrays, and where they came from: the given folder, the Debian package,
    the cache (downloading into it if needed), or else the 10k test split bundled with lrkit."""
    try:
        arrays = load_fashion_mnist(path)
    except (DownloadError, FileNotFoundError, OSError) as error:
        if path is not None:
            raise
        return bundled_fashion_mnist(), (
            f"the 10k test split bundled with lrkit (the full data is unavailable: {error})"
        )
    if path is not None:
        return arrays, f"the folder {path}"
    if (SYSTEM_DIR / "train-images-idx3-ubyte.gz").exists():
        return arrays, f"the Debian package dataset-fashion-mnist ({SYSTEM_DIR})"
    return arrays, f"lrkit's cache ({cache_dir('fashion-mnist')})"


def _subset(
    arrays: dict[str, np.ndarray], split: str, n: int, classes: range, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced subset of `split` restricted to `classes`, labels renumbered from 0."""
    x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
    inside = np.flatnonzero(np.isin(y, list(classes)))
    keep = inside[balanced_subset(y[inside], min(n, len(inside)), seed)]
    return x[keep], (y[keep] - classes.start).astype(np.int64)


def _loaders(arrays, sizes_train, sizes_valid, classes, bs, seed) -> DataLoaders:
    return array_dataloaders(
        _subset(arrays, "train", sizes_train, classes, seed),
        _subset(arrays, "test", sizes_valid, classes, seed + 1),
        vocab=[CLASSES[c] for c in classes],
        bs=bs,
        seed=seed,
    )


def fingerprint(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer, to show 'bit-for-bit the same' in one line."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def pretrained_body(arrays, config: DemoConfig, console: Console) -> Path:
    """A resnet_small trained on classes 0-4, cached by its settings so later runs reuse it
    (the body of the transfer task in benchmarks/bench_rules.py)."""
    sizes = config.sizes
    settings = (sizes.pretrain_items, sizes.pretrain_epochs, sizes.bs, config.seed)
    key = "-".join(str(v) for v in (*settings, len(arrays["y_train"])))
    path = cache_dir("demo") / f"resnet_small-w{DEMO_WIDTH}-classes0-4-{key}.pth"
    if path.exists():
        console.print(f"  using the cached body {path}")
        return path
    console.print(f"  pretraining a body on classes 0-4 ({sizes.pretrain_items} images), cached")
    dls = _loaders(arrays, sizes.pretrain_items, 1000, range(0, 5), sizes.bs, config.seed)
    torch.manual_seed(config.seed)
    learn = Learner(
        demo_network(num_classes=5),
        dls,
        torch.nn.CrossEntropyLoss(),
        metrics=[error_rate],
        **_training_options(config, console),
    )
    lr = learn.lr_find(num_it=sizes.num_it, progress=False).require("auto")
    learn.fit_one_cycle(sizes.pretrain_epochs, lr)
    stop_if_interrupted(learn.interrupted)  # a half-trained body must never be cached
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    torch.save(learn.model.state_dict(), partial)
    partial.replace(path)  # never leave a half-written body for the next run
    return path


def stop_if_interrupted(interrupted: bool) -> None:
    """A Ctrl-C ends a fit cleanly (the Learner keeps the model usable); the demo is one
    script, so it then stops as a whole, raising KeyboardInterrupt."""
    if interrupted:
        raise KeyboardInterrupt


def _training_options(config: DemoConfig, console: Console) -> dict[str, Any]:
    """Device and progress for every demo learner: one progress line per epoch on `console`
    (stderr under --json, so stdout keeps exactly one JSON object)."""
    return {"device": config.device, "progress": False, "cbs": [ProgressCallback(console)]}


class DemoInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the demo; `summary` holds the steps done (marked interrupted) and
    `written` the files it wrote (the report so far and demo.json)."""

    def __init__(self, summary: dict[str, Any], written: list[Path]) -> None:
        super().__init__("demo interrupted")
        self.summary, self.written = summary, written


def run_demo(config: DemoConfig, out: Path, console: Console) -> dict[str, Any]:
    """Both parts; returns the results and writes the report into `out`.

    Raises DemoInterrupted after Ctrl-C, once the report so far and demo.json are written."""
    began = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    arrays, source = demo_arrays(config.data_path)  # a bad --data fails before any training
    report = Report("lrkit demo: learning rates on real photos and on Fashion-MNIST")
    report.paragraph(
        f"Part 1 fine-tunes an ImageNet-pretrained {ARCH} on the Pets photos bundled with lrkit; "
        f"part 2 trains a small ResNet from scratch on Fashion-MNIST from {source}. "
        f"Mode: {'quick' if config.quick else 'full'}."
    )
    summary: dict[str, Any] = {
        "config": asdict(config),
        "sizes": asdict(config.sizes),
        "pets_sizes": asdict(config.pets_sizes),
        "data_source": source,
        "interrupted": False,
    }
    try:
        run_pets(
            config.pets_sizes,
            config.seed,
            config.device,
            out,
            console,
            report,
            summary,
            _training_options(config, console),
            config.rules,
        )
        summary["pets_seconds"] = time.perf_counter() - began
        console.print(f"data: Fashion-MNIST from {source}")
        _demo_steps(arrays, config, out, console, report, summary)
    except KeyboardInterrupt:  # write what was done: the report so far and demo.json, marked
        summary["interrupted"] = True
        report.paragraph("Interrupted (Ctrl-C): the steps above were done, the others were not.")
    seconds = time.perf_counter() - began
    summary["seconds"] = seconds
    settings = {"config": asdict(config), "sizes": asdict(config.sizes)}
    report.settings({**settings, "pets_sizes": asdict(config.pets_sizes)})
    report.paragraph(
        f"Total time: {seconds:.0f} s (part 1 {summary.get('pets_seconds', seconds):.0f} s), "
        "with the settings above, which reproduce every number in this report."
    )
    md, html = report.write(out)
    (out / "demo.json").write_text(json.dumps(json_ready(summary), indent=2, default=str))
    if summary["interrupted"]:
        raise DemoInterrupted(summary, [md, html, out / "demo.json"])
    console.print(f"report: {md} and {html} ({seconds:.0f} s)")
    return summary


def _demo_steps(
    arrays: dict[str, np.ndarray],
    config: DemoConfig,
    out: Path,
    console: Console,
    report: Report,
    summary: dict[str, Any],
) -> None:
    """Part 2, from scratch on Fashion-MNIST; each step adds its results to `summary` and its
    section to `report`."""
    sizes = config.sizes
    console.rule("Fashion-MNIST 1. range test of a small ResNet from scratch")
    dls = _loaders(arrays, sizes.n_train, sizes.n_valid, range(10), sizes.bs, config.seed)
    torch.manual_seed(config.seed)
    learn = vision_learner(
        dls,
        demo_network,
        pretrained=False,
        metrics=[error_rate],
        **_training_options(config, console),
    )
    before = fingerprint(learn.model)
    range_test = learn.lr_find(num_it=sizes.num_it, progress=console.is_terminal)
    after = fingerprint(learn.model)
    restored = before == after
    range_test.plot(out / "lr_find.png")
    print_range_test(console, range_test, "range test from scratch")
    console.print(
        f"model fingerprint before {before}, after {after}: "
        f"{'restored bit-for-bit' if restored else 'CHANGED'}"
    )
    report.heading("Fashion-MNIST 1. Range test from scratch")
    for note in range_test.warnings:
        report.paragraph(f"Warning about the range test: {note}")
    report.table(suggestion_table(range_test))
    report.figure(out / "lr_find.png", "Range test with every rule's suggestion")
    report.paragraph(
        f"{len(range_test.lrs)} steps ({range_test.stop_description}); the model fingerprint "
        f"(sha256 of all weights and buffers) was {before} before and {after} after: "
        + (
            "the range test left the model bit-for-bit as it found it."
            if restored
            else "the range test CHANGED the model, which it must never do."
        )
    )
    summary["range_test"] = {
        "suggestions": range_test.suggestions,
        "warnings": range_test.warnings,
        "restored": restored,
    }

    console.rule("Fashion-MNIST 2. one training run per suggestion rule")
    compare_config = CompareConfig(
        rules=config.rules, epochs=sizes.compare_epochs, num_it=sizes.num_it
    )
    try:
        comparison = compare_rules(learn, compare_config, range_test=range_test)
    except UnusableCurveError as error:  # auto reads no rate off this curve: say so and stop
        line = f"Fashion-MNIST comparison stopped before training at an unusable rate: {error}."
        console.print(line, highlight=False, soft_wrap=True)
        report.paragraph(line)
        summary["fashion_stopped"] = str(error)
        return
    compare_paths = write_comparison(comparison, out / "compare")  # marked interrupted, if so
    summary["comparison"] = comparison.rows()
    summary["verdict"] = comparison.winner()[1]
    stop_if_interrupted(comparison.interrupted)
    compare_section(
        comparison,
        console,
        report,
        f"Fashion-MNIST 2. The suggestion rules compared ({sizes.n_train} images from scratch)",
        compare_paths,
    )
