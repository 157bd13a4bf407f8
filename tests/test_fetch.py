"""Downloads against a local HTTP server: success, resume, checksum mismatch, corrupt archive."""

from __future__ import annotations

import gzip
import hashlib
import io
import socket
import tarfile
from pathlib import Path

import pytest

from data_fixtures import FileServer, serve
from lrkit.fetch import (
    DownloadError,
    Remote,
    cache_dir,
    download,
    expects_binary,
    extract_tar,
    fetch_and_extract,
)

PAYLOAD = bytes(range(256)) * 4000  # ~1 MB, so the transfer spans several chunks


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_download_verifies_and_moves_into_place(tmp_path: Path) -> None:
    with serve(FileServer(files={"a.bin": PAYLOAD})) as server:
        remote = Remote(server.url("a.bin"), sha(PAYLOAD), len(PAYLOAD))
        dest = download(remote, tmp_path / "a.bin", progress=False)
        assert dest.read_bytes() == PAYLOAD
        assert not (tmp_path / "a.bin.part").exists()
        # a verified copy is not fetched again
        server.files.clear()
        assert download(remote, dest, progress=False) == dest


def test_interrupted_transfer_resumes_with_range(tmp_path: Path) -> None:
    state = FileServer(files={"a.bin": PAYLOAD}, cut_after={"a.bin": 300_000})
    with serve(state) as server:
        remote = Remote(server.url("a.bin"), sha(PAYLOAD), len(PAYLOAD))
        with pytest.raises(DownloadError, match="resume"):
            download(remote, tmp_path / "a.bin", progress=False)
        part = tmp_path / "a.bin.part"
        assert part.stat().st_size == 300_000
        dest = download(remote, tmp_path / "a.bin", progress=False)
    assert server.ranges == ["bytes=300000-"]
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_removes_the_file(tmp_path: Path) -> None:
    with serve(FileServer(files={"a.bin": PAYLOAD})) as server:
        remote = Remote(server.url("a.bin"), sha(b"something else"), len(PAYLOAD))
        with pytest.raises(DownloadError, match=r"a\.bin: sha256 .* does not match"):
            download(remote, tmp_path / "a.bin", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_wrong_size_is_reported(tmp_path: Path) -> None:
    with serve(FileServer(files={"a.bin": PAYLOAD})) as server:
        remote = Remote(server.url("a.bin"), None, len(PAYLOAD) + 10)
        with pytest.raises(DownloadError, match="expected"):
            download(remote, tmp_path / "a.bin", progress=False)


def test_http_error_names_the_url(tmp_path: Path) -> None:
    with serve(FileServer()) as server, pytest.raises(DownloadError, match="HTTP 404"):
        download(Remote(server.url("missing.bin")), tmp_path / "m.bin", progress=False)


def test_offline_message(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    remote = Remote(f"http://127.0.0.1:{port}/a.bin", sha(PAYLOAD))
    with pytest.raises(DownloadError, match="offline") as info:
        download(remote, tmp_path / "a.bin", progress=False, timeout=2)
    assert str(tmp_path / "a.bin") in str(info.value)


def test_fetch_and_extract_unpacks_and_marks_complete(tmp_path: Path) -> None:
    archive = tar_bytes({"images/x.txt": b"x", "annotations/list.txt": b"y"})
    with serve(FileServer(files={"a.tar.gz": archive})) as server:
        remotes = [Remote(server.url("a.tar.gz"), sha(archive), len(archive))]
        out = fetch_and_extract(remotes, tmp_path / "pets", progress=False)
        assert (out / "images" / "x.txt").read_bytes() == b"x"
        assert not (out / "a.tar.gz").exists()
        server.files.clear()  # a completed folder is not fetched again
        assert fetch_and_extract(remotes, tmp_path / "pets", progress=False) == out


def test_corrupt_archive_is_removed_and_named(tmp_path: Path) -> None:
    junk = b"\x1f\x8b" + b"not really gzip" * 100
    with serve(FileServer(files={"bad.tar.gz": junk})) as server:
        remotes = [Remote(server.url("bad.tar.gz"), sha(junk), len(junk))]
        with pytest.raises(DownloadError, match=r"bad\.tar\.gz is not a readable tar"):
            fetch_and_extract(remotes, tmp_path / "pets", progress=False)
    assert not (tmp_path / "pets" / "bad.tar.gz").exists()
    assert not (tmp_path / "pets" / ".lrkit-complete").exists()


def test_extract_refuses_paths_outside(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(tar_bytes({"../evil.txt": b"x"}))
    with pytest.raises(DownloadError):
        extract_tar(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LRKIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("pets") == tmp_path / "xdg" / "lrkit" / "pets"
    monkeypatch.setenv("LRKIT_CACHE", str(tmp_path / "mine"))
    assert cache_dir("pets") == tmp_path / "mine" / "pets"
    monkeypatch.delenv("LRKIT_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "lrkit"


ERROR_PAGE = b"<!DOCTYPE html>\n<html><body><h1>Service unavailable</h1></body></html>\n"


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/octet-stream"])
def test_an_html_page_is_never_the_file(content_type: str, tmp_path: Path) -> None:
    """Status 200, no checksum or size to check against: refused by its type or its first bytes."""
    state = FileServer(files={"a.tar.gz": ERROR_PAGE}, types={"a.tar.gz": content_type})
    with serve(state) as server, pytest.raises(DownloadError, match="HTML page") as info:
        download(Remote(server.url("a.tar.gz")), tmp_path / "a.tar.gz", progress=False)
    assert server.url("a.tar.gz") in str(info.value)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a .part


def test_a_body_cut_short_is_never_the_file(tmp_path: Path) -> None:
    """No checksum or size: the announced Content-Length decides; the rest is resumed."""
    state = FileServer(files={"a.bin": PAYLOAD}, cut_after={"a.bin": 300_000})
    with serve(state) as server:
        with pytest.raises(DownloadError, match="stopped at 300000 of 1024000 bytes"):
            download(Remote(server.url("a.bin")), tmp_path / "a.bin", progress=False)
        assert not (tmp_path / "a.bin").exists()
        assert (tmp_path / "a.bin.part").stat().st_size == 300_000
        assert download(Remote(server.url("a.bin")), tmp_path / "a.bin", progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD and server.ranges == ["bytes=300000-"]


def test_a_stale_part_longer_than_the_file_is_not_the_file(tmp_path: Path) -> None:
    """The server answers 416 with the size it has: a .part of another size is fetched afresh."""
    (tmp_path / "a.bin.part").write_bytes(b"x" * (len(PAYLOAD) + 100))
    with serve(FileServer(files={"a.bin": PAYLOAD})) as server:
        dest = download(Remote(server.url("a.bin")), tmp_path / "a.bin", progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "a.bin.part").exists()


def test_a_complete_part_is_finished_without_a_transfer(tmp_path: Path) -> None:
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD)
    with serve(FileServer(files={"a.bin": PAYLOAD})) as server:
        dest = download(Remote(server.url("a.bin")), tmp_path / "a.bin", progress=False)
    assert dest.read_bytes() == PAYLOAD and server.ranges == [f"bytes={len(PAYLOAD)}-"]


OCTETS = "application/octet-stream"
# (name, Content-Type, body, more headers): status 200, no size or checksum, a binary file
# expected (a .tar.gz): each is an error document, never the file.
NOT_THE_FILE = [
    ("comment-first", OCTETS, b"<!-- error -->\n<!DOCTYPE html><html>Not found</html>", {}),
    ("head-first", OCTETS, b"<head><title>403 Forbidden</title></head><body>no</body>", {}),
    (
        "s3-xml",
        "application/xml",
        b'<?xml version="1.0"?><Error><Code>NoSuchKey</Code></Error>',
        {},
    ),
    ("xml-as-octets", OCTETS, b'  \r\n<?xml version="1.0"?><Error/>', {}),
    ("json", "application/json", b'{"error": "not found", "status": 404}', {}),
    ("json-as-octets", OCTETS, b'\n{"error": "not found"}', {}),
    ("problem-json", "application/problem+json", b"\x1f\x8b not really", {}),
    ("atom-xml", "application/atom+xml", b"\x1f\x8b not really", {}),
    ("xhtml", "application/xhtml+xml", b'<?xml version="1.0"?><html><body>login</body></html>', {}),
    ("text-plain", "text/plain", b"404 page not found", {}),
    ("text-csv", "text/csv; charset=utf-8", b"\x1f\x8b not really", {}),
    ("upper-case-type", "TEXT/HTML; charset=utf-8", b"<p>hi</p>", {}),
    (
        "gzip-encoded",
        OCTETS,
        gzip.compress(b"<!DOCTYPE html><html>x</html>"),
        {"Content-Encoding": "gzip"},
    ),
    ("br-encoded", OCTETS, b"\x1f\x8b\x08 binary-looking", {"Content-Encoding": "br"}),
    ("utf-16-html", OCTETS, "<!DOCTYPE html><html>x</html>".encode("utf-16"), {}),
    ("utf-16-be-json", OCTETS, b"\xfe\xff" + '{"e": 1}'.encode("utf-16-be"), {}),
    ("utf-32-xml", OCTETS, "<Error/>".encode("utf-32"), {}),
    ("utf-8-bom-json", OCTETS, b'\xef\xbb\xbf {"e": 1}', {}),
    ("empty", OCTETS, b"", {}),
]


@pytest.mark.parametrize(
    ("name", "content_type", "body", "headers"), NOT_THE_FILE, ids=[c[0] for c in NOT_THE_FILE]
)
def test_an_error_document_is_never_a_binary_file(name, content_type, body, headers, tmp_path):
    state = FileServer(
        files={name: body}, types={name: content_type}, headers={name: headers},
        redirects={"moved": name},
    )  # fmt: skip
    with serve(state) as server:
        for path in (name, "moved"):  # directly, and after a 302 to it
            with pytest.raises(DownloadError, match="nothing was kept") as info:
                download(Remote(server.url(path)), tmp_path / "a.tar.gz", progress=False)
            assert server.url(path) in str(info.value)
            assert list(tmp_path.iterdir()) == []  # neither the file nor a .part


@pytest.mark.parametrize(
    ("file_name", "body"),
    [
        ("a.tar.gz", tar_bytes({"x.txt": b"hello"})),
        ("weights.pth", b"PK\x03\x04" + bytes(300)),
        ("w.safetensors", (8).to_bytes(8, "little") + b'{"a": 1}'),  # a JSON header, not first
        ("notes.json", b'{"a": 1}'),  # not a binary file: JSON is what it holds
        ("feed.xml", b"<?xml version='1.0'?><feed/>"),
    ],
)
def test_real_files_are_still_taken(file_name, body, tmp_path):
    state = FileServer(files={file_name: body}, types={file_name: OCTETS})
    with serve(state) as server:
        dest = download(Remote(server.url(file_name)), tmp_path / file_name, progress=False)
    assert dest.read_bytes() == body


def test_what_counts_as_binary_is_the_file_name():
    assert expects_binary("train-images-idx3-ubyte.gz") and expects_binary("A.TAR")
    assert expects_binary("resnet18.pth") and not expects_binary("labels.csv")
