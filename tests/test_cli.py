"""The `lrkit` command, called in-process through `lrkit.cli.main(argv)`."""

import json

import pytest

from data_fixtures import fake_fashion_files
from lrkit import LRFindResult
from lrkit.cli import main


@pytest.fixture
def fashion_dir(tmp_path):
    folder = tmp_path / "fashion"
    folder.mkdir()
    for name, content in fake_fashion_files(n_train=200, n_test=40).items():
        (folder / name).write_bytes(content)
    return folder


def test_find_writes_plot_and_json_and_prints_json(fashion_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        ["find", "--data-path", str(fashion_dir), "--bs", "32", "--num-it", "30",
         "--out", str(out), "--json", "--device", "cpu"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = json.loads(captured.out)  # stdout holds exactly one JSON object
    assert set(record["suggestions"]) == {"lowest", "minimum", "steep", "valley", "slide", "auto"}
    assert len(record["lrs"]) == len(record["losses"]) > 0
    assert record["data"]["n_train"] == 200 and record["data"]["bs"] == 32
    assert "torch" in record["versions"]
    assert "suggestions" in captured.err  # the human table went to stderr
    assert (out / "lr_find.png").stat().st_size > 1000
    saved = LRFindResult.load(out / "lr_find.json")
    assert saved.suggestions["minimum"] == pytest.approx(record["suggestions"]["minimum"])


def test_find_human_output_is_a_table(fashion_dir, tmp_path, capsys):
    code = main(["find", "--data-path", str(fashion_dir), "--num-it", "20", "--bs", "50",
                 "--out", str(tmp_path), "--device", "cpu"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0
    for name in ("lowest", "minimum", "steep", "valley", "auto (= minimum)"):
        assert name in captured.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["find", "--num-it", "5"], "num_it=5"),
        (["find", "--start-lr", "1", "--end-lr", "0.5"], "below end_lr"),
        (["find", "--arch", "vgg99"], "vgg99"),
        (["find", "--bs", "0"], "positive integer"),
        (["find", "--device", "cuda:7"], "cuda"),
        (["find", "--data-path", "/no/such/folder"], "/no/such/folder"),
        (["launch"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, message, fashion_dir, tmp_path, capsys):
    if "--data-path" not in argv and argv[0] == "find":
        argv = [*argv, "--data-path", str(fashion_dir)]
    code = main([*argv, "--out", str(tmp_path)] if argv[0] == "find" else argv)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_help_exits_0(capsys):
    assert main(["find", "--help"]) == 0
    assert "--num-it" in capsys.readouterr().out


def test_find_with_repeats_reports_median_and_spread(fashion_dir, tmp_path, capsys):
    argv = ["find", "--data-path", str(fashion_dir), "--num-it", "20", "--bs", "50"]
    code = main([*argv, "--repeats", "2", "--out", str(tmp_path), "--json", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = json.loads(captured.out)
    assert len(record["runs"]) == 2
    assert set(record["spread_decades"]) == set(record["suggestions"])
    assert "spread (decades)" in captured.err
