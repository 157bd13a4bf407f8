"""Every numeric option of every command: plain ASCII decimal within its stated range, or one
line naming the flag and the range, exit 2, before any work (no worker process, no file)."""

import pytest

from lrkit.cli import build_parser, main
from lrkit.cli.args import MAX_WORKERS, Range, UsageError


def numeric_options():
    """(command, flag, range) for every option whose type is a Range, from the parser itself."""
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        for action in sub._actions:
            if isinstance(action.type, Range):
                yield name, action.option_strings[-1], action.type


OPTIONS = list(numeric_options())
# Not numbers, or not plain ASCII decimal, or not finite, or far out of every range.
NOT_PLAIN = ["", "1_0", " 5", "5 ", "0x10", "١٢", "nan", "inf", "-inf", "1e400", "9" * 23, "½"]


def bad_values(bounds: Range) -> list[str]:
    below = bounds.lo - 1 if bounds.kind is int else bounds.lo / 2 if bounds.lo > 0 else -1
    above = bounds.hi + 1 if bounds.kind is int else bounds.hi * 2
    values = [*NOT_PLAIN, str(below), str(above)]
    if bounds.kind is int:
        values.append("5.0")
    if bounds.open_lo:
        values.append(str(bounds.lo))
    if bounds.open_hi:
        values.append(str(bounds.hi))
    return values


def test_every_numeric_option_has_a_range():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    typed = {
        (name, action.option_strings[-1])
        for name, sub in commands.items()
        for action in sub._actions
        if action.type is not None and action.type.__class__.__name__ != "type"
    }
    assert typed == {(name, flag) for name, flag, _ in OPTIONS}
    flags = {flag for _, flag, _ in OPTIONS}
    for flag in ("--workers", "--seed", "--size", "--presize", "--bs", "--epochs", "--num-it",
                 "--repeats", "--freeze-epochs", "--start-lr", "--end-lr", "--lr-mult",
                 "--valid-pct", "--div-thresh", "--train-subset", "--valid-subset"):  # fmt: skip
        assert flag in flags


@pytest.mark.parametrize(("command", "flag", "bounds"), OPTIONS, ids=lambda x: str(x))
def test_bad_numbers_name_the_flag_and_range(command, flag, bounds, tmp_path, capsys):
    for value in bad_values(bounds):
        out_dir = tmp_path / "out"
        code = main([command, f"{flag}={value}", "--out", str(out_dir), "--device", "cpu"])
        out, err = capsys.readouterr()
        assert code == 2, (flag, value, err)
        assert out == "" and len(err.strip().splitlines()) == 1, (flag, value, err)
        assert f"{flag} must be {bounds.describe()}, got {value!r}" in err, (value, err)
        assert not out_dir.exists()  # refused before any work


@pytest.mark.parametrize(("command", "flag", "bounds"), OPTIONS, ids=lambda x: str(x))
def test_good_numbers_at_the_edges_are_taken(command, flag, bounds):
    parser = build_parser()
    dest = flag[2:].replace("-", "_")
    more = ["model.lrk", "a.png"] if command == "predict" else []
    step = (bounds.hi - bounds.lo) / 1000
    edges = [bounds.lo + step if bounds.open_lo else bounds.lo]
    edges += [bounds.hi - step if bounds.open_hi else bounds.hi]
    for value in edges:
        args = parser.parse_args([command, flag, str(value), *more])
        assert getattr(args, dest) == bounds.kind(str(value))
    if bounds.kind is float:
        middle = f"{(bounds.lo + bounds.hi) / 2:e}"  # exponent syntax: 5.000000e-01
        assert getattr(parser.parse_args([command, flag, middle, *more]), dest) == float(middle)


def test_the_ranges_are_sane():
    parser = build_parser()
    with pytest.raises(UsageError, match="--workers must be an integer in 0"):
        parser.parse_args(["find", "--workers", str(MAX_WORKERS + 1)])
    assert MAX_WORKERS <= 4 * 1024
    assert parser.parse_args(["find", "--seed", str(2**32 - 1)]).seed == 2**32 - 1


@pytest.mark.parametrize(
    "lr", ["1_0", "nan", "inf", "1e400", "-1", "0", "1e-3:nan", "١", " 1e-3", "1e-3:1e-2:1", "1e9"]
)
def test_bad_lr_numbers_are_one_line(lr, tmp_path, capsys):
    for command in ("train", "fine-tune"):
        code = main([command, f"--lr={lr}", "--out", str(tmp_path / "o"), "--device", "cpu"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and "--lr" in err, (lr, err)
        assert "Traceback" not in err
