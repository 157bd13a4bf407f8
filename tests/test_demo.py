"""`lrkit demo`: the bundled data, and the whole quick demo end to end (slow, run by CI)."""

import json

import numpy as np
import pytest

from lrkit.cli import main
from lrkit.demo import bundled_fashion_mnist


def test_bundled_subset_is_real_balanced_fashion_mnist():
    arrays = bundled_fashion_mnist()
    assert arrays["x_train"].shape == (8000, 28, 28) and arrays["x_test"].shape == (2000, 28, 28)
    assert arrays["x_train"].dtype == np.uint8
    assert np.bincount(arrays["y_test"], minlength=10).tolist() == [200] * 10
    assert 0.25 < arrays["x_train"].mean() / 255 < 0.32  # Fashion-MNIST's mean pixel is 0.286


def test_demo_with_a_missing_data_folder_exits_2(tmp_path, capsys):
    assert main(["demo", "--quick", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.ci
def test_quick_demo_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LRKIT_CACHE", str(tmp_path / "cache"))  # pretrain the body afresh
    out = tmp_path / "demo"
    code = main(["demo", "--quick", "--device", "cpu", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["range_test"]["restored"] is True
    assert [row["rule"] for row in summary["comparison"]] == [
        "lowest", "minimum", "steep", "valley", "auto"
    ]  # fmt: skip
    assert {row["procedure"] for row in summary["transfer"]} == {
        "unfreeze at slice(lo, hi)", "unfreeze at one lr"
    }  # fmt: skip
    for row in summary["transfer"]:
        assert row["diverged"] or 0 <= row["error_rate"] <= 1
    for name in ("report.md", "report.html", "lr_find.png", "compare/valid_loss.png"):
        assert (out / name).stat().st_size > 0, name
    assert "Fashion-MNIST from" in captured.err
    assert any((tmp_path / "cache" / "demo").iterdir())  # the pretrained body is cached
