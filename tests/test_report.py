"""Report wording: settings as a table, plurals, and the range test's normal stop named as one."""

from __future__ import annotations

import numpy as np
import pytest

from learner_fixtures import make_learner
from lrkit import LRFindResult
from lrkit.callbacks import EarlyStopping
from lrkit.range_test_result import describe_stop
from lrkit.report import Report, plural, settings_rows


def test_plurals():
    assert [plural(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    assert (
        plural(3, "batch", "batches") == "3 batches" and plural(1, "batch", "batches") == "1 batch"
    )


def test_settings_are_a_table_with_dotted_names(tmp_path):
    values = {"config": {"epochs": 2, "lr": 0.001, "rules": ("minimum", "valley"), "out": None}}
    values["seed"] = 7
    assert settings_rows(values) == [
        ["config.epochs", "2"],
        ["config.lr", "0.001"],
        ["config.rules", "minimum, valley"],
        ["config.out", "-"],
        ["seed", "7"],
    ]
    report = Report("t")
    report.settings(values)
    md, html = report.write(tmp_path)
    text = md.read_text()
    assert "## Settings" in text and "| setting | value |" in text
    assert "| config.rules | minimum, valley |" in text and "{" not in text
    assert "<td>config.epochs</td><td>2</td>" in html.read_text()


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("diverged", "stopped as planned: the loss rose 3× its fall above its minimum"),
        ("completed", "completed: every step up to end_lr=10"),
        ("non-finite loss", "stopped: the loss became NaN or infinite"),
        ("interrupted", "interrupted (Ctrl-C)"),
    ],
)
def test_each_stop_reason_reads_as_what_it_is(code, words):
    assert describe_stop(code, 4.0, 10.0).startswith(words)


def test_the_normal_stop_is_not_called_diverged():
    n = 100
    lrs = 1e-7 * 1e8 ** (np.arange(n) / n)
    losses = np.linspace(2.3, 0.5, n)
    res = LRFindResult(
        lrs, losses, losses, lrs[:, None], n, 1e-7, 10.0, "exp", "diverged", {"div_thresh": 4.0}
    )
    assert "diverged" not in repr(res)
    assert "stopped as planned" in repr(res)
    assert res.to_dict()["stop_description"] == res.stop_description


def test_early_stopping_says_1_epoch():
    class Worse:
        name = "worse"
        values = iter([1.0, 2.0, 3.0])

        def __call__(self, pred, target):
            return next(self.values)

    learn = make_learner(metrics=[Worse()])
    learn.fit(3, 1e-3, cbs=[EarlyStopping(monitor="worse", mode="min", patience=1)])
    assert learn.stop_reason.endswith("for 1 epoch"), learn.stop_reason
