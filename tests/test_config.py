"""Defaults stated once: every signature and the command line agree with lrkit.config."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import lrkit
from data_fixtures import write_image
from lrkit.cli import build_parser
from lrkit.cli.setup import _data_options, load_data
from lrkit.compare import CompareConfig
from lrkit.config import DATA, RANGE_TEST
from lrkit.data.augment import AugConfig, BatchTransform
from lrkit.data.fashion import array_dataloaders, fashion_mnist
from lrkit.data.pipeline import build_dataloaders
from lrkit.data.presize import PresizeConfig
from lrkit.data.splits import random_split
from lrkit.vision import csv_dataloaders, image_dataloaders


def defaults(fn) -> dict[str, object]:
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


RANGE_TESTS = [lrkit.lr_find, lrkit.Learner.lr_find, lrkit.Learner.lr_find_repeated]
DATA_MAKERS = [image_dataloaders, csv_dataloaders, build_dataloaders, random_split]


@pytest.mark.parametrize("fn", RANGE_TESTS, ids=lambda f: f.__qualname__)
def test_range_test_signatures_take_the_config_defaults(fn):
    got = defaults(fn)
    for field in dataclasses.fields(RANGE_TEST):
        if field.name in got:
            assert got[field.name] == getattr(RANGE_TEST, field.name), field.name
    assert {"start_lr", "end_lr", "num_it", "beta", "div_thresh"} <= set(got)


@pytest.mark.parametrize("fn", DATA_MAKERS, ids=lambda f: f.__qualname__)
def test_data_signatures_take_the_config_defaults(fn):
    got = defaults(fn)
    shared = {f.name for f in dataclasses.fields(DATA)} & set(got)
    assert shared, "no data default to compare"
    assert {name: got[name] for name in shared} == {name: getattr(DATA, name) for name in shared}


def test_the_other_records_agree():
    assert PresizeConfig().presize == DATA.presize
    assert AugConfig().min_scale == DATA.min_scale
    assert BatchTransform().size == DATA.size
    assert defaults(fashion_mnist)["seed"] == defaults(array_dataloaders)["seed"] == DATA.seed
    compare = CompareConfig()
    assert (compare.num_it, compare.start_lr, compare.end_lr) == (
        RANGE_TEST.num_it,
        RANGE_TEST.start_lr,
        RANGE_TEST.end_lr,
    )


def test_the_command_line_and_the_library_agree():
    args = build_parser().parse_args(["find", "--dataset", "pets"])
    assert (args.seed, args.presize, args.size) == (DATA.seed, DATA.presize, DATA.size)
    assert (args.num_it, args.start_lr, args.end_lr, args.mode, args.div_thresh) == (
        RANGE_TEST.num_it,
        RANGE_TEST.start_lr,
        RANGE_TEST.end_lr,
        RANGE_TEST.mode,
        RANGE_TEST.div_thresh,
    )


def test_the_design_defaults():  # DESIGN.md's API: image_dataloaders(valid_pct=0.5, seed=73, ...)
    assert (DATA.valid_pct, DATA.seed, DATA.presize, DATA.size, DATA.bs) == (0.5, 73, 460, 224, 32)
    assert lrkit.RangeTestConfig() == RANGE_TEST  # the public name is the same class
    with pytest.raises(dataclasses.FrozenInstanceError):
        DATA.seed = 0


def test_an_image_folder_from_the_command_line_is_split_as_the_library_splits_it(tmp_path):
    for i in range(5):
        for name in ("cat", "dog"):
            write_image(tmp_path / f"{name}_{i}.png", (12, 12), "RGB", seed=i)
    args = build_parser().parse_args(["find", "--data", str(tmp_path), "--label-re", r"^(\w+)_"])
    options = _data_options(args)  # no --valid-pct, no --seed: the defaults
    with_cli = load_data(dataclasses.replace(options, workers=0, presize=12, size=8))
    with_lib = image_dataloaders(tmp_path, label_re=r"^(\w+)_", presize=12, size=8, num_workers=0)
    assert with_cli.n_valid == with_lib.n_valid == round(DATA.valid_pct * 10)
    assert with_cli.valid.dataset.paths == with_lib.valid.dataset.paths  # the same seed
