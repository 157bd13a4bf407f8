"""Reading `.safetensors` weight files (timm's and Hugging Face's format) with torch alone.

The format is an 8-byte little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range, then the raw bytes. Nothing in the file is executed, so it is as
safe to read as `torch.load(weights_only=True)`, and lrkit needs no `safetensors` package.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import torch

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
MAX_HEADER = 100 * 2**20  # bytes; a longer header means the file is not safetensors


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a `.safetensors` file, by name, as CPU tensors that own their memory."""
    path = Path(path)
    if sys.byteorder != "little":
        raise ValueError(f"{path}: reading safetensors needs a little-endian machine")
    data = path.read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path} is not a safetensors file: only {len(data)} bytes")
    (n_header,) = struct.unpack("<Q", data[:8])
    if n_header > min(MAX_HEADER, len(data) - 8):
        raise ValueError(
            f"{path} is not a safetensors file: its first 8 bytes announce a {n_header}-byte header"
        )
    try:
        header = json.loads(data[8 : 8 + n_header])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path} is not a safetensors file: its header is not JSON ({err})"
        ) from err
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file: its header is not a JSON object")
    body = memoryview(data)[8 + n_header :]
    tensors: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        tensors[name] = _tensor(path, name, info, body)
    return tensors


def _tensor(path: Path, name: str, info: object, body: memoryview) -> torch.Tensor:
    """One tensor from its header entry {"dtype", "shape", "data_offsets"}."""
    try:
        dtype = DTYPES[info["dtype"]]  # type: ignore[index]
        shape = [int(d) for d in info["shape"]]  # type: ignore[index]
        start, end = (int(o) for o in info["data_offsets"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{path}: tensor {name!r} has an unreadable header entry {info!r} (dtype must be "
            f"one of {sorted(DTYPES)})"
        ) from err
    numel = 1
    for d in shape:
        numel *= d
    itemsize = torch.empty((), dtype=dtype).element_size()
    if not 0 <= start <= end <= len(body) or end - start != numel * itemsize:
        raise ValueError(
            f"{path}: tensor {name!r} of shape {shape} and dtype {info['dtype']} claims bytes "  # type: ignore[index]
            f"{start}..{end} of a {len(body)}-byte data section; the file is cut or corrupt"
        )
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    raw = bytearray(body[start:end])  # a private copy: the tensor owns its memory
    return torch.frombuffer(raw, dtype=dtype).reshape(shape)
