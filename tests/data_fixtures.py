"""Helpers for the data tests: a local HTTP server with Range support, and small IDX files."""

from __future__ import annotations

import gzip
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


@dataclass
class FileServer:
    """What the test server serves (path -> bytes) and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before hanging up
    ranges: list[str] = field(default_factory=list)  # Range headers received
    types: dict[str, str] = field(default_factory=dict)  # path -> Content-Type sent
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> more headers
    redirects: dict[str, str] = field(default_factory=dict)  # path -> path it sends you to (302)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"


def _handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            key = self.path.lstrip("/")
            if key in state.redirects:
                self.send_response(302)
                self.send_header("Location", "/" + state.redirects[key])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if key not in state.files:
                self.send_error(404)
                return
            body = state.files[key]
            start = 0
            header = self.headers.get("Range")
            if header:
                state.ranges.append(header)
                start = int(header.removeprefix("bytes=").split("-")[0])
                if start >= len(body):  # what an RFC 7233 server says: the size it has
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            if key in state.types:
                self.send_header("Content-Type", state.types[key])
            for name, value in state.headers.get(key, {}).items():
                self.send_header(name, value)
            self.end_headers()
            payload = body[start:]
            cut = state.cut_after.pop(key, None)
            if cut is not None:
                self.wfile.write(payload[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

    return Handler


@contextmanager
def serve(state: FileServer) -> Iterator[FileServer]:
    """Run an HTTP server on 127.0.0.1 (a free port) for the duration of the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def fake_fashion_files(n_train: int = 40, n_test: int = 20, seed: int = 0) -> dict[str, bytes]:
    """Gzipped IDX files named like Fashion-MNIST's, with random images and cycling labels."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        out[f"{split}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(images))
        out[f"{split}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels))
    return out


# ---- a small Oxford-IIIT-Pets-like folder ------------------------------------------------

# (file name, size (w, h), mode) of the good images; cats capitalised, dogs lower case
PETS_IMAGES = [
    ("Abyssinian_1.jpg", (96, 72), "RGB"),
    ("Abyssinian_2.jpg", (60, 90), "RGB"),
    ("Abyssinian_3.jpg", (80, 80), "L"),
    ("British_Shorthair_1.jpg", (100, 64), "RGB"),
    ("British_Shorthair_2.jpg", (72, 96), "CMYK"),
    ("British_Shorthair_3.JPG", (90, 70), "RGB"),
    ("american_pit_bull_terrier_1.jpg", (88, 66), "RGB"),
    ("american_pit_bull_terrier_2.png", (70, 70), "RGBA"),
    ("american_pit_bull_terrier_3.jpg", (64, 96), "L"),
    ("great_pyrenees_1.jpg", (96, 64), "EXIF6"),
    ("great_pyrenees_2.jpeg", (75, 100), "RGB"),
    ("great_pyrenees_3.png", (80, 60), "P"),
]
PETS_JUNK = {
    "Bengal_1.jpg": "truncated",
    "Bengal_2.jpg": "empty",
    "Bengal_3.jpg": "not an image",
    "no_number_here.jpg": "does not match",
}
PETS_CLASSES = ["Abyssinian", "British_Shorthair", "american_pit_bull_terrier", "great_pyrenees"]


def pets_pixels(w: int, h: int, seed: int) -> np.ndarray:
    """A smooth colour gradient with a seeded tint: compresses well and differs per file."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w]
    tint = rng.integers(0, 256, size=3)
    out = np.stack([xs * 255 // max(w - 1, 1), ys * 255 // max(h - 1, 1), np.full_like(xs, 0)], -1)
    return ((out + tint) % 256).astype(np.uint8)


def write_image(path, size: tuple[int, int], mode: str, seed: int = 0) -> None:
    """Save a real image file of the given size and mode (EXIF6: stored rotated, tag 6)."""
    from PIL import Image

    w, h = size
    rgb = Image.fromarray(pets_pixels(w, h, seed), "RGB")
    if mode == "EXIF6":  # stored sideways, upright once rotated 90° clockwise
        stored = rgb.transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6
        stored.save(path, "JPEG", quality=90, exif=exif.tobytes())
        return
    if mode == "RGBA":
        rgba = rgb.convert("RGBA")
        rgba.putalpha(Image.fromarray(np.tile(np.arange(w, dtype=np.uint8) * 3, (h, 1)), "L"))
        rgba.save(path, "PNG")
        return
    image = rgb.convert(mode) if mode != "P" else rgb.quantize(16)
    fmt = "PNG" if str(path).lower().endswith(".png") else "JPEG"
    image.save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))


def make_pets(root) -> dict[str, list[str]]:
    """Build images/ and annotations/ like Oxford-IIIT Pets under `root`; returns the split."""
    from pathlib import Path

    root = Path(root)
    images = root / "images"
    images.mkdir(parents=True)
    for seed, (name, size, mode) in enumerate(PETS_IMAGES):
        write_image(images / name, size, mode, seed)
    good = images / "Abyssinian_1.jpg"
    (images / "Bengal_1.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (images / "Bengal_2.jpg").write_bytes(b"")
    (images / "Bengal_3.jpg").write_text("this is not a JPEG")
    write_image(images / "no_number_here.jpg", (50, 40), "RGB", 99)
    (images / "Abyssinian_1.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    (images / "README.txt").write_text("not an image")
    stems = [Path(name).stem for name, _, _ in PETS_IMAGES]
    split = {"trainval": stems[0::2], "test": stems[1::2]}
    (root / "annotations").mkdir()
    for name, members in split.items():
        lines = [f"{stem} 1 1 1" for stem in members]
        (root / "annotations" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return split
