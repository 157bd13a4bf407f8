"""`python -m lrkit` is the `lrkit` command (torchrun starts programs with `-m`)."""

import os
import subprocess
import sys
from pathlib import Path

import lrkit

SRC = str(Path(lrkit.__file__).resolve().parents[1])


def run_module(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "lrkit", *argv], capture_output=True, text=True, env=env, timeout=120
    )


def test_python_dash_m_lrkit_prints_the_help():
    done = run_module("--help")
    assert done.returncode == 0, done.stderr
    assert "usage: lrkit" in done.stdout and "fine-tune" in done.stdout


def test_python_dash_m_lrkit_passes_the_exit_code_on():
    done = run_module("find", "--size", "0")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "lrkit find: error: --size must be an integer in 8..8192, got '0' (see lrkit find --help)"
    ]
