"""Reading IDX files (the MNIST / Fashion-MNIST format), plain or gzipped, into numpy arrays.

Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
dimension, then the values row-major, big-endian.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

# IDX type code -> numpy dtype (big-endian where it matters)
IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IdxError(ValueError):
    """An IDX file is truncated, corrupt or not IDX at all."""


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one IDX file; `name` goes into the error messages."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxError(f"{name}: not an IDX file (bad magic number); delete it and fetch again")
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        raise IdxError(f"{name}: unknown IDX type code 0x{code:02x}; delete it and fetch again")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{name}: truncated IDX header; delete it and fetch again")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise IdxError(
            f"{name}: holds {len(data)} bytes but its header {shape} needs {expected}; "
            "the file is truncated or corrupt, delete it and fetch again"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (`.gz` or plain) into a native-endian numpy array."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as err:
        raise IdxError(
            f"{path}: cannot be read or un-gzipped ({err}); delete it and fetch again"
        ) from err
    return parse_idx(data, str(path))
