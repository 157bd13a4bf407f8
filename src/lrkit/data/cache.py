"""The presize cache: presized uint8 regions of every item in one memory-mapped file.

`index.json` maps each file (by resolved path, byte size, mtime and ctime) to its offset and
shape in `data.u8`, together with the presize settings and a crc32 per entry. Anything that
does not match (other settings, an unreadable index, a short data file, a changed source file)
is decoded again; a crc mismatch on read falls back to decoding the source. The cache is
never trusted blindly, so it is never silently wrong.

A data file truncated by another process while a run has it mapped would kill the run with
SIGBUS on the first read past its new end; its size is therefore checked before mapping and
before every read, and a short file is left alone (the items are decoded from their sources,
with one warning, and the next build rebuilds it).
"""

from __future__ import annotations

import json
import os
import warnings
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from lrkit.data.decode import Junk, load_rgb
from lrkit.data.presize import PresizeConfig, presize_region

VERSION = 4  # 2: presizing resizes with torch instead of Pillow; 3: ctime in the file key;
# 4: fixed per-mode pixel conversions (float images no longer scaled by their maximum)


def file_key(path: Path) -> tuple[str, int, int, int]:
    """(resolved path, size in bytes, mtime in ns, ctime in ns): what identifies a source
    file's content. Copies that keep the mtime (`cp -p`, `rsync -t`, tar) can replace a file
    with one of the same size; the ctime is set by the system on every write and no user tool
    can set it back, so such a replacement is still noticed and decoded again."""
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def _decode_region(task: tuple[Path, PresizeConfig]) -> np.ndarray | str:
    """Worker: the presized region of one file, or the reason it failed."""
    path, cfg = task
    try:
        return np.ascontiguousarray(presize_region(load_rgb(path, cfg.presize), cfg))
    except Exception as err:  # any decoder failure becomes a junk reason, not a crash
        return f"decode failed: {err}"


class PresizeCache:
    """Presized regions stored once on disk and read back through a memory map."""

    def __init__(self, folder: str | Path, cfg: PresizeConfig) -> None:
        self.folder, self.cfg = Path(folder), cfg
        self.index_path, self.data_path = self.folder / "index.json", self.folder / "data.u8"
        self.entries: list[tuple[int, int, int, int]] = []  # (offset, height, width, crc32)
        self._map: np.memmap | None = None
        self._file = None  # the open data file behind _map, for size checks
        self._short = False  # the data file was found truncated: never read it again
        self._checked: set[int] = set()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_map"] = state["_file"] = None  # each worker process maps the file itself
        return state

    def _settings(self) -> dict:
        return {"version": VERSION, **asdict(self.cfg)}

    def _load_index(self) -> dict[str, list[int]]:
        """Entries of a readable index whose settings match and whose data is all there."""
        try:
            index = json.loads(self.index_path.read_text())
            if index["settings"] != self._settings():
                return {}
            if self.data_path.stat().st_size < index["data_bytes"]:
                return {}
            return dict(index["entries"])
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def build(self, paths: Sequence[Path], num_workers: int = 0) -> list[Junk]:
        """Make sure every path has a fresh entry, decoding what is missing; returns failures."""
        self.folder.mkdir(parents=True, exist_ok=True)
        known = self._load_index()
        if not known:
            self.data_path.unlink(missing_ok=True)
        keys = [file_key(p) for p in paths]
        names = [json.dumps(k) for k in keys]
        todo = [i for i, name in enumerate(names) if name not in known]
        junk: list[Junk] = []
        if todo:
            tasks = [(paths[i], self.cfg) for i in todo]
            if num_workers > 0 and len(tasks) > 1:
                # one torch thread per process: the processes already fill the cores
                with ProcessPoolExecutor(
                    num_workers, initializer=torch.set_num_threads, initargs=(1,)
                ) as pool:
                    results = list(pool.map(_decode_region, tasks, chunksize=8))
            else:
                results = [_decode_region(t) for t in tasks]
            with open(self.data_path, "ab") as f:
                for i, region in zip(todo, results, strict=True):
                    if isinstance(region, str):
                        junk.append(Junk(paths[i], region))
                        continue
                    offset = f.tell()
                    f.write(region.tobytes())
                    height, width = region.shape[:2]
                    known[names[i]] = [offset, height, width, zlib.crc32(region)]
                data_bytes = f.tell()
            self._write_index(known, data_bytes)
        bad = {j.path for j in junk}
        self.entries = [
            tuple(known[n]) if p not in bad else (-1, 0, 0, 0)
            for p, n in zip(paths, names, strict=True)
        ]
        self._map, self._file, self._short, self._checked = None, None, False, set()
        return junk

    def _write_index(self, entries: dict[str, list[int]], data_bytes: int) -> None:
        """Replace the index atomically, so a crash never leaves a half-written one."""
        tmp = self.index_path.with_suffix(".tmp")
        payload = {"settings": self._settings(), "data_bytes": data_bytes, "entries": entries}
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, self.index_path)

    def subset(self, keep: Sequence[int]) -> PresizeCache:
        """A view of this built cache holding only the items at `keep`, renumbered from 0."""
        view = PresizeCache(self.folder, self.cfg)
        view.entries = [self.entries[i] for i in keep]
        return view

    def _data_size(self) -> int:
        return os.fstat(self._file.fileno()).st_size

    def _open_map(self) -> bool:
        """Map the data file when it holds every entry; False (and a warning) when it is short."""
        needed = max((o + h * w * 3 for o, h, w, _ in self.entries if o >= 0), default=0)
        try:
            self._file = open(self.data_path, "rb")  # noqa: SIM115 (kept open with the map)
            size = self._data_size()
            if size >= needed and size > 0:
                self._map = np.memmap(self._file, dtype=np.uint8, mode="r", shape=(size,))
                return True
        except OSError:
            pass
        self._found_short()
        return False

    def _found_short(self) -> None:
        """Stop reading a truncated data file: the items are decoded from their sources."""
        self._short, self._map = True, None
        warnings.warn(
            f"the presize cache {self.data_path} is shorter than its index says (truncated "
            "by another process?); decoding the source images instead; the next run rebuilds "
            "the cache",
            stacklevel=4,
        )

    def region(self, i: int) -> np.ndarray | None:
        """The (H, W, 3) uint8 region of item `i`, or None when it is missing, fails its crc or
        the data file has been cut short (see the module notes on SIGBUS)."""
        offset, height, width, crc = self.entries[i]
        if offset < 0 or self._short:
            return None
        if self._map is None and not self._open_map():
            return None
        n = height * width * 3
        if self._data_size() < offset + n:  # reading past the end would raise SIGBUS
            self._found_short()
            return None
        flat = self._map[offset : offset + n]
        if i not in self._checked:
            if len(flat) != n or zlib.crc32(flat) != crc:
                return None
            self._checked.add(i)
        return flat.reshape(height, width, 3)
