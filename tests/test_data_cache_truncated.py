"""A presize cache file truncated by another process while a run has it mapped: the run gets
a warning and the right pixels (decoded from the sources), never a SIGBUS; the next build
rebuilds the cache. The reads run in a subprocess, where a SIGBUS would show as a negative
return code instead of killing pytest."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lrkit
from data_fixtures import write_image

SCRIPT = textwrap.dedent(
    """
    import os, sys, warnings
    from pathlib import Path
    import numpy as np, torch
    from lrkit.data.cache import PresizeCache
    from lrkit.data.decode import load_rgb
    from lrkit.data.loader import ImageItems
    from lrkit.data.presize import PresizeConfig, presize_image

    folder, when = Path(sys.argv[1]), sys.argv[2]
    cfg = PresizeConfig(presize=64)
    paths = sorted(folder.glob("*.jpg"))
    store = PresizeCache(folder / "cache", cfg)
    assert store.build(paths) == []
    items = ImageItems(paths, torch.zeros(len(paths)), cfg, store)
    if when == "mapped":
        items.pixels(0)  # the data file is mapped now
    os.truncate(store.data_path, 1000)  # another process cuts it short
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, path in enumerate(paths):
            direct = presize_image(load_rgb(path, cfg.presize), cfg, 0.5, 0.5)
            assert np.array_equal(items.pixels(i), direct), path
    print(len(caught), caught[0].message if caught else "")
    rebuilt = PresizeCache(folder / "cache", cfg)
    assert rebuilt.build(paths) == []
    assert rebuilt.region(len(paths) - 1) is not None
    print("rebuilt", os.path.getsize(store.data_path) > 1000)
    """
)


def run_reader(folder: Path, when: str) -> subprocess.CompletedProcess:
    src = str(Path(lrkit.__file__).parents[1])  # the lrkit under test, and the test helpers
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, *sys.path])}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder), when],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cache_truncated_while_mapped_is_noticed_not_a_crash(tmp_path: Path) -> None:
    for k in range(4):
        write_image(tmp_path / f"cat_{k}.jpg", (200, 150), "RGB", seed=k)
    for when in ("mapped", "before mapping"):
        done = run_reader(tmp_path, when)
        assert done.returncode == 0, (when, done.returncode, done.stderr[-2000:])
        count, message = done.stdout.splitlines()[0].split(" ", 1)
        assert count == "1"  # one warning, naming the file
        assert f"{tmp_path / 'cache' / 'data.u8'} is shorter than its index says" in message
        assert done.stdout.splitlines()[1] == "rebuilt True"
