"""`lrkit fine-tune` (and `train --freeze-epochs` with a rule), in-process on tiny Fashion-MNIST."""

from __future__ import annotations

import json
import math

import pytest
import torch

from data_fixtures import fake_fashion_files
from lrkit import suggest
from lrkit.cli import main
from lrkit.learner import Learner
from lrkit.models.resnet import resnet_small
from lrkit.range_test_result import LRFindResult

torch.set_num_threads(1)


@pytest.fixture
def fashion(tmp_path):
    """Tiny Fashion-MNIST files and a 'pretrained' resnet_small body, as command-line options."""
    folder = tmp_path / "fashion"
    folder.mkdir()
    for name, content in fake_fashion_files(n_train=60, n_test=20).items():
        (folder / name).write_bytes(content)
    weights = tmp_path / "body.pth"
    torch.manual_seed(0)
    torch.save(resnet_small(num_classes=10).state_dict(), weights)
    return ["--dataset", "fashion-mnist", "--data", str(folder), "--bs", "20", "--device", "cpu",
            "--seed", "1", "--pretrained", str(weights), "--num-it", "15"]  # fmt: skip


@pytest.fixture
def events(monkeypatch):
    """Every range test and fit, in order: (what, frozen_idx, per-group lrs at the fit's end)."""
    seen: list[tuple] = []
    lr_find, fit_one_cycle = Learner.lr_find, Learner.fit_one_cycle

    def spy_lr_find(self, *args, **kwargs):
        seen.append(("lr_find", self.frozen_idx, None))
        return lr_find(self, *args, **kwargs)

    def spy_fit(self, n_epoch, lr_max, *args, **kwargs):
        fit_one_cycle(self, n_epoch, lr_max, *args, **kwargs)
        seen.append(("fit", self.frozen_idx, [group["lr"] for group in self.opt.param_groups]))

    monkeypatch.setattr(Learner, "lr_find", spy_lr_find)
    monkeypatch.setattr(Learner, "fit_one_cycle", spy_fit)
    return seen


def fine_tune(argv, capsys):
    code = main(["fine-tune", *argv, "--json"])
    captured = capsys.readouterr()
    return code, captured


