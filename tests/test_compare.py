"""The strategy comparison: one range test, one run per rule from the same start."""

import json
import math

import numpy as np
import pytest
import torch

from learner_fixtures import clone_state, make_learner
from lrkit import LRFindResult, suggest
from lrkit.compare import (
    CompareConfig,
    Comparison,
    RuleRun,
    blew_up,
    compare_rules,
    ended_worse,
    noise_sentence,
    rule_table,
    two_proportion_z,
    untrained_loss,
    write_comparison,
)
from lrkit.range_test_result import UnusableCurveError

torch.set_num_threads(1)


def test_every_rule_starts_from_the_same_state_and_the_learner_is_left_as_it_was():
    learn = make_learner(metrics=[])
    before = clone_state(learn.model)
    alone = compare_rules(learn, CompareConfig(rules=("valley",), epochs=2, num_it=30))
    after_first = clone_state(learn.model)
    config = CompareConfig(rules=("minimum", "valley"), epochs=2, num_it=30)
    minimum, valley = compare_rules(learn, config).runs
    # valley after minimum's run trains exactly as valley alone: nothing leaks between runs
    assert valley.lr == alone.runs[0].lr != minimum.lr
    assert valley.valid_losses == alone.runs[0].valid_losses
    assert valley.train_loss == alone.runs[0].train_loss and len(valley.valid_losses) == 2
    for state in (after_first, clone_state(learn.model)):
        assert all(torch.equal(before[key], state[key]) for key in before)


def test_rules_that_agree_share_one_run():
    learn = make_learner(metrics=[])
    suggest.register_rule("tenth_of_lowest", lambda lrs, losses: suggest.lowest(lrs, losses) / 10)
    try:
        config = CompareConfig(rules=("minimum", "tenth_of_lowest"), num_it=30)
        minimum, twin = compare_rules(learn, config).runs
    finally:
        del suggest.RULES["tenth_of_lowest"]
    assert twin.lr == minimum.lr and twin.valid_losses == minimum.valid_losses
    assert "same lr as minimum" in twin.note


def test_a_curve_auto_cannot_read_stops_the_comparison_before_training():
    learn = make_learner(metrics=[])
    with pytest.raises(UnusableCurveError, match="too flat"):  # this tiny task's 30-step curve
        compare_rules(learn, CompareConfig(rules=("minimum", "auto"), num_it=30))
    assert learn.recorder.log == []


def test_metrics_of_the_last_epoch_are_reported():
    from lrkit import error_rate

    learn = make_learner(metrics=[error_rate])
    comparison = compare_rules(learn, CompareConfig(rules=("minimum",), epochs=1, num_it=20))
    row = comparison.rows()[0]
    assert row["rule"] == "minimum" and 0.0 <= row["error_rate"] <= 1.0
    assert row["valid_loss"] == comparison.runs[0].valid_losses[-1]


def test_bad_config_is_refused_before_training():
    learn = make_learner()
    before = clone_state(learn.model)
    with pytest.raises(ValueError, match="'sharpest'"):
        compare_rules(learn, CompareConfig(rules=("minimum", "sharpest")))
    with pytest.raises(ValueError, match="epochs"):
        compare_rules(learn, CompareConfig(epochs=0))
    assert all(torch.equal(before[k], v) for k, v in clone_state(learn.model).items())


def fake_comparison():
    lrs = 1e-7 * 1e8 ** (np.arange(100) / 100)
    x = np.linspace(0, 1, 100)
    losses = 2.3 - 1.8 / (1 + np.exp(-(x - 0.55) * 14)) + np.exp((x - 0.9) * 25)
    range_test = LRFindResult(lrs, losses, losses, lrs[:, None], 100, 1e-7, 10.0, "exp", "diverged")
    runs = [
        RuleRun("lowest", 0.3, True, None, math.nan, {"error_rate": None}, 1.0, [2.0, math.nan],
                note="the loss became NaN at epoch 1, batch 3"),
        RuleRun("minimum", 0.03, False, 0.4, 0.5, {"error_rate": 0.12}, 1.0, [0.7, 0.5]),
        RuleRun("valley", 0.001, False, 0.9, 0.8, {"error_rate": 0.3}, 1.0, [1.0, 0.8]),
    ]  # fmt: skip
    config = CompareConfig(rules=("lowest", "minimum", "valley"))
    return Comparison(range_test, runs, config, n_valid=1000)  # 0.12 vs 0.30: a clear winner


