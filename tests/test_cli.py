"""The `lrkit` command, called in-process through `lrkit.cli.main(argv)` on tiny data."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from data_fixtures import fake_fashion_files
from lrkit import LRFindResult, suggest
from lrkit.cli import main
from lrkit.models.resnet import resnet_small

torch.set_num_threads(1)


@pytest.fixture
def fashion_dir(tmp_path):
    folder = tmp_path / "fashion"
    folder.mkdir()
    for name, content in fake_fashion_files(n_train=200, n_test=40).items():
        (folder / name).write_bytes(content)
    return folder


@pytest.fixture
def fashion(fashion_dir):
    """The data and speed options every command test shares."""
    return ["--dataset", "fashion-mnist", "--data", str(fashion_dir), "--bs", "50",
            "--device", "cpu", "--seed", "1"]  # fmt: skip


def run_json(argv, capsys):
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out), captured.err  # stdout holds exactly one JSON object


def test_find_writes_plot_and_json(fashion, tmp_path, capsys):
    out = tmp_path / "run"
    record, err = run_json(["find", *fashion, "--num-it", "20", "--out", str(out)], capsys)
    assert set(record["suggestions"]) == {"lowest", "minimum", "steep", "valley", "slide", "auto"}
    assert len(record["lrs"]) == len(record["losses"]) > 0
    assert record["data"]["n_train"] == 200 and record["data"]["bs"] == 50
    assert record["model"]["groups"] == 3 and "torch" in record["versions"]
    assert "suggestions" in err  # the human table went to stderr
    assert (out / "lr_find.png").stat().st_size > 1000
    saved = LRFindResult.load(out / "lr_find.json")
    assert saved.suggestions["minimum"] == pytest.approx(record["suggestions"]["minimum"])


def test_find_human_output_is_a_table(fashion, tmp_path, capsys):
    assert main(["find", *fashion, "--num-it", "20", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("lowest", "minimum", "steep", "valley", f"auto (= {suggest.AUTO_RULE})"):
        assert name in out


def test_find_with_repeats_reports_median_and_spread(fashion, tmp_path, capsys):
    argv = ["find", *fashion, "--num-it", "20", "--repeats", "2", "--out", str(tmp_path)]
    record, err = run_json(argv, capsys)
    assert len(record["runs"]) == 2
    assert set(record["spread_decades"]) == set(record["suggestions"])
    assert "spread (decades)" in err


def write_pngs(folder, n=3):
    rng = np.random.default_rng(0)
    paths = []
    for index in range(n):
        path = folder / f"item{index}.png"
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), mode="L").save(path)
        paths.append(str(path))
    return paths


def test_train_exports_a_model_that_predict_reads(fashion, tmp_path, capsys):
    out = tmp_path / "train"
    argv = ["train", *fashion, "--epochs", "1", "--lr", "1e-3", "--out", str(out)]
    record, _ = run_json(argv, capsys)
    stage = {"stage": "train", "epochs": 1, "lr": 1e-3, "range_test_warnings": []}
    assert record["stages"] == [stage]
    assert 0 <= record["final"]["error_rate"] <= 1 and record["diverged"] is False
    for name in ("model.lrk", "metrics.csv", "losses.png", "schedule.png", "train.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("stage,epoch")

    images = write_pngs(tmp_path)
    predictions, _ = run_json(["predict", str(out / "model.lrk"), *images], capsys)
    rows = predictions["predictions"]
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    assert main(["predict", str(out / "model.lrk"), str(not_an_image)]) == 1  # named, not usage
    assert "notes.txt" in capsys.readouterr().err
    assert [row["file"] for row in rows] == images
    assert all(len(row["probs"]) == 10 and 0 <= row["index"] < 10 for row in rows)

    # a truncated JPEG, a missing file and a text file among good ones: each named on stderr,
    # the good ones predicted in order, exit 1 at the end
    good = Image.open(images[0]).convert("RGB")
    good.save(tmp_path / "whole.jpg", quality=90)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    bad = [str(tmp_path / "truncated.jpg"), str(tmp_path / "gone.png"), str(not_an_image)]
    argv = ["predict", str(out / "model.lrk"), images[0], bad[0], images[1], bad[1], bad[2],
            images[2], "--json"]  # fmt: skip
    assert main(argv) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("lrkit predict")]
    assert [line.split(": ")[2] for line in errors[:3]] == bad  # "lrkit predict: error: FILE: ..."
    assert "3 of 6 files could not be read" in errors[3]
    entries = json.loads(captured.out)["predictions"]
    assert [entry["file"] for entry in entries] == argv[2:-1]
    assert [entry["label"] for entry in entries if "label" in entry] == [
        row["label"] for row in rows
    ]
    assert [entry["file"] for entry in entries if "error" in entry] == bad


def test_train_with_a_rule_frozen_epochs_and_pretrained_body(fashion, tmp_path, capsys):
    weights = tmp_path / "body.pth"
    torch.save(resnet_small(num_classes=10).state_dict(), weights)
    out = tmp_path / "tune"
    argv = ["train", *fashion, "--arch", "resnet_small", "--pretrained", str(weights),
            "--freeze-epochs", "1", "--epochs", "1", "--lr", "minimum", "--num-it", "20",
            "--out", str(out)]  # fmt: skip
    record, _ = run_json(argv, capsys)
    assert [stage["stage"] for stage in record["stages"]] == ["frozen", "train"]
    assert isinstance(record["stages"][0]["lr"], float)  # the head: the rule's suggestion
    assert record["stages"][1]["lr"].startswith("slice(")  # all groups: slice(hi / 100, hi)
    assert (out / "lr_find_frozen.png").exists() and (out / "lr_find_unfrozen.png").exists()


def test_train_with_a_slice(fashion, tmp_path, capsys):
    argv = ["train", *fashion, "--epochs", "1", "--lr", "1e-4:1e-3", "--out", str(tmp_path)]
    record, _ = run_json(argv, capsys)
    assert record["stages"][0]["lr"] == "slice(1.00e-04, 1.00e-03)"


def test_compare_rows_and_report(fashion, tmp_path, capsys):
    argv = ["compare", *fashion, "--rules", "minimum,valley", "--epochs", "1",
            "--num-it", "20", "--out", str(tmp_path)]  # fmt: skip
    record, err = run_json(argv, capsys)
    assert [row["rule"] for row in record["rows"]] == ["minimum", "valley"]
    for row in record["rows"]:
        assert {"rule", "lr", "valid_loss", "error_rate"} <= set(row)
    # 40 validation items: a winner is named only beyond their noise, and the verdict says which
    assert record["best_rule"] in (None, "minimum", "valley")
    assert record["verdict"].startswith("Best:" if record["best_rule"] else "No clear winner")
    assert record["verdict"].split(":")[0] in err  # printed below the table
    for name in ("report.md", "report.html", "lr_find.png", "valid_loss.png", "comparison.json"):
        assert (tmp_path / name).exists(), name
    assert "one run per rule" in err


def test_summary_shows_groups(fashion, tmp_path, capsys):
    record, err = run_json(["summary", *fashion, "--out", str(tmp_path)], capsys)
    assert record["layer_groups"] == 3
    assert record["trainable_parameters"] == record["parameters"]  # from scratch: nothing frozen
    assert "group" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["find", "--num-it", "5"], "--num-it=5 is too few"),
        (["find", "--start-lr", "1", "--end-lr", "0.5"], "--start-lr (1) must be below --end-lr"),
        (["find", "--arch", "vgg99"], "vgg99"),
        (["find", "--bs", "0"], "--bs must be an integer in 1..65536"),
        (["find", "--device", "cuda:7"], "cuda"),
        (["find", "--pretrained", "/no/weights.pth"], "/no/weights.pth"),
        (["train", "--lr", "banana"], "banana"),
        (["train", "--lr", "1e-3:1e-5"], "LO <= HI"),
        (["compare", "--rules", "minimum,sharpest"], "sharpest"),
        (["launch"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, message, fashion_dir, tmp_path, capsys):
    if argv[0] != "launch":
        argv = [*argv, "--dataset", "fashion-mnist", "--data", str(fashion_dir)]
        argv += ["--out", str(tmp_path)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["find", "--data", "/no/such/folder"], "/no/such/folder"),
        (["find", "--dataset", "fashion-mnist", "--data", "/no/such/folder"], "/no/such/folder"),
        (["predict", "/no/model.lrk", "a.png"], "/no/model.lrk"),
    ],
)
def test_missing_paths_exit_2_naming_them(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_help_exits_0(capsys):
    for command in ("find", "train", "compare", "summary", "predict", "demo"):
        assert main([command, "--help"]) == 0
    assert "--num-it" in capsys.readouterr().out


# -- image folders: the Pets layout, file-name labels, and a multi-label CSV -----------------
IMAGES = ["--size", "32", "--presize", "40", "--bs", "4", "--workers", "0", "--arch", "resnet18",
          "--pretrained", "none", "--device", "cpu"]  # fmt: skip


@pytest.fixture
def pets_root(tmp_path):
    from data_fixtures import make_pets

    make_pets(tmp_path / "pets")
    return tmp_path / "pets"


def test_find_on_the_pets_layout_and_on_file_name_labels(pets_root, tmp_path, capsys):
    argv = ["find", "--dataset", "pets", "--data", str(pets_root), *IMAGES, "--num-it", "10"]
    record, err = run_json([*argv, "--out", str(tmp_path / "pets")], capsys)
    assert record["data"]["classes"] >= 2 and record["data"]["junk_files"] >= 3
    assert "Bengal_2.jpg: empty file" in err  # the junk list, once, as a plain warning line
    assert len(record["lrs"]) == 10

    argv = ["find", "--data", str(pets_root / "images"), "--label-re", r"^(.+)_\d+", *IMAGES]
    record, _ = run_json(
        [*argv, "--num-it", "10", "--valid-pct", "0.3", "--out", str(tmp_path)], capsys
    )
    assert record["data"]["dataset"] is None and record["data"]["label_re"] == r"^(.+)_\d+"


def test_summary_on_a_multi_label_csv(pets_root, tmp_path, capsys):
    names = sorted(p.name for p in (pets_root / "images").glob("*.jpg"))[:8]
    rows = [f"{name},{'cat fluffy' if index % 2 else 'dog'}" for index, name in enumerate(names)]
    (tmp_path / "labels.csv").write_text("fname,labels\n" + "\n".join(rows) + "\n")
    csv = str(tmp_path / "labels.csv")
    argv = ["summary", "--data", str(pets_root / "images"), "--labels", csv, "--multi-label",
            *IMAGES, "--out", str(tmp_path)]  # fmt: skip
    record, _ = run_json(argv, capsys)
    assert record["data"]["classes"] == 3 and record["data"]["multi_label"] is True


def test_multi_label_without_a_csv_is_refused(pets_root, tmp_path, capsys):
    argv = ["find", "--data", str(pets_root / "images"), "--multi-label", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "--labels" in capsys.readouterr().err


def test_train_with_frozen_epochs_keeps_every_epoch_in_the_csv(fashion, tmp_path, capsys):
    weights = tmp_path / "body.pth"
    torch.save(resnet_small(num_classes=10).state_dict(), weights)
    argv = ["train", *fashion, "--pretrained", str(weights), "--freeze-epochs", "2",
            "--epochs", "1", "--lr", "1e-3", "--out", str(tmp_path / "run")]  # fmt: skip
    run_json(argv, capsys)
    lines = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("stage,epoch") and len(lines) == 1 + 3
    assert [line.split(",")[:2] for line in lines[1:]] == [
        ["frozen", "0"], ["frozen", "1"], ["train", "0"]
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["find", "--device", "mps"], "mps"),
        (["find", "--data", "{images}", "--label-re", "("], "("),
        (["predict", "{model}", "{text}"], "model.lrk"),
        (["find", "--out", "{text}"], "is a file"),
        (["find", "--data", "{images}", "--size", "1"], "--size must be an integer in 8..8192"),
        (["find", "--dataset", "pets", "--label-re", "x"], "Pets names its breeds"),
        # every file left out: the list of why comes before the error line
        (["find", "--data", "{images}", "--label-re", r"^zzz(\d)"], "does not match"),
    ],
)
def test_more_bad_input_exits_2_without_a_traceback(argv, message, pets_root, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    model = tmp_path / "model.lrk"
    model.write_bytes(b"not a model")
    fill = {"{images}": str(pets_root / "images"), "{model}": str(model), "{text}": str(text)}
    code = main([fill.get(arg, arg) for arg in argv])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert message in out + err and "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1 and "error:" in err  # the reason, on one line


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["train", "--size", "0"], "train: error: --size must be an integer in 8..8192, got '0'"),
        (["train", "--valid-pct", "1.5"], "--valid-pct must be a number in (0, 1), got '1.5'"),
        (["find", "--valid-pct", "abc"], "--valid-pct must be a number in (0, 1), got 'abc'"),
        (["find", "--valid-pct", "nan"], "--valid-pct must be a number in (0, 1), got 'nan'"),
        (["find", "--start-lr", "inf"], "--start-lr must be a number in [1e-12, 10000], got 'inf'"),
        (["find", "--div-thresh", "0.5"], "--div-thresh must be a number in (1, 1000], got '0.5'"),
        (["train", "--freeze-epochs", "-1"], "--freeze-epochs must be an integer in 0..10000"),
        (["compare", "--seed", "x"], "--seed must be an integer in 0..4294967295, got 'x'"),
        (["summary", "--workers", "-2"], "--workers must be an integer in 0.."),
        (["find", "--mode", "cubic"], "--mode: invalid choice: 'cubic'"),
        (["find", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["predict"], "lrkit predict: error: the following arguments are required: model"),
        (["launch"], "lrkit: error: COMMAND: invalid choice: 'launch'"),
    ],
)
def test_every_bad_value_is_one_line_naming_the_flag(argv, line, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err  # no usage block
    assert line in err and "usage:" not in err and "_fraction" not in err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["find", "--data", "{images}", "--label-re", "no-group"], "--label-re 'no-group'"),
        (["find", "--data", "{images}", "--label-re", "("], "--label-re '('"),
        (["find", "--dataset", "pets", "--data", "{no_lists}"], "(--valid-pct)"),
    ],
)
def test_library_errors_speak_cli_flags(argv, flag, pets_root, tmp_path, capsys):
    no_lists = tmp_path / "no_lists"
    (no_lists / "images").mkdir(parents=True)
    fill = {"{images}": str(pets_root / "images"), "{no_lists}": str(no_lists)}
    argv = [fill.get(arg, arg) for arg in argv] + [*IMAGES, "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert flag in err, err
    assert "label_re" not in err and "split=" not in err and "valid_pct" not in err


def test_flag_translation_leaves_paths_and_words_alone():
    from lrkit.cli import build_parser
    from lrkit.cli.args import option_names, speak_flags

    flags = option_names(build_parser())
    message = (
        "/data/num_it/x.png: num_it=5 is too few, use num_it >= 10; check label_re, the batch "
        "size and the data, or pass path= to a folder, or multi_label=True; call "
        "load_learner(path, trust_pickle=True) only if you trust it"
    )
    assert speak_flags(message, flags) == (
        "/data/num_it/x.png: --num-it=5 is too few, use --num-it >= 10; check --label-re, the "
        "batch size and the data, or pass --data to a folder, or --multi-label; "
        "pass --trust-pickle only if you trust it"
    )


@pytest.mark.parametrize("command", ["find", "train", "compare"])
@pytest.mark.parametrize("where", ["output name is a folder", "parent is a file", "under /proc"])
def test_unwritable_output_is_refused_before_any_work(command, where, fashion, tmp_path, capsys):
    out = tmp_path / "run"
    taken = {"find": "lr_find.json", "train": "model.lrk", "compare": "report.html"}[command]
    if where == "output name is a folder":
        (out / taken).mkdir(parents=True)
    elif where == "parent is a file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "run"
    else:
        out = "/proc/lrkit-no-such-dir/run"
    argv = [command, *fashion, "--num-it", "10", "--out", str(out)]
    argv += {"train": ["--lr", "1e-3"], "compare": ["--rules", "minimum", "--epochs", "1"]}.get(
        command, []
    )
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err  # the error, and no data loaded before it
    assert str(out) in err and "--out" in err
    if where == "output name is a folder":
        assert taken in err
        assert not (out / "metrics.csv").exists() and not (out / "lr_find.png").exists()


def ctrl_c_at(monkeypatch, batch, how="signal"):
    """Ctrl-C after the command's `batch`-th training batch (counted over all its fits):
    a real SIGINT (what a terminal sends), or a KeyboardInterrupt raised in a callback."""
    import os
    import signal

    import lrkit.cli.setup
    from lrkit.callbacks import ProgressCallback

    class CtrlC(ProgressCallback):
        seen = 0

        def after_batch(self, learn):
            super().after_batch(learn)
            CtrlC.seen += 1
            if CtrlC.seen == batch and how == "signal":
                os.kill(os.getpid(), signal.SIGINT)
            elif CtrlC.seen == batch:
                raise KeyboardInterrupt

    monkeypatch.setattr(lrkit.cli.setup, "ProgressCallback", CtrlC)


def test_ctrl_c_in_the_frozen_stage_stops_the_whole_train(fashion, tmp_path, monkeypatch, capsys):
    ctrl_c_at(monkeypatch, batch=2)  # 4 batches per epoch: epoch 0 of the frozen stage
    out = tmp_path / "run"
    argv = ["train", *fashion, "--freeze-epochs", "2", "--epochs", "1", "--lr", "1e-3",
            "--out", str(out), "--json"]  # fmt: skip
    assert main(argv) == 130
    captured = capsys.readouterr()
    assert (
        captured.err.strip()
        .splitlines()[-1]
        .startswith("lrkit train: interrupted (Ctrl-C) in the frozen stage at epoch 0, batch 1")
    )
    record = json.loads(captured.out)
    saved = json.loads((out / "train.json").read_text())
    assert record["interrupted"] is saved["interrupted"] is True
    assert [stage["stage"] for stage in saved["stages"]] == ["frozen"]  # never unfrozen
    assert ",train," not in (out / "metrics.csv").read_text()
    assert (out / "model.lrk").stat().st_size > 0  # the model as of the interruption


@pytest.mark.parametrize("how", ["signal", "exception"])
def test_ctrl_c_in_train_exits_130_and_keeps_the_epochs_done(
    how, fashion, tmp_path, monkeypatch, capsys
):
    ctrl_c_at(monkeypatch, batch=6, how=how)  # epoch 1 of 2
    out = tmp_path / "run"
    argv = ["train", *fashion, "--epochs", "2", "--lr", "1e-3", "--out", str(out)]
    assert main(argv) == 130
    assert "interrupted (Ctrl-C)" in capsys.readouterr().err.strip().splitlines()[-1]
    rows = (out / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[:2] for row in rows[1:]] == [["train", "0"]]
    assert json.loads((out / "train.json").read_text())["interrupted"] is True
    assert (out / "model.lrk").exists()


def test_ctrl_c_in_compare_stops_after_that_rule(fashion, tmp_path, monkeypatch, capsys):
    ctrl_c_at(monkeypatch, batch=2)
    argv = ["compare", *fashion, "--rules", "minimum,valley", "--epochs", "1",
            "--num-it", "10", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 130
    assert "after 1 of 2 rules" in capsys.readouterr().err.strip().splitlines()[-1]
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["interrupted"] is True and saved["best_rule"] is None
    assert [(row["rule"], row["interrupted"]) for row in saved["rows"]] == [("minimum", True)]


@pytest.mark.parametrize("command", [["train", "--lr", "auto"], ["compare", "--rules", "auto"]])
def test_flat_range_test_stops_training_with_one_line(command, fashion, tmp_path, capsys):
    # lrs of 1e-9..1e-8 cannot move the weights: the curve is flat, auto has no lr to give
    argv = [*command, *fashion, "--start-lr", "1e-9", "--end-lr", "1e-8", "--num-it", "20"]
    code = main([*argv, "--epochs", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "gives no learning rate" in err and "too flat" in err and "--num-it" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "model.lrk").exists() and not (tmp_path / "report.md").exists()