def test_fine_tune_with_a_rule_tests_before_each_stage_and_slices(
    fashion, events, tmp_path, capsys
):
    out = tmp_path / "ft"
    argv = [*fashion, "--freeze-epochs", "1", "--epochs", "1", "--lr", "minimum",
            "--lr-mult", "50", "--out", str(out)]  # fmt: skip
    code, captured = fine_tune(argv, capsys)
    assert code == 0, captured.err
    # a range test on the frozen body, the head's epoch, a new range test unfrozen, the rest
    assert [(what, frozen) for what, frozen, _ in events] == [
        ("lr_find", 2), ("fit", 2), ("lr_find", 0), ("fit", 0)
    ]  # fmt: skip
    record = json.loads(captured.out)
    saved = json.loads((out / "fine_tune.json").read_text())
    assert saved["config"] == record["config"]
    config = saved["config"]
    assert (config["lr"], config["lr_mult"], config["freeze_epochs"], config["epochs"]) == (
        "minimum",
        50.0,
        1,
        1,
    )
    assert config["arch"] == "resnet_small" and config["num_it"] == 15
    frozen, unfrozen = saved["stages"]
    assert (frozen["stage"], unfrozen["stage"]) == ("frozen", "unfrozen")
    assert frozen["rule"] == unfrozen["rule"] == "minimum"
    assert isinstance(frozen["lr"], float) and frozen["lr"] == frozen["suggestion"]
    lo, hi = unfrozen["lr"]["slice"]
    assert lo == pytest.approx(hi / 50) and hi == unfrozen["suggestion"]
    assert unfrozen["group_lrs"][0] == pytest.approx(hi / 50)
    assert unfrozen["group_lrs"][-1] == pytest.approx(hi)
    # the learner's own per-group rates after the unfrozen one-cycle: first = last / lr_mult
    end_lrs = events[-1][2]
    assert len(end_lrs) == 3 and end_lrs[-1] / end_lrs[0] == pytest.approx(50)
    assert events[1][2][0] == events[1][2][-1]  # the frozen stage: one rate (only the head moves)
    rows = (out / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["frozen", "unfrozen"]
    for name in ("model.lrk", "losses.png", "schedule.png", "lr_find_frozen.png",
                 "lr_find_unfrozen.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name


def test_fine_tune_with_a_number_runs_no_range_test(fashion, events, tmp_path, capsys):
    out = tmp_path / "ft"
    argv = [*fashion, "--freeze-epochs", "0", "--epochs", "1", "--lr", "2e-3", "--out", str(out)]
    code, captured = fine_tune(argv, capsys)
    assert code == 0, captured.err
    assert [what for what, _, _ in events] == ["fit"]  # no head stage, no range test
    (stage,) = json.loads((out / "fine_tune.json").read_text())["stages"]
    # as learn.fine_tune(base_lr=2e-3) and fastai: the unfrozen stage peaks at base_lr / 2
    assert stage["lr"] == {"slice": [pytest.approx(1e-5), 1e-3]} and stage["rule"] is None
    assert not (out / "lr_find_unfrozen.png").exists()


def test_train_with_a_rule_and_frozen_epochs_slices_like_fine_tune(
    fashion, events, tmp_path, capsys
):
    out = tmp_path / "train"
    argv = ["train", *fashion, "--freeze-epochs", "1", "--epochs", "1", "--lr", "minimum",
            "--out", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert [what for what, _, _ in events] == ["lr_find", "fit", "lr_find", "fit"]
    end_lrs = events[-1][2]  # before: every group at one rate after unfreezing
    assert end_lrs[-1] / end_lrs[0] == pytest.approx(100)  # --lr-mult's default
    stages = json.loads((out / "train.json").read_text())["stages"]
    assert stages[1]["lr"].startswith("slice(")


@pytest.mark.parametrize("command", ["train", "fine-tune"])
def test_auto_with_frozen_epochs_runs_the_library_auto_plan_in_both_commands(
    fashion, events, tmp_path, monkeypatch, capsys, command
):
    monkeypatch.setattr(LRFindResult, "require", lambda self, rule="auto": 1e-3)  # readable
    peaks, fit_one_cycle = [], Learner.fit_one_cycle

    def spy_peak(self, n_epoch, lr_max, *args, **kwargs):
        peaks.append((lr_max, kwargs))
        return fit_one_cycle(self, n_epoch, lr_max, *args, **kwargs)

    monkeypatch.setattr(Learner, "fit_one_cycle", spy_peak)
    out = tmp_path / command
    argv = [command, *fashion, "--freeze-epochs", "1", "--epochs", "1", "--lr", "auto",
            "--out", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    # one range test (the head's), as learn.fine_tune(base_lr="auto"); no test after unfreezing
    assert [what for what, _, _ in events] == ["lr_find", "fit", "fit"]
    end_lrs = events[-1][2]
    assert end_lrs[-1] / end_lrs[0] == pytest.approx(100)  # fastai's spread ...
    (head, head_options), (body, body_options) = peaks
    assert head == 1e-3 and head_options["pct_start"] == 0.99
    assert body == slice(pytest.approx(5e-6), pytest.approx(5e-4))  # ... from auto's rate / 2
    assert (body_options["pct_start"], body_options["div"]) == (0.3, 5.0)
    assert not list(out.glob("lr_find_*.png"))[1:]  # one range-test plot
    record = json.loads((out / f"{command.replace('-', '_')}.json").read_text())
    assert record["config"]["lr_mult"] == 100


def test_auto_keeps_its_quick_head_test_unless_the_command_line_sets_one(
    fashion, tmp_path, monkeypatch, capsys
):
    # before: the command passed lr_find's 100 steps from 1e-7 always, over the plan's own
    monkeypatch.setattr(LRFindResult, "require", lambda self, rule="auto": 1e-3)  # readable
    assert fashion[-2:] == ["--num-it", "15"]
    tests = {}
    for extra in ([], ["--num-it", "15"]):
        out = tmp_path / f"ft{len(extra)}"
        argv = [*fashion[:-2], *extra, "--epochs", "1", "--lr", "auto", "--out", str(out)]
        code, captured = fine_tune(argv, capsys)
        assert code == 0, captured.err
        head, _ = json.loads((out / "fine_tune.json").read_text())["stages"]
        tests[len(extra)] = (head["range_test"], captured.err)
    (own, log), (given, _) = tests[0], tests[2]
    assert (own["num_it"], own["start_lr"], own["end_lr"]) == (60, 1e-4, 10.0)  # QUICK_RANGE_TEST
    assert "range test before the frozen stage: up to 60 steps, lr 1e-04 to 1e+01" in log
    assert "range test before the unfrozen stage" not in log  # none runs there (before: announced)
    assert (given["num_it"], given["start_lr"]) == (15, 1e-4)  # the flag, over the plan's own


def test_an_untrustworthy_suggestion_stops_before_training(
    fashion, events, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(suggest.RULES, "untrusting", lambda lrs, losses: math.nan)
    out = tmp_path / "ft"
    code, captured = fine_tune([*fashion, "--lr", "untrusting", "--out", str(out)], capsys)
    assert code == 2
    line = captured.err.strip().splitlines()[-1]
    assert line.startswith("lrkit fine-tune: stopped before the frozen stage")
    assert "pass a learning rate" in line and "nan" in line
    assert [what for what, _, _ in events] == ["lr_find"]  # nothing trained at NaN
    saved = json.loads((out / "fine_tune.json").read_text())
    assert saved["stages"] == [] and "pass a learning rate" in saved["stopped"]


def test_ctrl_c_in_the_second_range_test_keeps_the_head_stage(
    fashion, tmp_path, monkeypatch, capsys
):
    calls = []
    lr_find = Learner.lr_find

    def interrupted_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return lr_find(self, *args, **kwargs)

    monkeypatch.setattr(Learner, "lr_find", interrupted_second)
    out = tmp_path / "ft"
    code, captured = fine_tune([*fashion, "--lr", "minimum", "--out", str(out)], capsys)
    assert code == 130
    assert "interrupted (Ctrl-C) during the unfrozen stage" in captured.err.splitlines()[-1]
    saved = json.loads((out / "fine_tune.json").read_text())
    assert saved["interrupted"] is True
    assert [stage["stage"] for stage in saved["stages"]] == ["frozen"]
    assert (out / "model.lrk").stat().st_size > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lr", "1e-4:1e-3"], "give one number (hi) or a rule name"),
        (["--lr", "fast"], "is not a number"),
        (["--lr-mult", "0.5"], "--lr-mult must be a number in [1, 1e+06]"),
        (["--epochs", "0"], "--epochs must be an integer in 1..10000"),
        (["--freeze-epochs", "-1"], "--freeze-epochs must be an integer in 0..10000"),
    ],
)
def test_bad_options_exit_2_with_one_line(extra, message, fashion, events, tmp_path, capsys):
    code, captured = fine_tune([*fashion, *extra, "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert events == []


def test_unwritable_output_is_refused_before_any_work(fashion, events, tmp_path, capsys):
    out = tmp_path / "o"
    (out / "lr_find_unfrozen.png").mkdir(parents=True)
    code, captured = fine_tune([*fashion, "--lr", "minimum", "--out", str(out)], capsys)
    assert code == 2 and "lr_find_unfrozen.png" in captured.err
    assert events == []
