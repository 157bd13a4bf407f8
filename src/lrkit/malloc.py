"""glibc's malloc set for training on the CPU: memory freed by one step is kept for the next.

By default glibc hands large blocks straight back to the operating system when they are freed
(blocks above a threshold that starts at 128 KiB are mmap-ed and munmap-ed; the top of the heap
is trimmed past 128 KiB free), so every training step faults its activations' memory in again,
page by page. On the project's 2-core machine that was a third of a range test's time: a held
range test of EfficientNet-Lite0's head (bs 32, 160 px, 55 steps) took 66 s by default and 43 s
with the settings below (`benchmarks/bench_malloc.py` measures it side by side). PyTorch's CPU
performance guide recommends jemalloc or tcmalloc (LD_PRELOAD) for the same reason; these are
glibc's own tunables (mallopt(3)), so nothing needs installing.

The settings are process-wide. The `lrkit` command applies them when it starts; a program that
imports lrkit decides for itself (`lrkit.tune_malloc()`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt(3) parameters (glibc's malloc.h) and the values set.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {
    M_MMAP_THRESHOLD: 32 << 20,  # blocks up to 32 MiB (glibc's largest) come from the heap
    M_TRIM_THRESHOLD: 1 << 30,  # keep up to 1 GiB freed at the heap's top for the next step
    M_TOP_PAD: 256 << 20,  # and grow the heap in steps of 256 MiB
}
# What already chose an allocator or its settings: then tune_malloc leaves it alone.
CHOSEN = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def tune_malloc() -> bool:
    """Keep freed memory for reuse instead of returning it to the OS after every step.

    Returns True when the settings were applied: on Linux with glibc, unless the environment
    already chose (GLIBC_TUNABLES or MALLOC_*_ set, or jemalloc/tcmalloc/mimalloc preloaded),
    and False otherwise (other systems: nothing to do). The process may then hold up to about
    1 GiB more than it uses, freed and ready for reuse. Never raises.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(os.environ.get(name) for name in CHOSEN):
        return False
    preload = os.environ.get("LD_PRELOAD", "")
    if any(name in preload for name in OTHER_ALLOCATORS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return all(libc.mallopt(param, value) == 1 for param, value in SETTINGS.items())
    except (OSError, AttributeError):
        return False
