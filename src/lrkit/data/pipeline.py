"""From a folder of images to `DataLoaders`: items, labels, junk check, split, loaders.

`image_dataloaders` takes labels from file names, folders or a function; `csv_dataloaders`
from a CSV (multi-label when asked). Both share `build_dataloaders`, which leaves out every
unusable file before training starts and reports them all at once.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from lrkit.config import DATA
from lrkit.data.augment import IMAGENET_STATS, AugConfig, BatchTransform
from lrkit.data.cache import PresizeCache
from lrkit.data.check import check_files
from lrkit.data.dataloaders import DataLoaders, drops_last_train_batch
from lrkit.data.decode import Junk, check_image
from lrkit.data.items import IMAGE_EXTENSIONS, get_image_files
from lrkit.data.labels import (
    LabelError,
    Labeller,
    folder_labeller,
    func_labeller,
    make_vocab,
    read_label_csv,
    regex_labeller,
)
from lrkit.data.loader import ImageBatches, ImageItems, default_num_workers
from lrkit.data.preprocess import Preprocess
from lrkit.data.presize import PresizeConfig
from lrkit.data.splits import random_split, split_by_folder, split_from_names
from lrkit.fetch import cache_dir

PETS_LABEL_RE = r"^(.+)_\d+\.\w+$"


class JunkWarning(UserWarning):
    """Some files were left out of the data; the message lists them with reasons."""


class BadImagesError(ValueError):
    """Unusable files were found and on_junk="error" asked to stop."""


def junk_report(junk: Sequence[Junk], root: Path | None = None) -> str:
    """One line per left-out file: its path (relative to `root` when possible) and the reason."""
    lines = []
    for j in junk:
        shown = j.path.relative_to(root) if root and j.path.is_relative_to(root) else j.path
        lines.append(f"  {shown}: {j.reason}")
    return "\n".join(lines)


def _raise_or_warn(junk: list[Junk], on_junk: str, root: Path | None) -> None:
    if not junk:
        return
    report = f"{len(junk)} file(s) left out:\n{junk_report(junk, root)}"
    if on_junk == "error":
        raise BadImagesError(report + "\nremove or fix them, or pass on_junk='skip'")
    warnings.warn(report, JunkWarning, stacklevel=3)


def _cache_folder(cache: bool | str | Path, paths: Sequence[Path], cfg: PresizeConfig) -> Path:
    if cache is True:
        first = str(paths[0].resolve().parent) if paths else ""
        digest = hashlib.sha1(f"{first}|{cfg}".encode()).hexdigest()[:16]
        return cache_dir("presize", digest)
    return Path(cache)


def _built_cache(
    folder: Path, cfg: PresizeConfig, paths: Sequence[Path], workers: int
) -> tuple[PresizeCache | None, list[Junk]]:
    """(the built cache, files it could not decode); no cache, with a warning, when the
    folder cannot be written: the cache only saves time, so training goes on without it."""
    store = PresizeCache(folder, cfg)
    try:
        return store, store.build(paths, num_workers=workers)
    except OSError as err:
        warnings.warn(
            f"the presize cache cannot be written at {folder} ({err}); going on without it "
            "(pass cache= a writable folder to keep decoded images between runs)",
            stacklevel=4,
        )
        return None, []


def _check_single_label(
    paths: Sequence[Path], labels: Sequence[list[str]], vocab: Sequence[str]
) -> None:
    """Refuse single-label data a classifier cannot learn from: an image with several labels,
    or one class for all (a forgotten label_re labels every image by its folder)."""
    for path, item_labels in zip(paths, labels, strict=True):
        if len(item_labels) != 1:
            raise ValueError(
                f"{path.name} has {len(item_labels)} labels {item_labels} but the data is "
                "single-label; return one label per image, or use multi_label=True"
            )
    if len(vocab) < 2:
        raise ValueError(
            f"all {len(paths)} images have the label {vocab[0] if vocab else None!r}: a "
            "classifier needs two classes or more; check label_re (Pets-style file names), "
            "label_from_folder or the CSV's label column"
        )


def build_dataloaders(
    paths: Sequence[Path],
    labels: Sequence[list[str]],
    is_valid: np.ndarray,
    multi_label: bool = False,
    presize: int = DATA.presize,
    size: int = DATA.size,
    min_scale: float = DATA.min_scale,
    aug: AugConfig | None = None,
    bs: int = DATA.bs,
    seed: int = DATA.seed,
    num_workers: int | None = None,
    device: torch.device | str | None = None,
    cache: bool | str | Path = False,
    stats: tuple[tuple[float, ...], tuple[float, ...]] = IMAGENET_STATS,
    junk: Sequence[Junk] = (),
    vocab: Sequence[str] | None = None,
    on_junk: str = "skip",
) -> DataLoaders:
    """DataLoaders for items already checked, labelled and split (`is_valid` mask)."""
    if not paths:
        raise ValueError("no usable images left; see the list of left-out files above")
    if size < 8 or presize < 8:
        raise ValueError(f"size and presize must be at least 8 pixels, got {size} and {presize}")
    junk = list(junk)
    cfg = PresizeConfig(presize=presize)
    workers = default_num_workers() if num_workers is None else num_workers
    store = None
    if cache:
        store, failed = _built_cache(_cache_folder(cache, paths, cfg), cfg, paths, workers)
        if failed:  # undecodable after passing the quick check: left out like the rest
            _raise_or_warn(failed, on_junk, None)
            junk += failed
            bad = {j.path for j in failed}
            ok = [i for i, p in enumerate(paths) if p not in bad]
            paths, labels, is_valid = [paths[i] for i in ok], [labels[i] for i in ok], is_valid[ok]
            store = store.subset(ok)
    vocab = list(vocab) if vocab is not None else make_vocab(labels)
    if not multi_label:
        _check_single_label(paths, labels, vocab)
    index = {name: i for i, name in enumerate(vocab)}
    if multi_label:
        targets = torch.zeros(len(paths), len(vocab))
        for row, item in enumerate(labels):
            targets[row, [index[v] for v in item]] = 1.0
    else:
        targets = torch.tensor([index[item[0]] for item in labels], dtype=torch.long)
    aug = aug if aug is not None else AugConfig(min_scale=min_scale)
    loaders = []
    for valid in (False, True):
        keep = np.flatnonzero(is_valid == valid)
        view = store.subset(keep.tolist()) if store is not None else None
        dataset = ImageItems([paths[i] for i in keep], targets[keep], cfg, view)
        transform = BatchTransform(size=size, aug=aug, stats=stats, train=not valid)
        loaders.append(
            ImageBatches(
                dataset,
                transform,
                bs,
                shuffle=not valid,
                seed=seed,
                num_workers=workers,
                device=device,
                drop_last=not valid and drops_last_train_batch(len(dataset), bs),
            )
        )
    return DataLoaders(
        loaders[0],
        loaders[1],
        vocab=vocab,
        multi_label=multi_label,
        junk=junk,
        preprocess=Preprocess(presize=presize, size=size, mean=stats[0], std=stats[1]),
    )


def _checks_file(folder: Path) -> Path:
    """Where the full decode check of the files under `folder` keeps its results."""
    digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]
    return cache_dir("checks", f"{digest}.json")


def check_items(
    paths: Iterable[Path],
    labeller: Labeller | None,
    full_check: bool = True,
    presize: int | None = None,
    num_workers: int = 0,
    results_file: Path | None = None,
) -> tuple[list[Path], list[list[str]], list[Junk]]:
    """(usable paths, their labels, junk), all found before training.

    The header check and labelling, then (`full_check`) a full decode of every labelled file
    at the scale training decodes it (`presize`), in `num_workers` threads, its results kept
    in `results_file` (see `check.check_files`). Junk comes in the order of `paths`.
    """
    paths = list(paths)
    good, labels, junk = [], [], []
    for path in paths:
        reason = check_image(path, min_short=presize)
        if reason is None and labeller is not None:
            try:
                item_labels = labeller(path)
            except LabelError as err:
                reason = str(err)
        if reason is not None:
            junk.append(Junk(path, reason))
            continue
        good.append(path)
        labels.append(item_labels if labeller is not None else [])
    if full_check and good:
        failed = check_files(good, presize, num_workers, results_file)
        bad = {j.path for j in failed}
        labels = [lab for p, lab in zip(good, labels, strict=True) if p not in bad]
        good = [p for p in good if p not in bad]
        order = {p: k for k, p in enumerate(paths)}
        junk = sorted(junk + failed, key=lambda j: order[j.path])
    return good, labels, junk


def _choose_labeller(
    label_re: str | None, label_func: Callable | None, label_from_folder: bool
) -> Labeller:
    chosen = sum([label_re is not None, label_func is not None, label_from_folder])
    if chosen > 1:
        raise ValueError("give one of label_re, label_func and label_from_folder, not several")
    if label_func is not None:
        return func_labeller(label_func)
    if label_from_folder:
        return folder_labeller
    return regex_labeller(label_re if label_re is not None else PETS_LABEL_RE)


def image_dataloaders(
    folder: str | Path,
    label_re: str | None = None,
    label_func: Callable[[Path], str | Sequence[str]] | None = None,
    label_from_folder: bool = False,
    valid_pct: float = DATA.valid_pct,
    seed: int = DATA.seed,
    valid_names: Iterable[str] | None = None,
    train_names: Iterable[str] | None = None,
    split_folders: tuple[str, str] | None = None,
    presize: int = DATA.presize,
    size: int = DATA.size,
    min_scale: float = DATA.min_scale,
    bs: int = DATA.bs,
    aug: AugConfig | None = None,
    num_workers: int | None = None,
    device: torch.device | str | None = None,
    cache: bool | str | Path = False,
    on_junk: str = "skip",
    full_check: bool = True,
    stats: tuple[tuple[float, ...], tuple[float, ...]] = IMAGENET_STATS,
) -> DataLoaders:
    """Images under `folder`, labelled by file name (Pets: `Breed_name_12.jpg`), folder or func.

    Split: `split_folders=("train", "valid")`, else `valid_names` (and `train_names`), else a
    seeded random `valid_pct`. Unusable files are left out and listed once (a JunkWarning), or
    raise BadImagesError with on_junk="error". Every file is decoded once before training as
    training will decode it (`full_check`; results kept in lrkit's cache folder, so a second
    run decodes only new or changed files); with full_check=False only headers are checked
    and a file that fails to decode stops training with an ImageDecodeError naming it.
    """
    if on_junk not in ("skip", "error"):
        raise ValueError(f'on_junk must be "skip" or "error", got {on_junk!r}')
    if train_names is not None and valid_names is None:
        raise ValueError("train_names needs valid_names too (the split is made from both lists)")
    folder = Path(folder)
    labeller = _choose_labeller(label_re, label_func, label_from_folder)
    files = get_image_files(folder)
    if not files:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise ValueError(f"no image files under {folder} (looked for {extensions})")
    workers = default_num_workers() if num_workers is None else num_workers
    paths, labels, junk = check_items(
        files, labeller, full_check, presize, workers, _checks_file(folder)
    )
    _raise_or_warn(junk, on_junk, folder)
    if split_folders is not None:
        is_valid, keep = split_by_folder(paths, folder, *split_folders)
    elif valid_names is not None:
        is_valid, keep = split_from_names(paths, valid_names, train_names)
    else:
        is_valid, keep = random_split(len(paths), valid_pct, seed), np.ones(len(paths), bool)
    paths = [p for p, k in zip(paths, keep, strict=True) if k]
    labels = [lab for lab, k in zip(labels, keep, strict=True) if k]
    return build_dataloaders(
        paths,
        labels,
        is_valid[keep],
        multi_label=False,
        presize=presize,
        size=size,
        min_scale=min_scale,
        aug=aug,
        bs=bs,
        seed=seed,
        num_workers=num_workers,
        device=device,
        cache=cache,
        stats=stats,
        junk=junk,
        on_junk=on_junk,
    )


def csv_dataloaders(
    folder: str | Path,
    csv: str | Path,
    fn_col: int | str = 0,
    label_col: int | str = 1,
    multi_label: bool = False,
    label_delim: str | None = None,
    valid_col: int | str | None = None,
    valid_pct: float = DATA.valid_pct,
    seed: int = DATA.seed,
    presize: int = DATA.presize,
    size: int = DATA.size,
    min_scale: float = DATA.min_scale,
    bs: int = DATA.bs,
    aug: AugConfig | None = None,
    num_workers: int | None = None,
    device: torch.device | str | None = None,
    cache: bool | str | Path = False,
    on_junk: str = "skip",
    full_check: bool = True,
    stats: tuple[tuple[float, ...], tuple[float, ...]] = IMAGENET_STATS,
) -> DataLoaders:
    """Images named in a CSV (file name column, label column) under `folder`.

    With multi_label=True the labels are split on `label_delim` (default a space) and targets
    are multi-hot float vectors. A `valid_col` of true/1/yes marks validation rows; without
    one the split is a seeded random `valid_pct`.
    """
    if on_junk not in ("skip", "error"):
        raise ValueError(f'on_junk must be "skip" or "error", got {on_junk!r}')
    folder = Path(folder)
    delim = label_delim if label_delim is not None else (" " if multi_label else None)
    rows = read_label_csv(csv, fn_col, label_col, delim, valid_col)
    junk, listed = [], {}
    for name, item_labels, valid in rows:
        path = folder / name
        if not path.is_file():
            junk.append(Junk(path, f"listed in {Path(csv).name} but missing"))
        elif not item_labels and not multi_label:
            junk.append(Junk(path, f"no label in {Path(csv).name}"))
        elif path in listed and listed[path] != (item_labels, valid):
            raise ValueError(
                f"{csv}: {name} is listed twice, as {listed[path]} and {(item_labels, valid)} "
                "(labels, valid); keep one row per file"
            )
        else:
            listed[path] = (item_labels, valid)
    workers = default_num_workers() if num_workers is None else num_workers
    paths, _, bad = check_items(listed, None, full_check, presize, workers, _checks_file(folder))
    junk += bad
    _raise_or_warn(junk, on_junk, folder)
    labels = [listed[p][0] for p in paths]
    if valid_col is not None:
        is_valid = np.array([listed[p][1] for p in paths], dtype=bool)
    else:
        is_valid = random_split(len(paths), valid_pct, seed)
    return build_dataloaders(
        paths,
        labels,
        is_valid,
        multi_label=multi_label,
        presize=presize,
        size=size,
        min_scale=min_scale,
        aug=aug,
        bs=bs,
        seed=seed,
        num_workers=num_workers,
        device=device,
        cache=cache,
        stats=stats,
        junk=junk,
        on_junk=on_junk,
    )
