"""Where `pretrained="imagenet"` comes from: torchvision's ResNet weight files, cached locally.

torchvision names each file `<arch>-<first 8 hex digits of its sha256>.pth`; the prefix is
checked on every use, so a cut or altered file is never loaded. A file already in torch's hub
cache (from an earlier torchvision download) is used as it is. Without network access the
error says which file to fetch and to pass its path as `pretrained=`.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from lrkit.data.download import DownloadError, Remote, cache_dir, download, sha256_file

BASE_URL = "https://download.pytorch.org/models/"
# torchvision's IMAGENET1K_V1 files ("imagenet") and, where published, IMAGENET1K_V2.
IMAGENET_FILES = {
    "imagenet": {
        "resnet18": "resnet18-f37072fd.pth",
        "resnet34": "resnet34-b627a593.pth",
        "resnet50": "resnet50-0676ba61.pth",
        "resnet101": "resnet101-63fe2227.pth",
        "resnet152": "resnet152-394f9c45.pth",
    },
    "imagenet_v2": {
        "resnet50": "resnet50-11ad3fa6.pth",
        "resnet101": "resnet101-cd907fc2.pth",
        "resnet152": "resnet152-f82ba261.pth",
    },
}
HASH_IN_NAME = re.compile(r"-([0-9a-f]{6,64})\.\w+$")


def hash_prefix(filename: str) -> str | None:
    """The sha256 prefix a torchvision-style file name carries ("resnet18-f37072fd.pth")."""
    match = HASH_IN_NAME.search(filename)
    return match.group(1) if match else None


def check_hash_prefix(path: Path) -> Path:
    """`path` when its sha256 starts with the prefix in its name; else remove it and raise."""
    prefix = hash_prefix(path.name)
    if prefix is None:
        return path
    digest = sha256_file(path)
    if not digest.startswith(prefix):
        path.unlink()
        raise DownloadError(
            f"{path}: its sha256 starts with {digest[: len(prefix)]}, but the file name promises "
            f"{prefix}; the file is cut or altered and was removed, run again to download it"
        )
    return path


def imagenet_url(arch: str, kind: str = "imagenet") -> str:
    """torchvision's download URL for `arch` weights of `kind` ("imagenet", "imagenet_v2")."""
    if kind not in IMAGENET_FILES:
        raise ValueError(f"unknown pretrained weights {kind!r}; use one of {list(IMAGENET_FILES)}")
    files = IMAGENET_FILES[kind]
    if arch not in files:
        raise ValueError(
            f"there are no {kind} weights for {arch!r}; they exist for {sorted(files)}. Pass "
            "pretrained=False to train from scratch, or pretrained=<path to a weights file>"
        )
    return BASE_URL + files[arch]


def imagenet_weights(
    arch: str,
    kind: str = "imagenet",
    cache: str | Path | None = None,
    url: str | None = None,
    progress: bool = True,
) -> Path:
    """A local, hash-checked copy of torchvision's `arch` weights, downloaded when missing."""
    url = url if url is not None else imagenet_url(arch, kind)
    filename = url.rstrip("/").rsplit("/", 1)[-1]
    folder = Path(cache) if cache is not None else cache_dir("weights")
    dest = folder / filename
    hub_copy = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not dest.exists() and cache is None and hub_copy.is_file():
        return check_hash_prefix(hub_copy)
    try:
        download(Remote(url), dest, progress=progress)
    except DownloadError as err:
        raise DownloadError(
            f"could not get the {kind} weights for {arch}: {err}\nWithout network access, "
            f"download {url} elsewhere and pass its path: vision_learner(dls, {arch!r}, "
            f"pretrained='/path/to/{filename}'), or copy it to {dest}."
        ) from err
    return check_hash_prefix(dest)