def test_diverged_runs_are_shown_as_diverged_and_never_best():
    comparison = fake_comparison()
    assert comparison.best().rule == "minimum"
    table = rule_table(comparison)
    assert table[0][:4] == ["rule", "lr", "train_loss", "valid_loss"]
    lowest = next(row for row in table if row[0].startswith("lowest"))
    assert lowest[2:4] == ["diverged", "diverged"]
    assert any(row[0] == "minimum (best)" for row in table)


def test_write_comparison_makes_plots_json_and_both_reports(tmp_path):
    paths = write_comparison(fake_comparison(), tmp_path, extra={"seed": 7})
    for name in ("lr_find_plot", "valid_loss_plot", "json", "report_md", "report_html"):
        assert paths[name].exists() and paths[name].stat().st_size > 0, name
    record = json.loads(paths["json"].read_text())
    assert record["best_rule"] == "minimum" and record["seed"] == 7
    assert [row["rule"] for row in record["rows"]] == ["lowest", "minimum", "valley"]
    assert record["rows"][0]["diverged"] is True
    md = paths["report_md"].read_text()
    assert "| minimum (best) |" in md and "](lr_find.png)" in md
    html = paths["report_html"].read_text()
    assert html.count("data:image/png;base64,") == 2 and "diverged" in html


def test_a_run_that_blows_up_is_marked_diverged():
    from lrkit import suggest

    suggest.register_rule("reckless", lambda lrs, losses: 50.0)
    try:
        learn = make_learner(metrics=[])
        comparison = compare_rules(learn, CompareConfig(rules=("reckless", "minimum"), num_it=20))
    finally:
        del suggest.RULES["reckless"]
    reckless, minimum = comparison.runs
    assert reckless.diverged and reckless.note
    assert not minimum.diverged
    assert comparison.best() is minimum


def test_untrained_loss_is_the_mean_and_spread_of_the_first_tenth():
    losses = [2.0, 2.2, 1.8, 2.0] + [1.0] * 36  # 40 points: the first 4 are the untrained tenth
    level, noise = untrained_loss(losses)
    assert level == pytest.approx(2.0) and noise == pytest.approx(math.sqrt(0.02))
    assert untrained_loss([3.0, math.nan, 1.0]) == (2.0, 1.0)  # non-finite points left out
    assert untrained_loss([]) == (math.inf, 0.0)


def test_only_a_loss_clearly_above_the_untrained_one_counts_as_worse():
    raw = [2.0, 2.2, 1.8, 2.0] + [1.0] * 36  # untrained 2.0 +- 0.14 (batch-to-batch)
    assert not ended_worse(2.1, raw)  # a run that barely moved: above raw[0], inside the noise
    assert ended_worse(2.5, raw)
    assert not ended_worse(1.2, raw)
    assert ended_worse(2.0001, [2.0])  # one point: no noise to allow for


