"""What `lrkit train`/`fine-tune` tell about the trained model (interpretation, multi-label
threshold), what `lrkit predict` prints for a multi-label model, `--log`, and the resolved
config in every JSON result."""

import json
import re
import sys

import pytest
import torch

from data_fixtures import PETS_IMAGES, fake_fashion_files, make_pets
from lrkit import load_learner
from lrkit.cli import main

torch.set_num_threads(1)

IMAGES = ["--size", "32", "--presize", "40", "--bs", "4", "--workers", "0", "--arch", "resnet18",
          "--pretrained", "none", "--device", "cpu", "--seed", "3"]  # fmt: skip


@pytest.fixture
def fashion(tmp_path):
    folder = tmp_path / "fashion"
    folder.mkdir()
    for name, content in fake_fashion_files(n_train=200, n_test=40).items():
        (folder / name).write_bytes(content)
    return ["--dataset", "fashion-mnist", "--data", str(folder), "--bs", "50", "--device", "cpu",
            "--seed", "1"]  # fmt: skip


@pytest.fixture
def multi_label(tmp_path):
    """The Pets-like images with a CSV of labels: cats 'cat' (British Shorthairs also
    'fluffy'), dogs 'dog'."""
    make_pets(tmp_path / "pets")
    rows = []
    for name, _, _ in PETS_IMAGES:
        labels = "dog" if name[0].islower() else "cat"
        labels += " fluffy" if name.startswith("British") else ""
        rows.append(f"{name},{labels}")
    (tmp_path / "labels.csv").write_text("fname,labels\n" + "\n".join(rows) + "\n")
    images = tmp_path / "pets" / "images"
    return ["--data", str(images), "--labels", str(tmp_path / "labels.csv"), "--multi-label",
            "--valid-pct", "0.5", *IMAGES]  # fmt: skip


def run_json(argv, capsys):
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out), captured.err


def test_train_writes_the_interpretation_and_the_resolved_config(fashion, tmp_path, capsys):
    out = tmp_path / "train"
    argv = ["train", *fashion, "--epochs", "1", "--lr", "1e-3", "--out", str(out)]
    record, err = run_json(argv, capsys)
    for name in ("confusion_matrix.png", "top_losses.png"):
        assert (out / name).stat().st_size > 1000, name
    interp = record["interpretation"]
    matrix = interp["confusion_matrix"]
    assert len(matrix) == 10 and sum(map(sum, matrix)) == record["data"]["n_valid"]
    mistakes = sum(matrix[i][j] for i in range(10) for j in range(10) if i != j)
    assert sum(n for _, _, n in interp["most_confused"]) == mistakes
    counts = [n for _, _, n in interp["most_confused"]]
    assert counts == sorted(counts, reverse=True)
    assert "most confused" in err  # the human table, on stderr under --json
    # defaults resolved: never null where the default was used
    config = record["config"]
    assert config["arch"] == "resnet_small" and config["pretrained"] == "none"
    assert config["precision"] == "fp32" and config["schedule"] == "one-cycle"
    assert config["device"] == "cpu" and config["epochs"] == 1 and config["log"] == "csv"
    assert json.loads((out / "train.json").read_text())["config"] == config


def test_find_records_the_default_arch(fashion, tmp_path, capsys):
    record, _ = run_json(["find", *fashion, "--num-it", "10", "--out", str(tmp_path)], capsys)
    assert record["model"]["arch"] == "resnet_small"
    saved = json.loads((tmp_path / "lr_find.json").read_text())
    assert saved["config"]["arch"] == "resnet_small" and saved["config"]["num_it"] == 10


