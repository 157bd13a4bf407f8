"""Fetching files: a cache folder, resumable downloads checked by sha256, tar extraction.

The dataset recipes (`lrkit.data`: Pets, Fashion-MNIST) and the pretrained weights
(`lrkit.models.hub`) go through `download`; it knows files and URLs, nothing of what they hold.
It writes to `<dest>.part`, resumes an interrupted transfer with an HTTP Range request, checks
the size and sha256 before moving the file into place, and turns network failures into one
clear message. Also without a known size or checksum, a body shorter than the server announced
(Content-Length or Content-Range) is never taken as the file, and an HTML page (an error or
login page served with status 200) is refused: a download is always a data file, never a web
page.

Where the file is binary (its name ends in one of BINARY_SUFFIXES: archives, weights, arrays),
more is refused, whatever the status: a text, XML or JSON Content-Type (of the last response,
after redirects), a body that starts with '<' or '{' after an optional byte-order mark and
white space (markup or JSON: an error document), and an empty body. A Content-Encoding other
than identity is refused too (lrkit asks for none and never decodes one). Nothing refused is
left at the destination.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import tarfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20  # bytes read per step while streaming a download
# A destination whose name ends in one of these holds binary data, never text.
BINARY_SUFFIXES = (
    ".gz", ".tgz", ".tar", ".bz2", ".xz", ".zst", ".zip", ".7z",
    ".pth", ".pt", ".ckpt", ".safetensors", ".bin", ".onnx", ".npy", ".npz", ".lrk",
)  # fmt: skip
# Content-Types of documents (pages, error bodies), never of a binary file.
_DOCUMENT_TYPE = re.compile(r"text/.*|application/(xml|json)|[^/]+/[^/]*\+(xml|json)")
_PAGE_TYPE = re.compile(r"text/html|application/xhtml\+xml")
_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


class DownloadError(RuntimeError):
    """A file could not be fetched, resumed, verified or unpacked."""


@dataclass(frozen=True)
class Remote:
    """One file to fetch: where from, its expected sha256 and size in bytes (when known)."""

    url: str
    sha256: str | None = None
    size: int | None = None

    @property
    def filename(self) -> str:
        """The last path component of the URL."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def cache_dir(*parts: str) -> Path:
    """lrkit's cache folder: $LRKIT_CACHE, else $XDG_CACHE_HOME/lrkit, else ~/.cache/lrkit."""
    root = os.environ.get("LRKIT_CACHE")
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "lrkit"
    return base.joinpath(*parts)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks so large archives need little memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def reachable(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection to (host, port) opens within `timeout` seconds, the name lookup
    included (which a socket timeout alone does not bound): a quick test for being offline."""
    opened: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                opened.append(True)
        except OSError:
            pass

    worker = threading.Thread(target=connect, daemon=True)  # left behind if the lookup hangs
    worker.start()
    worker.join(timeout)
    return bool(opened)


def _offline_message(url: str, dest: Path, reason: object) -> str:
    return (
        f"could not download {url} ({reason}). This machine looks offline or the server is "
        f"unreachable. Fetch the file by hand and save it as {dest}, or pass path= to a folder "
        "that already holds the data."
    )


def _progress(total: int | None, done: int, label: str, enabled: bool):
    """A rich progress bar (or a silent stand-in) for one transfer."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=True,
    )
    task = bar.add_task(label, total=total, completed=done)
    return bar, task


def expects_binary(name: str) -> bool:
    """Whether a file of this name holds binary data (its suffix is in BINARY_SUFFIXES)."""
    return name.lower().endswith(BINARY_SUFFIXES)


def _text_start(head: bytes) -> str:
    """The first characters of `head` as text: decoded by its byte-order mark (UTF-8/16/32)
    when it has one, else byte for byte; leading ASCII white space removed."""
    for mark, codec in _BOMS:
        if head.startswith(mark):
            return head[len(mark) :].decode(codec, errors="ignore").lstrip(" \t\r\n\f\v")
    return head.decode("latin-1").lstrip(" \t\r\n\f\v")


