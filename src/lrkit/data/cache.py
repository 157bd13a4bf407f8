"""The presize cache: presized uint8 regions of every item in one memory-mapped file.

`index.json` maps each file (by resolved path, byte size, mtime and ctime) to its offset and
shape in `data.u8`, together with the presize settings and a crc32 per entry. Anything that
does not match (other settings, an unreadable index, a short data file, a changed source file)
is decoded again; a crc mismatch on read falls back to decoding the source. The cache is
never trusted blindly, so it is never silently wrong.
"""

from __future__ import annotations

import json
import os
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
        self._checked: set[int] = set()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_map"] = None  # each worker process maps the file itself
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
        self._map, self._checked = None, set()
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

    def region(self, i: int) -> np.ndarray | None:
        """The (H, W, 3) uint8 region of item `i`, or None when it is missing or fails its crc."""
        offset, height, width, crc = self.entries[i]
        if offset < 0:
            return None
        if self._map is None:
            self._map = np.memmap(self.data_path, dtype=np.uint8, mode="r")
        n = height * width * 3
        flat = self._map[offset : offset + n]
        if i not in self._checked:
            if len(flat) != n or zlib.crc32(flat) != crc:
                return None
            self._checked.add(i)
        return flat.reshape(height, width, 3)
