"""The console the commands print to: rich on a terminal, plain hard-wrapped lines in a log."""

from __future__ import annotations

from rich.console import Console

from lrkit.schedule import LrSpec


def make_console(stderr: bool = False) -> Console:
    """The console for human lines: on stderr when stdout carries --json."""
    return Console(stderr=stderr, highlight=False)


def describe_lr(lr: LrSpec) -> str | float:
    """A learning rate for people: 3e-3, or slice(1.00e-05, 1.00e-03)."""
    if isinstance(lr, slice):
        return f"slice({lr.start:.2e}, {lr.stop:.2e})"
    return lr if isinstance(lr, float) else str(lr)
