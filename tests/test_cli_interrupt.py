"""Ctrl-C during a range test (`find`, `compare`, `train --lr RULE`, `fine-tune`): the command
stops with exit 130 and one line, writes the curve so far (marked interrupted) and prints the
partial record under --json; nothing claims a file it did not write."""

import json
import os
import signal

import pytest
import torch

import lrkit.finder
from data_fixtures import fake_fashion_files
from lrkit.cli import main
from lrkit.finder import RangeTestInterrupted, lr_find

torch.set_num_threads(1)


@pytest.fixture
def fashion(tmp_path):
    folder = tmp_path / "fashion"
    folder.mkdir()
    for name, content in fake_fashion_files(n_train=200, n_test=40).items():
        (folder / name).write_bytes(content)
    return ["--dataset", "fashion-mnist", "--data", str(folder), "--bs", "50",
            "--device", "cpu", "--seed", "1", "--num-it", "10"]  # fmt: skip


def ctrl_c_at_step(monkeypatch, step, how="exception"):
    """Ctrl-C as the range test's `step`-th optimizer step starts (1 = before any point)."""
    original = lrkit.finder._Stepper.step
    seen = [0]

    def step_or_stop(self, batches):
        seen[0] += 1
        if seen[0] == step and how == "signal":
            os.kill(os.getpid(), signal.SIGINT)  # what a terminal sends
        elif seen[0] == step:
            raise KeyboardInterrupt
        return original(self, batches)

    monkeypatch.setattr(lrkit.finder._Stepper, "step", step_or_stop)


def run(argv, capsys):
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err and "error:" not in captured.err, captured.err
    return code, json.loads(captured.out), lines[-1]


@pytest.mark.parametrize("how", ["exception", "signal"])
def test_find_keeps_the_curve_so_far(how, fashion, tmp_path, monkeypatch, capsys):
    ctrl_c_at_step(monkeypatch, 5, how)
    code, record, last = run(["find", *fashion, "--out", str(tmp_path / "o")], capsys)
    assert code == 130
    assert last.startswith("lrkit find: interrupted (Ctrl-C) after 4 of 10 range-test steps")
    saved = json.loads((tmp_path / "o" / "lr_find.json").read_text())
    assert record["interrupted"] is saved["interrupted"] is True
    assert len(saved["lrs"]) == 4 and saved["stop_reason"] == "interrupted"
    assert (tmp_path / "o" / "lr_find.png").stat().st_size > 0


def test_find_interrupted_before_any_point_writes_the_record_only(
    fashion, tmp_path, monkeypatch, capsys
):
    ctrl_c_at_step(monkeypatch, 1)
    code, record, _ = run(["find", *fashion, "--out", str(tmp_path / "o")], capsys)
    assert code == 130 and record["interrupted"] is True and record["lrs"] == []
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["lr_find.json"]


@pytest.mark.parametrize(
    ("command", "extra", "plot", "saved_as"),
    [
        ("train", ["--lr", "auto"], "lr_find_train.png", "train.json"),
        ("fine-tune", ["--lr", "auto"], "lr_find_frozen.png", "fine_tune.json"),
    ],
)
def test_training_commands_stop_in_the_range_test(
    command, extra, plot, saved_as, fashion, tmp_path, monkeypatch, capsys
):
    ctrl_c_at_step(monkeypatch, 5)
    out = tmp_path / "o"
    code, record, last = run([command, *fashion, *extra, "--out", str(out)], capsys)
    assert code == 130
    assert f"lrkit {command}: interrupted (Ctrl-C) in the range test" in last
    assert "after 4 of 10 steps" in last
    saved = json.loads((out / saved_as).read_text())
    assert record["interrupted"] is saved["interrupted"] is True and saved["stages"] == []
    assert (out / plot).stat().st_size > 0  # the curve so far
    assert not (out / "losses.png").exists()  # nothing trained: no plot of it, none claimed
    assert "losses.png" not in last and "metrics.csv" not in last
    for name in last.split("wrote ")[1].split(", "):
        assert (out / name).exists() or os.path.exists(name), name


def test_compare_stopped_in_its_range_test_writes_the_curve(fashion, tmp_path, monkeypatch, capsys):
    ctrl_c_at_step(monkeypatch, 5)
    argv = ["compare", *fashion, "--rules", "minimum,valley", "--epochs", "1"]
    code, record, last = run([*argv, "--out", str(tmp_path)], capsys)
    assert code == 130 and "before any rule trained" in last
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert record["interrupted"] is saved["interrupted"] is True and saved["rows"] == []
    assert len(saved["range_test"]["lrs"]) == 4
    assert (tmp_path / "lr_find.png").stat().st_size > 0


def test_the_library_hands_the_partial_curve_with_the_interrupt(monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    batches = [(torch.randn(8, 3), torch.randn(8, 1)) for _ in range(4)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctrl_c_at_step(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt) as info:
        lr_find(model, batches, torch.nn.functional.mse_loss, num_it=20, div_thresh=None)
    assert isinstance(info.value, RangeTestInterrupted)
    partial = info.value.partial
    assert len(partial.lrs) == len(partial.losses) == 6 and partial.group_lrs.shape == (6, 1)
    assert partial.stop_reason == "interrupted"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # restored


def test_demo_writes_its_report_so_far(tmp_path, monkeypatch, capsys):
    ctrl_c_at_step(monkeypatch, 5)  # in step 1's range test
    out = tmp_path / "demo"
    code, record, last = run(["demo", "--quick", "--device", "cpu", "--out", str(out)], capsys)
    assert code == 130 and last.startswith("lrkit demo: interrupted (Ctrl-C); wrote ")
    saved = json.loads((out / "demo.json").read_text())
    assert record["interrupted"] is saved["interrupted"] is True and "range_test" not in saved
    assert "Interrupted (Ctrl-C)" in (out / "report.md").read_text()
