"""`lrkit summary`: the learner's modules, layer groups and frozen state."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from lrkit.cli.args import (
    add_command as add_command_to,
)
from lrkit.cli.args import (
    add_data,
    add_model,
)
from lrkit.cli.results import (
    data_summary,
)
from lrkit.cli.setup import (
    setup,
)


def add_command(commands: argparse._SubParsersAction) -> None:
    summary = add_command_to(commands, "summary", "layer groups, frozen state, parameter counts")
    add_data(summary)
    add_model(summary)
    summary.set_defaults(run=run_summary)


def run_summary(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """`lrkit summary`: the learner's modules, layer groups and frozen state."""
    options, dls, learn = setup(args, console)
    text = learn.summary()
    console.print(text, markup=False, highlight=False)
    trainable = sum(p.numel() for p in learn.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in learn.model.parameters())
    return {
        "summary": text,
        "layer_groups": learn.n_groups,
        "frozen_idx": learn.frozen_idx,
        "parameters": total,
        "trainable_parameters": trainable,
        "data": data_summary(options, dls),
    }