def looks_like_html(head: bytes) -> bool:
    """Whether a file's first bytes are an HTML page (`<!DOCTYPE html`, `<html`, `<head`,
    `<body`), after any byte-order mark and white space."""
    return _text_start(head).lower().startswith(("<!doctype html", "<html", "<head", "<body"))


def looks_like_document(head: bytes) -> bool:
    """Whether a file's first bytes are markup or JSON (`<...`, `{...`) after any byte-order
    mark and white space: an error document, where a binary file was expected."""
    return _text_start(head).startswith(("<", "{"))


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _html_message(remote: Remote, dest: Path) -> str:
    return (
        f"{dest.name}: {remote.url} sent an HTML page instead of the file (an error or login "
        "page?); nothing was kept. Check the URL in a browser, or fetch the file by hand and "
        f"save it as {dest}"
    )


def _document_message(remote: Remote, dest: Path, what: str) -> str:
    return (
        f"{dest.name}: {remote.url} sent {what} instead of the file (an error page?); nothing "
        f"was kept. Check the URL in a browser, or fetch the file by hand and save it as {dest}"
    )


def _refuse_response(remote: Remote, dest: Path, headers) -> None:
    """Raise DownloadError when the (last) response's headers say it is not the file."""
    media = _media_type(headers.get("Content-Type", ""))
    if _PAGE_TYPE.fullmatch(media):
        raise DownloadError(_html_message(remote, dest))
    if expects_binary(dest.name) and _DOCUMENT_TYPE.fullmatch(media):
        raise DownloadError(_document_message(remote, dest, f"a document of type {media}"))
    encoding = headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise DownloadError(
            f"{dest.name}: {remote.url} sent the file with Content-Encoding {encoding}, which "
            f"lrkit does not decode; nothing was kept. Fetch the file by hand and save it as {dest}"
        )


def _verify(part: Path, remote: Remote, dest: Path) -> None:
    """Check size and sha256 of a finished transfer, and that it is not an HTML page; a bad
    file is deleted so reruns start clean."""
    with open(part, "rb") as f:
        head = f.read(512)
    size = part.stat().st_size
    if looks_like_html(head):
        part.unlink()
        raise DownloadError(_html_message(remote, dest))
    if expects_binary(dest.name) and looks_like_document(head):
        part.unlink()
        raise DownloadError(_document_message(remote, dest, "markup or JSON"))
    if size == 0 and remote.size != 0:
        part.unlink()
        raise DownloadError(
            f"{dest.name}: {remote.url} sent an empty file; nothing was kept, check the URL"
        )
    if remote.size is not None and size != remote.size:
        part.unlink()
        raise DownloadError(
            f"{dest.name}: got {size} bytes from {remote.url}, expected {remote.size}; "
            "the partial file was removed, run again to download it afresh"
        )
    if remote.sha256 is not None:
        got = sha256_file(part)
        if got != remote.sha256:
            part.unlink()
            raise DownloadError(
                f"{dest.name}: sha256 {got} does not match the expected {remote.sha256} "
                f"(from {remote.url}); the file was removed, run again to download it afresh"
            )


