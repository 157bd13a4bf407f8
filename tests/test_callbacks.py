"""The stock callbacks: recorder, progress, early stopping, save-best-model, CSV logger."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
import torch
from rich.console import Console

from learner_fixtures import clone_state, make_learner
from lrkit.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    ProgressCallback,
    SaveBestModel,
    format_time,
)


class Scripted:
    """A metric that returns the next value of a fixed script at each validation."""

    name = "scripted"

    def __init__(self, values: list[float]) -> None:
        self.values = list(values)

    def __call__(self, pred, target):
        return self.values.pop(0)


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


class WeightsPerEpoch(Callback):
    order = 50

    def __init__(self) -> None:
        self.weights = []

    def after_epoch(self, learn):
        self.weights.append(clone_state(learn.model))


def test_recorder_per_batch_and_per_epoch():
    learn = make_learner(splitter=lambda m: [m.body, m.head])
    learn.fit_one_cycle(2, slice(1e-3, 1e-2))
    rec = learn.recorder
    assert len(rec.losses) == len(rec.lrs) == len(rec.moms) == 12
    assert all(len(lrs) == 2 for lrs in rec.lrs)
    assert rec.iters_per_epoch == [6, 6]
    assert rec.values("epoch") == [0, 1]
    assert rec.log[0]["train_loss"] == pytest.approx(sum(rec.losses[:6]) / 6)
    assert all(t >= 0 for t in rec.values("time"))
    learn.fit(1, 1e-3)
    assert len(rec.losses) == 6  # reset for each fit


def test_early_stopping_after_patience_epochs_without_improvement():
    learn = make_learner(metrics=[Scripted([0.5, 0.6, 0.4, 0.45, 0.41, 0.9, 0.9])])
    stopper = EarlyStopping(monitor="scripted", mode="min", patience=2)
    learn.fit(7, 1e-3, cbs=[stopper])
    # best 0.4 at epoch 2; epochs 3 and 4 do not improve -> stop after epoch 4
    assert learn.recorder.values("scripted") == [0.5, 0.6, 0.4, 0.45, 0.41]
    assert "early stopping: scripted has not improved on 0.400000 for 2 epochs" in (
        learn.stop_reason
    )


def test_early_stopping_mode_auto_and_min_delta():
    learn = make_learner(metrics=[Scripted([0.5, 0.52, 0.6, 0.7])])
    learn.fit(4, 1e-3, cbs=[EarlyStopping(monitor="scripted", patience=1, min_delta=0.05)])
    # "scripted" is maximised; 0.52 is not 0.05 better than 0.5 -> stop after epoch 1
    assert learn.recorder.values("scripted") == [0.5, 0.52]


def test_early_stopping_names_available_columns():
    learn = make_learner()
    with pytest.raises(ValueError, match=r"monitors 'accuracy'.*choose one of \['train_loss'"):
        learn.fit(1, 1e-3, cbs=[EarlyStopping(monitor="accuracy")])


def test_monitors_without_validation_warn_once_and_do_nothing(tmp_path):
    dls = make_learner().dls
    dls.valid = None
    learn = make_learner(dls=dls)
    saver = SaveBestModel(tmp_path / "best.pth")
    with pytest.warns(UserWarning) as caught:
        learn.fit(3, 1e-3, cbs=[EarlyStopping(patience=1), saver])
    messages = [str(w.message) for w in caught]
    assert messages.count("EarlyStopping: valid_loss is not available, ignoring it") == 1
    assert messages.count("SaveBestModel: valid_loss is not available, ignoring it") == 1
    assert len(learn.recorder.log) == 3 and not learn.stop
    assert saver.best_epoch is None and not (tmp_path / "best.pth").exists()


def test_save_best_model_keeps_and_reloads_the_best_epoch(tmp_path):
    learn = make_learner(metrics=[Scripted([0.5, 0.3, 0.4, 0.6])])
    weights = WeightsPerEpoch()
    saver = SaveBestModel(tmp_path / "best.pth", monitor="scripted", mode="min")
    learn.fit(4, 1e-2, cbs=[saver, weights])
    assert saver.best_epoch == 1 and saver.best == pytest.approx(0.3)
    assert (tmp_path / "best.pth").exists()
    final = learn.model.state_dict()
    assert all(torch.equal(v, final[k]) for k, v in weights.weights[1].items())
    assert not all(torch.equal(v, final[k]) for k, v in weights.weights[3].items())


def test_csv_logger_writes_a_flushed_row_per_epoch(tmp_path):
    path = tmp_path / "logs" / "history.csv"

    class ReadBack(Callback):
        order = 50

        def after_epoch(self, learn):
            self.rows = _rows(path)

    reader = ReadBack()
    learn = make_learner()
    learn.fit(2, 1e-3, cbs=[CSVLogger(path), reader])
    assert len(reader.rows) == 2  # readable while training: flushed each epoch
    rows = _rows(path)
    assert list(rows[0]) == ["epoch", "train_loss", "valid_loss", "time"]
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert float(rows[1]["valid_loss"]) == pytest.approx(learn.recorder.log[1]["valid_loss"])
    learn.fit(1, 1e-3, cbs=[CSVLogger(path, append=True)])
    assert len(_rows(path)) == 3
    staged = tmp_path / "staged.csv"
    learn.fit(1, 1e-3, cbs=[CSVLogger(staged, stage="frozen")])
    learn.fit(1, 1e-3, cbs=[CSVLogger(staged, append=True, stage="unfrozen")])
    assert [(r["stage"], r["epoch"]) for r in _rows(staged)] == [("frozen", "0"), ("unfrozen", "0")]
    learn.fit(1, 1e-3, cbs=[CSVLogger(path)])
    assert len(_rows(path)) == 1


def test_progress_prints_one_line_per_epoch_when_not_a_terminal():
    out = io.StringIO()
    learn = make_learner(cbs=[ProgressCallback(Console(file=out, force_terminal=False))])
    learn.fit(3, 1e-3)
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("epoch 0  train_loss ")
    assert "valid_loss" in lines[0]
    assert re.search(r"  time \d\d:\d\d$", lines[0])


def test_progress_bar_and_table_in_a_terminal():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    learn = make_learner(cbs=[ProgressCallback(console, refresh_s=0.0)])
    learn.fit(2, 1e-3, cbs=[EarlyStopping(patience=1, min_delta=10.0)])
    text = out.getvalue()
    assert "epoch 1/2" in text and "6/6" in text  # the bar, drawn during the epoch
    for word in ("epoch", "train_loss", "valid_loss", "time"):
        assert word in text
    assert "stopped: early stopping" in text


def test_format_time():
    assert format_time(0.4) == "00:00"
    assert format_time(75) == "01:15"
    assert format_time(3725) == "1:02:05"
