"""tune_malloc: memory freed by one step is kept for the next (glibc), and `lrkit` applies it."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

import lrkit
import lrkit.cli
from lrkit.cli import main
from lrkit.malloc import tune_malloc

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# In a fresh process: the resident memory a freed 24 MiB block leaves behind, in MiB.
KEPT_AFTER_FREE = """
import os, sys
from lrkit.malloc import tune_malloc
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
if sys.argv[1] == "tuned":
    assert tune_malloc()
before = resident()
block = bytearray(24 << 20)  # written through (zeroed), so its pages are resident
del block
print((resident() - before) / 2**20)
"""


def kept_after_free(mode: str) -> float:
    env = {"PATH": "/usr/bin:/bin"}  # no GLIBC_TUNABLES, MALLOC_*_ or LD_PRELOAD from outside
    done = subprocess.run(
        [sys.executable, "-c", KEPT_AFTER_FREE, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**env, "PYTHONPATH": ":".join(sys.path)},
    )
    return float(done.stdout)


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc tunables: Linux with glibc only")
def test_freed_memory_is_kept_for_reuse_instead_of_given_back():
    assert kept_after_free("default") < 4  # glibc: mmap-ed, and unmapped when freed
    assert kept_after_free("tuned") > 20  # kept in the heap for the next step


@pytest.mark.parametrize(
    ("name", "value"),
    [("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0"), ("MALLOC_TRIM_THRESHOLD_", "0"),
     ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")],
)  # fmt: skip
def test_an_allocator_chosen_in_the_environment_is_left_alone(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert tune_malloc() is False


def test_the_lrkit_command_applies_it_before_any_work(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(lrkit.cli, "tune_malloc", lambda: calls.append(1) or True)
    assert main(["find", "--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert calls == [1]
    assert lrkit.tune_malloc is tune_malloc  # public for programs that import lrkit