def download(
    remote: Remote, dest: str | Path, progress: bool = True, timeout: float = 30.0
) -> Path:
    """Fetch `remote` to `dest` unless a verified copy is there; resume a `.part` left behind."""
    dest = Path(dest)
    if dest.exists() and (remote.sha256 is None or sha256_file(dest) == remote.sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.exists() else 0
    if remote.size is not None and done > remote.size:
        part.unlink()
        done = 0
    if remote.size is None or done < remote.size:
        _transfer(remote, dest, part, done, progress, timeout)
    _verify(part, remote, dest)
    os.replace(part, dest)
    return dest


def _transfer(
    remote: Remote, dest: Path, part: Path, done: int, progress: bool, timeout: float
) -> None:
    """Stream the (rest of the) file into `part`; keep what arrived when the transfer breaks."""
    headers = {"User-Agent": "lrkit", "Accept-Encoding": "identity"}
    request = urllib.request.Request(remote.url, headers=headers)
    if done:
        request.add_header("Range", f"bytes={done}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and done:  # the part file holds every byte, or is not this file's
            if _range_total(err.headers.get("Content-Range")) == done:
                return
            part.unlink()  # longer than the file, or the server won't say: start afresh
            _transfer(remote, dest, part, 0, progress, timeout)
            return
        raise DownloadError(
            f"could not download {remote.url}: HTTP {err.code} {err.reason}"
        ) from err
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        raise DownloadError(_offline_message(remote.url, dest, err)) from err
    with response:
        _refuse_response(remote, dest, response.headers)  # the .part, if any, is untouched
        resumed = done > 0 and response.status == 206
        if resumed and _range_start(response.headers.get("Content-Range")) != done:
            part.unlink()
            raise DownloadError(
                f"{dest.name}: {remote.url} answered the resume request with another part of "
                "the file; the partial file was removed, run again to download it afresh"
            )
        if not resumed:
            done = 0  # the server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        total = _range_total(response.headers.get("Content-Range")) if resumed else None
        if total is None:
            total = done + int(length) if length is not None else remote.size
        bar, task = _progress(total, done, dest.name, progress)
        received = done
        try:
            with bar, open(part, "ab" if resumed else "wb") as f:
                while block := response.read(CHUNK):
                    f.write(block)
                    received += len(block)
                    bar.update(task, completed=received)
        except (http.client.IncompleteRead, OSError) as err:
            raise DownloadError(
                f"the download of {remote.url} broke off after {received} bytes ({err}); "
                f"{part} keeps them, run again to resume"
            ) from err
    if total is not None and received < total:
        raise DownloadError(
            f"the download of {remote.url} stopped at {received} of {total} bytes; "
            f"{part} keeps them, run again to resume"
        )


def _range_start(header: str | None) -> int | None:
    """First byte of a Content-Range header (`bytes 300-999/1000` -> 300), None if absent."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", header or "")
    return int(match.group(1)) if match else None


def _range_total(header: str | None) -> int | None:
    """The file size a Content-Range header announces (`bytes */1000` -> 1000), None if not."""
    match = re.fullmatch(r"\s*bytes\s+(?:\d+-\d+|\*)/(\d+)\s*", header or "")
    return int(match.group(1)) if match else None


def extract_tar(archive: str | Path, dest: str | Path) -> Path:
    """Unpack a tar(.gz) archive into `dest`; a corrupt archive is removed and named."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # Python < 3.11.4: refuse paths that leave `dest`
                root = dest.resolve()
                for member in tar.getmembers():
                    target = (dest / member.name).resolve()
                    if root not in (target, *target.parents):
                        raise DownloadError(f"{archive}: member {member.name!r} leaves {dest}")
                tar.extractall(dest)
    except (tarfile.TarError, EOFError, OSError) as err:
        archive.unlink(missing_ok=True)
        raise DownloadError(
            f"{archive} is not a readable tar archive ({err}); it was removed, "
            "run again to download it afresh"
        ) from err
    return dest


def fetch_and_extract(
    remotes: list[Remote], dest: str | Path, progress: bool = True, keep_archives: bool = False
) -> Path:
    """Download each archive into `dest`, unpack it there, and mark the folder complete."""
    dest = Path(dest)
    marker = dest / ".lrkit-complete"
    if marker.exists():
        return dest
    for remote in remotes:
        archive = download(remote, dest / remote.filename, progress=progress)
        extract_tar(archive, dest)
        if not keep_archives:
            archive.unlink()
    marker.write_text("\n".join(r.url for r in remotes) + "\n")
    return dest
