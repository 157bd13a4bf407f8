"""`lrkit` output in a pipe or a log: no line broken (a sentence stays on one line, whatever
COLUMNS says), the classes listed after loading, left-out files summarised, one exit code for
Ctrl-C, one-line refusals."""

import os
import subprocess
import sys

import pytest
import torch

from data_fixtures import make_pets
from lrkit.cli import main

torch.set_num_threads(1)

IMAGES = ["--size", "32", "--presize", "40", "--bs", "4", "--workers", "0", "--arch", "resnet18",
          "--pretrained", "none", "--device", "cpu"]  # fmt: skip


@pytest.fixture
def pets_images(tmp_path):
    make_pets(tmp_path / "pets")
    return tmp_path / "pets" / "images"


def test_the_classes_are_listed_with_their_counts_after_loading(pets_images, tmp_path, capsys):
    argv = ["summary", "--data", str(pets_images), "--label-re", r"^(.+)_\d+", *IMAGES]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 0
    lines = capsys.readouterr().out.splitlines()  # capsys is not a terminal: nothing wrapped
    assert (
        "4 classes (items): Abyssinian (3), British_Shorthair (3), american_pit_bull_terrier (3),"
        " great_pyrenees (3)" in lines
    )
    assert "smallest class: Abyssinian (3 items)" in lines


def test_a_class_with_one_item_is_warned_about(pets_images, tmp_path, capsys):
    folder = tmp_path / "two"
    for name, files in {"lonely": ["Abyssinian_1.jpg"], "many": ["Abyssinian_2.jpg"] * 4}.items():
        (folder / name).mkdir(parents=True)
        for index, file in enumerate(files):
            (folder / name / f"{index}.jpg").write_bytes((pets_images / file).read_bytes())
    assert main(["summary", "--data", str(folder), *IMAGES, "--out", str(tmp_path / "o")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "2 classes (items): lonely (1), many (4)" in lines
    assert any(
        line.startswith("warning: class lonely has 1 item; a class needs at least 2")
        for line in lines
    )


def test_a_label_re_that_matches_nothing_is_one_line_not_one_per_file(
    pets_images, tmp_path, capsys
):
    argv = ["find", "--data", str(pets_images), "--label-re", r"^zzz(\d)", *IMAGES]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    out = capsys.readouterr().out
    mismatch = [line for line in out.splitlines() if "does not match" in line]
    assert len(mismatch) == 1, out
    assert "13 files left out: file name does not match --label-re" in mismatch[0]
    assert r"'^zzz(\d)'" in mismatch[0]  # the pattern as typed, its backslash not doubled
    assert "e.g. " in mismatch[0]


def test_no_line_is_broken_in_a_pipe_whatever_columns_says(pets_images, tmp_path):
    env = {**os.environ, "COLUMNS": "40", "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = ["find", "--data", str(pets_images), "--label-re", r"^zzz(\d)", *IMAGES]
    done = subprocess.run(
        [sys.executable, "-m", "lrkit", *argv, "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stdout.splitlines()
    assert lines and all(line.startswith("warning: ") for line in lines), lines  # no fragments
    mismatch = next(line for line in lines if "does not match" in line)
    assert mismatch.endswith("(e.g. Abyssinian_1.jpg)") and len(mismatch) > 80


@pytest.mark.parametrize(
    ("command", "where"),
    [
        (["find"], "lrkit.cli.setup.load_data"),
        (["train"], "lrkit.cli.setup.load_data"),
        (["fine-tune"], "lrkit.cli.setup.load_data"),
        (["compare"], "lrkit.cli.setup.load_data"),
        (["summary"], "lrkit.cli.setup.load_data"),
        (["predict", "{model}", "a.png"], "lrkit.cli.predict.load_learner"),
        (["demo", "--quick"], "lrkit.cli.compare_demo.run_demo"),
    ],
)
def test_ctrl_c_exits_130_in_every_command(command, where, tmp_path, monkeypatch, capsys):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(where, ctrl_c)
    model = tmp_path / "model.lrk"
    model.write_bytes(b"x")
    argv = [str(model) if arg == "{model}" else arg for arg in command]
    assert main([*argv, "--device", "cpu", "--out", str(tmp_path / "o")]) == 130
    assert "interrupted (Ctrl-C)" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_predict_refuses_cuda_without_a_gpu_like_the_other_commands(tmp_path, capsys):
    model = tmp_path / "model.lrk"
    model.write_bytes(b"not read: the device is checked first")
    for argv in (["predict", str(model), "a.png"], ["find"]):
        assert main([*argv, "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert err[0].endswith("--device cuda was asked for, but torch sees no CUDA GPU here")


def test_left_out_files_are_grouped_by_reason_with_flags_spoken():
    from lrkit.cli.output import left_out_lines

    reason = "no match for label_re 'x'"
    lines = [f"  a_1.jpg: {reason}", f"  b_2.jpg: {reason}", f"  c_3.jpg: {reason}"]
    message = "\n".join(["4 file(s) left out:", *lines, "  d.jpg: empty file"])
    assert left_out_lines(message, {"label_re": "--label-re"}) == [
        "3 files left out: no match for --label-re 'x' (e.g. a_1.jpg)",
        "left out d.jpg: empty file",
    ]
    assert left_out_lines("something else entirely") == ["something else entirely"]
