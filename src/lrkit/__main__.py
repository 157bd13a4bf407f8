"""`python -m lrkit ...` runs the `lrkit` command; `torchrun --nproc-per-node N -m lrkit ...`
runs it once per process, with DDP.

Under torchrun the process group is started here (NCCL with GPUs, gloo otherwise); the library
splits the data and reduces the results. Rank 0 alone speaks and writes: the other ranks' stdout
and stderr go nowhere, and their `--out` folder is a temporary one, removed at the end, so the
results are written once.
"""

from __future__ import annotations

import sys
import tempfile

from lrkit import distributed
from lrkit.cli import main

WRITING_COMMANDS = ("find", "train", "fine-tune", "compare", "demo")  # those with --out


def rank_argv(argv: list[str], folder: str) -> list[str]:
    """`argv` with its output folder replaced by `folder` (added for a writing command)."""
    out: list[str] = []
    replaced, skip = False, False
    for arg in argv:
        if skip:
            out.append(folder)
            skip, replaced = False, True
        elif arg == "--out":
            out.append(arg)
            skip = True
        elif arg.startswith("--out="):
            out.append(f"--out={folder}")
            replaced = True
        else:
            out.append(arg)
    if not replaced and any(arg in WRITING_COMMANDS for arg in argv):
        out += ["--out", folder]
    return out


def run(argv: list[str] | None = None) -> int:
    """The `lrkit` command, rank-aware under torchrun; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with distributed.torchrun_session():
        if distributed.is_main():
            return main(argv)
        with (
            tempfile.TemporaryDirectory(prefix="lrkit-rank") as folder,
            distributed.quiet_unless_main(),
        ):
            return main(rank_argv(argv, folder))


if __name__ == "__main__":
    raise SystemExit(run())
