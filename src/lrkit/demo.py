"""`lrkit demo`: the whole workflow on real data (Fashion-MNIST), with no network needed.

1. A range test of a small ResNet from scratch, and proof that it left the model untouched.
2. The seed article's experiment: train once per suggestion rule, compare error rates.
3. Transfer learning the fastai way: a body pretrained (by the demo, cached) on classes 0-4,
   a new head for classes 5-9 from a few hundred images: freeze -> lr_find -> fit_one_cycle ->
   unfreeze -> lr_find -> fit_one_cycle(slice(lo, hi)); beside it the same with one lr for all.
4. report.md + report.html with every plot, in the output folder.
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
from lrkit.compare import (
    CompareConfig,
    compare_rules,
    format_cell,
    rule_table,
    write_comparison,
)
from lrkit.data.dataloaders import DataLoaders
from lrkit.data.fashion import CLASSES, SYSTEM_DIR, array_dataloaders, load_fashion_mnist
from lrkit.data.idx import read_idx
from lrkit.data.subset import balanced_subset
from lrkit.fetch import DownloadError, cache_dir
from lrkit.learner import Learner
from lrkit.metrics import error_rate
from lrkit.models.resnet import resnet_small
from lrkit.range_test_result import json_ready
from lrkit.report import Report, rich_table
from lrkit.vision.learner import vision_learner

BUNDLED_DIR = Path(__file__).parent / "data" / "bundled"
# A resnet_small at half width: four times cheaper, so every step fits the demo's budget.
DEMO_WIDTH = 8


def demo_network(in_chans: int = 1, num_classes: int = 10) -> torch.nn.Module:
    """The demo's architecture: lrkit's small ResNet for 28x28 images at width 8."""
    return resnet_small(num_classes=num_classes, in_chans=in_chans, width=DEMO_WIDTH)


@dataclass(frozen=True)
class DemoSizes:
    """How much data and training each step gets; `quick` keeps every step, smaller."""

    n_train: int  # items for steps 1-2 (all 10 classes)
    n_valid: int
    bs: int
    num_it: int  # range-test steps
    compare_epochs: int
    pretrain_items: int  # classes 0-4, for the body of step 3
    pretrain_epochs: int
    transfer_items: int  # labelled images of classes 5-9 for the new head
    transfer_valid: int
    head_epochs: int
    unfrozen_epochs: int


FULL = DemoSizes(12000, 2000, 64, 100, 3, 15000, 3, 500, 2000, 4, 6)
QUICK = DemoSizes(4000, 1000, 64, 60, 2, 4000, 2, 300, 1000, 3, 4)


@dataclass(frozen=True)
class DemoConfig:
    """What `lrkit demo` was asked to do; saved in the report."""

    quick: bool = False
    seed: int = 0
    data_path: str | None = None
    device: str = "cpu"
    rules: tuple[str, ...] = ("lowest", "minimum", "steep", "valley", "auto")

    @property
    def sizes(self) -> DemoSizes:
        return QUICK if self.quick else FULL


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
    """A resnet_small trained on classes 0-4, cached by its settings so later runs reuse it."""
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


def transfer(
    arrays, body: Path, discriminative: bool, config: DemoConfig, out: Path, console: Console
) -> dict[str, Any]:
    """Classes 5-9 from a few hundred images on the pretrained body, fastai's way."""
    sizes = config.sizes
    dls = _loaders(
        arrays, sizes.transfer_items, sizes.transfer_valid, range(5, 10), 64, config.seed
    )
    torch.manual_seed(config.seed)
    learn = vision_learner(
        dls,
        demo_network,
        pretrained=body,
        metrics=[error_rate],
        **_training_options(config, console),
    )
    tag = "sliced" if discriminative else "single"
    frozen_test = learn.lr_find(num_it=sizes.num_it, progress=False)
    frozen_test.plot(out / f"transfer_{tag}_lr_find_frozen.png")
    head_lr = frozen_test.require("auto")
    learn.fit_one_cycle(sizes.head_epochs, head_lr)
    stop_if_interrupted(learn.interrupted)
    head_error = learn.recorder.log[-1].get("error_rate") if learn.recorder.log else None
    learn.unfreeze()
    unfrozen_test = learn.lr_find(num_it=sizes.num_it, progress=False)
    unfrozen_test.plot(out / f"transfer_{tag}_lr_find_unfrozen.png")
    top_lr = min(unfrozen_test.require("auto"), head_lr)  # never faster than the head's lr
    lr = slice(top_lr / 100, top_lr) if discriminative else top_lr
    learn.fit_one_cycle(sizes.unfrozen_epochs, lr)
    stop_if_interrupted(learn.interrupted)
    log = learn.recorder.log
    return {
        "procedure": "unfreeze at slice(lo, hi)" if discriminative else "unfreeze at one lr",
        "head_lr": head_lr,
        "unfrozen_lr": f"slice({top_lr / 100:.2e}, {top_lr:.2e})"
        if discriminative
        else f"{top_lr:.2e}",
        "error_rate_after_head": head_error,
        "error_rate": log[-1].get("error_rate") if log else None,
        "diverged": learn.diverged,
    }


class DemoInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the demo; `summary` holds the steps done (marked interrupted) and
    `written` the files it wrote (the report so far and demo.json)."""

    def __init__(self, summary: dict[str, Any], written: list[Path]) -> None:
        super().__init__("demo interrupted")
        self.summary, self.written = summary, written


def run_demo(config: DemoConfig, out: Path, console: Console) -> dict[str, Any]:
    """All four steps; returns the results and writes the report into `out`.

    Raises DemoInterrupted after Ctrl-C, once the report so far and demo.json are written."""
    began = time.perf_counter()
    sizes = config.sizes
    out.mkdir(parents=True, exist_ok=True)
    arrays, source = demo_arrays(config.data_path)
    console.print(f"data: Fashion-MNIST from {source}")
    report = Report("lrkit demo: learning rates on Fashion-MNIST")
    report.paragraph(
        f"Data: Fashion-MNIST from {source}. Mode: {'quick' if config.quick else 'full'}."
    )

    summary: dict[str, Any] = {
        "config": asdict(config),
        "sizes": asdict(sizes),
        "data_source": source,
        "interrupted": False,
    }
    try:
        _demo_steps(arrays, config, out, console, report, summary)
    except KeyboardInterrupt:  # write what was done: the report so far and demo.json, marked
        summary["interrupted"] = True
        report.paragraph("Interrupted (Ctrl-C): the steps above were done, the others were not.")
    seconds = time.perf_counter() - began
    summary["seconds"] = seconds
    report.heading("Settings")
    report.paragraph(json.dumps({"config": asdict(config), "sizes": asdict(sizes)}))
    report.paragraph(f"Total time: {seconds:.0f} s.")
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
    """The four steps; each adds its results to `summary` and its section to `report`."""
    sizes = config.sizes
    console.rule("1. range test of a small ResNet from scratch")
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
    console.print(range_test)
    console.print(
        f"model fingerprint before {before}, after {after}: "
        f"{'restored bit-for-bit' if restored else 'CHANGED'}"
    )
    report.heading("1. Range test from scratch")
    report.paragraph(
        f"{len(range_test.lrs)} steps ({range_test.stop_reason}). Model fingerprint (sha256 of "
        f"all weights and buffers) before {before}, after {after}: "
        + ("restored bit-for-bit." if restored else "CHANGED.")
    )
    report.table([["rule", "lr"], *[[k, f"{v:.2e}"] for k, v in range_test.suggestions.items()]])
    report.figure(out / "lr_find.png", "Range test with every rule's suggestion")
    summary["range_test"] = {"suggestions": range_test.suggestions, "restored": restored}

    console.rule("2. one training run per suggestion rule")
    compare_config = CompareConfig(
        rules=config.rules, epochs=sizes.compare_epochs, num_it=sizes.num_it
    )
    comparison = compare_rules(learn, compare_config)
    compare_paths = write_comparison(comparison, out / "compare")  # marked interrupted, if so
    summary["comparison"] = comparison.rows()
    stop_if_interrupted(comparison.interrupted)
    table = rule_table(comparison)
    console.print(rich_table(table, "one run per rule, same start"))
    report.heading("2. The suggestion rules compared")
    report.paragraph(
        f"{sizes.compare_epochs} epoch(s) of one-cycle training per rule on {sizes.n_train} "
        "images, each from the same initial weights, seed and data order."
    )
    report.table(table)
    report.figure(compare_paths["valid_loss_plot"], "Validation loss per epoch for each rule")

    console.rule("3. transfer learning: classes 0-4 -> 5-9")
    body = pretrained_body(arrays, config, console)
    results = [
        transfer(arrays, body, discriminative, config, out, console)
        for discriminative in (True, False)
    ]
    summary["transfer"] = results
    for row in results:
        console.print(
            f"  {row['procedure']:<28} error rate {format_cell(row['error_rate'])}"
            f"  (lr {row['unfrozen_lr']})"
        )
    report.heading("3. Transfer learning with discriminative learning rates")
    report.paragraph(
        f"A body pretrained on classes 0-4, a new head for classes 5-9 trained on "
        f"{sizes.transfer_items} labelled images: freeze, lr_find, fit_one_cycle "
        f"({sizes.head_epochs} epochs), unfreeze, lr_find, fit_one_cycle ({sizes.unfrozen_epochs} "
        "epochs) — with slice(lo, hi) over the three layer groups, and with one lr for all."
    )
    report.table(
        [
            ["procedure", "lr after unfreezing", "error rate after head", "final error rate"],
            *[
                [
                    r["procedure"],
                    r["unfrozen_lr"],
                    format_cell(r["error_rate_after_head"]),
                    format_cell(r["error_rate"]),
                ]
                for r in results
            ],
        ]
    )
    report.figure(out / "transfer_sliced_lr_find_unfrozen.png", "Range test after unfreezing")
