"""The full decode check: every file decoded once, as training will decode it, before training.

A file that passes the quick header check can still hold corrupted image data (a JPEG scan or
PNG pixel data overwritten in the middle). `check_files` decodes each file with the training
decode (`check_image(full=True)`), in a thread pool (Pillow's decoders release the GIL), with
a progress bar on stderr for large folders. Results are kept in a small JSON file keyed by
the file's resolved path, size, mtime and ctime (`cache.file_key`) and the decode scale, so a
second run over the same files decodes nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import PIL
from rich.console import Console
from rich.progress import Progress

from lrkit.data.cache import file_key
from lrkit.data.decode import Junk, check_image

VERSION = 1  # of the results file; results from another version or Pillow are not reused
PROGRESS_MIN_FILES = 200  # a progress bar from this many files to decode


def _check_one(task: tuple[Path, int | None]) -> str | None:
    path, min_short = task
    return check_image(path, full=True, min_short=min_short)


def _entry_name(path: Path, min_short: int | None) -> str | None:
    """The results-file key of `path` decoded at `min_short`, or None if it cannot be stat'ed."""
    try:
        return json.dumps([*file_key(path), min_short])
    except OSError:
        return None


def _read_results(path: Path | None) -> dict[str, str | None]:
    """Stored results (key -> reason, None = fine) when readable and from this version."""
    if path is None:
        return {}
    try:
        stored = json.loads(path.read_text())
        if stored["version"] != [VERSION, PIL.__version__]:
            return {}
        return dict(stored["results"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write_results(path: Path, results: dict[str, str | None]) -> None:
    """Replace the results file atomically; a folder that cannot be written only costs time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": [VERSION, PIL.__version__], "results": results}))
        os.replace(tmp, path)
    except OSError:
        pass


def check_files(
    paths: Sequence[Path],
    min_short: int | None,
    num_workers: int = 0,
    results_file: Path | None = None,
    progress: bool | None = None,
) -> list[Junk]:
    """The files among `paths` that fail a full decode at `min_short` (see `load_rgb`), with
    their reasons, in the order of `paths`.

    `num_workers` threads decode (0: in this thread); `results_file` keeps the results between
    runs (None: not kept); `progress` shows a bar on stderr (None: when at least
    PROGRESS_MIN_FILES files are to be decoded).
    """
    stored = _read_results(results_file)
    names = [_entry_name(p, min_short) for p in paths]
    todo = [i for i, name in enumerate(names) if name is None or name not in stored]
    reasons: dict[int, str | None] = {
        i: stored[name] for i, name in enumerate(names) if name is not None and name in stored
    }
    if todo:
        tasks = [(paths[i], min_short) for i in todo]
        show = len(todo) >= PROGRESS_MIN_FILES if progress is None else progress
        with (
            Progress(console=Console(stderr=True), transient=True, disable=not show) as bar,
            ThreadPoolExecutor(max(num_workers, 1)) as pool,
        ):
            job = bar.add_task("checking images", total=len(tasks))
            run = pool.map(_check_one, tasks) if num_workers > 0 else map(_check_one, tasks)
            for i, reason in zip(todo, run, strict=True):
                reasons[i] = reason
                bar.advance(job)
        if results_file is not None:  # only this run's files: entries of old versions go
            fresh = {name: reasons[i] for i, name in enumerate(names) if name is not None}
            _write_results(results_file, fresh)
    return [Junk(paths[i], reasons[i]) for i in range(len(paths)) if reasons[i] is not None]
