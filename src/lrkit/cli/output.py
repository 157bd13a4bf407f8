"""What the commands print: human lines through a console, machine lines untouched.

Human lines (summaries, tables, warnings) go through a rich Console. In a terminal it fits the
terminal's width (a table squeezes to fit; a long line wraps as the terminal would). When the
stream is a pipe or a file, no line is ever broken: a sentence stays on one line for `grep`,
`less` and log readers to wrap as they like, whatever COLUMNS says, and tables are drawn at
their natural width up to LOG_WIDTH. Machine-read lines (`--json`, `lrkit predict`'s
`path<TAB>label` lines) are written with `machine_line`, never through the console.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections import defaultdict
from typing import Any

import torch
from rich.console import Console

from lrkit.schedule import LrSpec, lr_text

LOG_WIDTH = 200  # columns a table may take in a pipe or a log file (text is never wrapped)
SHOWN_CLASSES = 10  # class names listed after loading; the rest are counted
MIN_CLASS_ITEMS = 2  # a class with fewer items cannot be both trained on and validated
HEARTBEAT_S = 5.0  # seconds between "still running" lines of a long step in a log


def make_console(stderr: bool = False) -> Console:
    """The console for human lines (on stderr when stdout carries --json): the terminal's
    width in a terminal; in a pipe or a file, lines are never wrapped (see the module)."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(file=stream, highlight=False)
    return Console(file=stream, highlight=False, width=LOG_WIDTH, soft_wrap=True)


def machine_line(text: str) -> None:
    """One line for programs to read (a prediction, JSON) on stdout, never wrapped."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class Heartbeat:
    """Where no progress bar is drawn (a pipe, a log), a line every HEARTBEAT_S seconds while a
    long step runs: `with Heartbeat(console, "range test before the frozen stage"): ...`.
    In a terminal it does nothing (the step draws its own bar). `stop()` may come early."""

    def __init__(self, console: Console, what: str) -> None:
        self.console, self.what = console, what
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Heartbeat:
        if not self.console.is_terminal and self._thread is None:
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> None:
        began = time.perf_counter()
        while not self._stop.wait(HEARTBEAT_S):
            seconds = time.perf_counter() - began
            self.console.print(f"{self.what}: running, {seconds:.0f} s", markup=False)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def describe_lr(lr: LrSpec) -> str | float:
    """A learning rate for a JSON record: a number as it is, anything else as `lr_text`."""
    return lr if isinstance(lr, float) else lr_text(lr)


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 file', '2 files'; `many` for a word whose plural is not word + 's' (class)."""
    return f"{n} {word}" if n == 1 else f"{n} {many or word + 's'}"


# ------------------------------------------------------------------------------ after loading


def _targets(dataset: Any) -> torch.Tensor | None:
    """A dataset's targets: class indices (N,) or multi-hot (N, C); None when it keeps none."""
    values = getattr(dataset, "targets", None)
    if values is None:
        values = getattr(dataset, "labels", None)
    return None if values is None else torch.as_tensor(values)


def class_counts(dls: Any) -> dict[str, int] | None:
    """Items per class name over the train and valid sets (multi-label: items carrying the
    label), in vocab order; None when the loaders do not expose their targets."""
    if not dls.vocab:
        return None
    counts = torch.zeros(len(dls.vocab), dtype=torch.long)
    for loader in (dls.train, dls.valid):
        targets = _targets(getattr(loader, "dataset", None)) if loader is not None else None
        if targets is None:
            return None
        if targets.ndim == 2:  # multi-hot (N, C)
            counts += (targets > 0.5).sum(dim=0).long()
        else:  # class indices (N,)
            counts += torch.bincount(targets.long(), minlength=len(dls.vocab))
    return {name: int(n) for name, n in zip(dls.vocab, counts.tolist(), strict=True)}


def class_lines(counts: dict[str, int]) -> tuple[list[str], list[str]]:
    """(the summary lines, the warnings) for a class count: how many classes, the first
    SHOWN_CLASSES with their counts, the smallest class; a warning per class under
    MIN_CLASS_ITEMS items."""
    names = list(counts)
    shown = ", ".join(f"{name} ({counts[name]})" for name in names[:SHOWN_CLASSES])
    more = f", ... and {len(names) - SHOWN_CLASSES} more" if len(names) > SHOWN_CLASSES else ""
    smallest = min(names, key=lambda name: counts[name])
    lines = [
        f"{plural(len(names), 'class', 'classes')} (items): {shown}{more}",
        f"smallest class: {smallest} ({plural(counts[smallest], 'item')})",
    ]
    few = [name for name in names if counts[name] < MIN_CLASS_ITEMS]
    warnings = [
        f"class {name} has {plural(counts[name], 'item')}; a class needs at least "
        f"{MIN_CLASS_ITEMS} (one to train on, one to validate): check the labels"
        for name in few
    ]
    return lines, warnings


_LEFT_OUT = re.compile(r"^\s+(.+?): (.+)$")  # junk_report's "  path: reason" lines


def left_out_lines(message: str, flags: dict[str, str] | None = None) -> list[str]:
    """A left-out-files warning as one line per reason: the count, the reason, an example
    file (not one line per file). Library argument names become flags through `flags`
    (e.g. {"label_re": "--label-re"}). A message of another shape is returned as it is."""
    lines = message.splitlines()
    by_reason: dict[str, list[str]] = defaultdict(list)
    for line in lines[1:]:
        match = _LEFT_OUT.match(line)
        if match is None:
            return [message]
        by_reason[match.group(2)].append(match.group(1))
    if not by_reason:
        return [message]
    out = []
    for reason, paths in by_reason.items():
        for name, flag in (flags or {}).items():
            reason = re.sub(rf"\b{re.escape(name)}\b", flag, reason)
        if len(paths) == 1:
            out.append(f"left out {paths[0]}: {reason}")
        else:
            out.append(f"{len(paths)} files left out: {reason} (e.g. {paths[0]})")
    return out