def test_a_difference_within_the_validation_noise_names_no_winner(tmp_path):
    comparison = fake_comparison()
    comparison.runs[2] = RuleRun("valley", 0.001, False, 0.9, 0.8, {"error_rate": 0.135}, 1.0)
    comparison = Comparison(comparison.range_test, comparison.runs, comparison.config, n_valid=74)
    best, verdict = comparison.winner()  # 9 of 74 wrong against 10 of 74: one image apart
    assert best is None and verdict.startswith("No clear winner") and "z-test" in verdict
    assert not any("(best)" in row[0] for row in rule_table(comparison))
    write_comparison(comparison, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "No clear winner" in md and "Best:" not in md
    assert json.loads((tmp_path / "comparison.json").read_text())["best_rule"] is None
    # the same rates on 1000 items are far apart: minimum wins, and the report says so
    clear = Comparison(comparison.range_test, comparison.runs, comparison.config, n_valid=5000)
    assert clear.winner()[0].rule == "minimum" and "Best: minimum" in clear.winner()[1]


def test_range_test_warnings_come_before_the_table_in_the_report(tmp_path):
    comparison = fake_comparison()
    flat = np.full(100, 2.3)
    range_test = LRFindResult(
        comparison.range_test.lrs, flat, flat, comparison.range_test.group_lrs, 100, 1e-7, 10.0,
        "exp", "completed",
    )  # fmt: skip
    write_comparison(Comparison(range_test, comparison.runs, comparison.config, 1000), tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert md.index("too flat") < md.index("| rule |")


def test_a_validation_loss_far_above_the_untrained_loss_is_flagged():
    raw = np.full(100, 3.8)  # the untrained loss, from the range test's first points
    assert "blew up" in blew_up([3.0, 19.0, 4.0], raw)
    assert blew_up([3.0, 2.0], raw) is None and blew_up([None], raw) is None


def test_two_proportion_z_matches_a_hand_computed_value():
    # 10 % vs 20 % of 100 items: se = sqrt((0.09 + 0.16) / 100) = 0.05, z = 0.10 / 0.05
    assert two_proportion_z(0.1, 0.2, 100) == pytest.approx(2.0)
    assert two_proportion_z(0.2, 0.1, 100) == pytest.approx(-2.0)
    assert two_proportion_z(0.0, 0.0, 10) == 0.0 and two_proportion_z(0.0, 1.0, 10) == math.inf
    with pytest.raises(ValueError, match="n=0"):
        two_proportion_z(0.1, 0.2, 0)


def test_noise_sentence_says_whether_a_difference_beats_the_noise():
    # the demo's old transfer result: discriminative 0.1195 vs one rate 0.0980 on 2000 images
    clear = noise_sentence("error rate", "slice", 0.1195, "one lr", 0.0980, 2000)
    assert "more than the validation set's noise" in clear and "one lr is really lower" in clear
    # se = sqrt((0.1195 * 0.8805 + 0.098 * 0.902) / 2000) = 0.00984: z = 0.0215 / 0.00984
    assert "|z| = 2.19" in clear and clear.endswith(".")
    close = noise_sentence("error rate", "slice", 0.1195, "one lr", 0.0980, 74, "photos")
    assert "less than the validation set's noise" in close and "74 validation photos" in close


def test_each_rule_run_prints_a_label_with_the_rule_and_its_lr_above_its_epoch_table():
    from io import StringIO

    from rich.console import Console

    from lrkit import ProgressCallback

    stream = StringIO()
    console = Console(file=stream, width=200)
    learn = make_learner(metrics=[], cbs=[ProgressCallback(console)])
    comparison = compare_rules(learn, CompareConfig(rules=("minimum", "valley"), num_it=20))
    text = stream.getvalue()
    for run in comparison.runs:
        label = f"rule {run.rule}, lr {run.lr:.2e}"
        assert label in text
    first, second = (text.index(f"rule {run.rule}, lr") for run in comparison.runs)
    assert "train_loss" in text[first:second]  # the first run's epoch lines follow its label


def test_a_given_range_test_is_used_instead_of_running_another():
    learn = make_learner(metrics=[])
    found = learn.lr_find(num_it=20, progress=False)
    comparison = compare_rules(learn, CompareConfig(rules=("minimum",)), range_test=found)
    assert comparison.range_test is found
    assert comparison.runs[0].lr == found.suggest("minimum")


def test_the_report_section_ends_with_the_verdict(tmp_path):
    write_comparison(fake_comparison(), tmp_path)
    md = (tmp_path / "report.md").read_text()
    results = md.split("## Settings")[0].strip().splitlines()
    assert results[-1].startswith("Best: minimum") and "z-test" in results[-1]
    settings = md.split("## Settings")[1].strip().splitlines()
    assert settings[-1].endswith(".") and not settings[-1].startswith("{")