def test_multi_label_train_chooses_and_exports_a_threshold_then_predict_uses_it(
    multi_label, tmp_path, capsys
):
    out = tmp_path / "ml"
    argv = ["train", *multi_label, "--epochs", "1", "--lr", "1e-3", "--out", str(out)]
    record, err = run_json(argv, capsys)
    interp = record["interpretation"]
    thresh = interp["threshold"]
    assert 0 < thresh < 1 and 0 <= interp["accuracy_multi"] <= 1
    assert interp["accuracy_multi"] == max(interp["threshold_sweep"].values())
    assert set(interp["per_class"]) == {"cat", "dog", "fluffy"}
    assert all({"precision", "recall"} <= set(v) for v in interp["per_class"].values())
    assert f"at threshold {thresh:g}" in err
    assert (out / "per_class.png").is_file() and not (out / "confusion_matrix.png").exists()
    assert load_learner(out / "model.lrk").thresh == pytest.approx(thresh)

    # predict: every class's probability under --json, the stored threshold by default
    image = tmp_path / "pets" / "images" / "Abyssinian_1.jpg"
    result, _ = run_json(["predict", str(out / "model.lrk"), str(image)], capsys)
    row = result["predictions"][0]
    assert result["thresh"] == pytest.approx(thresh)
    assert set(row["probabilities"]) == {"cat", "dog", "fluffy"}
    assert all(0 <= p <= 1 for p in row["probabilities"].values())
    above = [name for name, p in row["probabilities"].items() if p > thresh]
    assert row["label"] == above

    # each predicted label with its own probability; --thresh overrides the stored one; the
    # line is never wrapped, however long the path
    long_dir = tmp_path / ("a_rather_long_folder_name_" * 4)
    long_dir.mkdir()
    long_image = long_dir / "Abyssinian_1.jpg"
    long_image.write_bytes(image.read_bytes())
    assert main(["predict", str(out / "model.lrk"), str(long_image), "--thresh", "0.01"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and len(lines[0]) > 80
    path, labels = lines[0].split("\t")
    assert path == str(long_image)
    shown = dict(part.rstrip(")").split(" (") for part in labels.split(", "))
    assert shown == {name: f"{p:.3f}" for name, p in row["probabilities"].items() if p > 0.01}

    assert main(["predict", str(out / "model.lrk"), str(image), "--thresh", "0.9999"]) == 0
    assert "no label above 0.9999; highest:" in capsys.readouterr().out


def test_thresh_is_refused_for_a_single_label_model(fashion, tmp_path, capsys):
    out = tmp_path / "single"
    assert main(["train", *fashion, "--epochs", "1", "--lr", "1e-3", "--out", str(out)]) == 0
    capsys.readouterr()
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (28, 28)).save(image)
    assert main(["predict", str(out / "model.lrk"), str(image), "--thresh", "0.3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--thresh is for multi-label models" in err[0]


def test_log_tensorboard_writes_events_that_read_back(fashion, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    argv = ["train", *fashion, "--epochs", "1", "--lr", "1e-3", "--log", "tensorboard"]
    assert main([*argv, "--out", str(out)]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "valid/loss", "lr/group_0"} <= set(tags)
    assert len(events.Scalars("train/loss")) == 4  # 200 items / bs 50, one epoch
    assert (out / "metrics.csv").is_file()  # csv is still written


def test_log_wandb_writes_an_offline_run(fashion, tmp_path, capsys, monkeypatch):
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = tmp_path / "wb"
    argv = ["find", *fashion, "--num-it", "10", "--log", "wandb", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))


@pytest.mark.parametrize("backend", ["tensorboard", "wandb"])
def test_log_without_its_package_is_one_line(backend, fashion, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, backend, None)  # as if not installed
    argv = ["train", *fashion, "--log", backend, "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--log {backend}" in err[0]
    assert f"pip install 'lrkit[{backend}]'" in err[0]


def test_fine_tune_writes_the_interpretation_and_the_resolved_config(fashion, tmp_path, capsys):
    out = tmp_path / "ft"
    argv = ["fine-tune", *fashion, "--freeze-epochs", "1", "--epochs", "1", "--lr", "1e-3"]
    record, _ = run_json([*argv, "--out", str(out)], capsys)
    assert (out / "confusion_matrix.png").is_file() and (out / "top_losses.png").is_file()
    assert len(record["interpretation"]["confusion_matrix"]) == 10
    assert record["config"]["arch"] == "resnet_small" and record["config"]["pretrained"] == "none"
    assert record["config"]["lr_mult"] == 100.0 and record["config"]["log"] == "csv"


def test_range_tests_say_they_are_running_in_a_log(fashion, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("lrkit.cli.output.HEARTBEAT_S", 0.01)  # a line every 10 ms, not 5 s
    from lrkit.models.resnet import resnet_small

    weights = tmp_path / "body.pth"  # a "pretrained" body: a frozen stage, then an unfrozen one
    torch.manual_seed(0)
    torch.save(resnet_small(num_classes=10).state_dict(), weights)
    argv = ["fine-tune", *fashion, "--pretrained", str(weights), "--freeze-epochs", "1",
            "--epochs", "1", "--num-it", "15", "--lr", "minimum"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path)]) == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.splitlines()  # capsys is not a terminal: a log
    for stage in ("frozen", "unfrozen"):
        what = f"range test before the {stage} stage"
        start = lines.index(f"{what}: up to 15 steps, lr 1e-07 to 1e+01 ...")
        end = next(i for i, line in enumerate(lines) if re.match(rf"{what}: \d+ steps \(", line))
        running = [i for i, line in enumerate(lines) if line.startswith(f"{what}: running, ")]
        assert running and all(start < i < end for i in running), lines


def test_compare_says_its_range_test_is_running_in_a_log(fashion, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("lrkit.cli.output.HEARTBEAT_S", 0.01)
    argv = ["compare", *fashion, "--rules", "minimum", "--epochs", "1", "--num-it", "15"]
    assert main([*argv, "--out", str(tmp_path)]) == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.splitlines()
    running = [i for i, line in enumerate(lines) if line.startswith("range test: running, ")]
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch "))
    assert running and max(running) < first_epoch  # it stops when the range test ends
