"""Tests for :mod:`bloodlib.data.download` against a real loopback HTTP server (see http_helpers)."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bloodlib.data import download as dl
from bloodlib.data.download import (
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download_file,
    extract_archive,
    sha256_file,
)
from tests.http_helpers import (
    QuietHandler,
    TruncatingHandler,
    make_tar,
    make_zip,
    serve_directory,
    serve_handler,
    start_server,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


REPO = "Repo-0123abc"
REPO_FILES = {
    f"{REPO}/README.md": b"# readme\n",
    f"{REPO}/sub/a.txt": b"alpha\n",
    f"{REPO}/sub/deep/b.csv": b"x,y\n1,2\n",
    f"{REPO}/other/c.txt": b"gamma\n",
}

# --------------------------------------------------------------------------- download + extract


@pytest.mark.parametrize(
    "fmt,name", [("tgz", "archive.tar.gz"), ("zip", "archive.zip"), ("tar", "archive.bin"), ("zip", "misnamed.tgz")]
)
def test_download_and_extract_with_mapping(tmp_path: Path, fmt: str, name: str) -> None:
    srv = tmp_path / "srv"
    srv.mkdir()
    if fmt == "zip":
        make_zip(srv / name, {f"{REPO}/": b"", **REPO_FILES})
    else:
        make_tar(srv / name, REPO_FILES, mode="w:gz" if fmt == "tgz" else "w")
    digest = sha256_file(srv / name)

    with serve_directory(srv) as base:
        got = download_file(f"{base}/{name}", tmp_path / "dl" / name, sha256=digest.upper(), timeout=5, progress=False)
    assert got == tmp_path / "dl" / name
    assert got.read_bytes() == (srv / name).read_bytes()
    assert os.listdir(tmp_path / "dl") == [name]

    out = tmp_path / "out"
    written = extract_archive(got, out, mapping=[(f"{REPO}/sub/", ""), (f"{REPO}/sub/a.txt", "copies/a1.txt")])
    assert files_under(out) == {"a.txt": b"alpha\n", "deep/b.csv": b"x,y\n1,2\n", "copies/a1.txt": b"alpha\n"}
    assert sorted(written) == sorted([out / "a.txt", out / "deep/b.csv", out / "copies/a1.txt"])

    everything = extract_archive(got, tmp_path / "all")
    assert files_under(tmp_path / "all") == REPO_FILES
    assert len(everything) == len(REPO_FILES)


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_shows_the_announced_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, progress: bool) -> None:
    """The bar counts 3000 B (2.93 KiB, from Content-Length) in 1000 B chunks to 100 %; ``progress=False`` is silent."""
    screen = io.StringIO()
    monkeypatch.setattr(dl, "tqdm", functools.partial(dl.tqdm, file=screen, mininterval=0, ascii=True))
    monkeypatch.setattr(dl, "_CHUNK", 1000)
    (tmp_path / "f.xlsx").write_bytes(b"x" * 3000)
    with serve_directory(tmp_path) as base:
        out = download_file(f"{base}/f.xlsx", tmp_path / "dl" / "f.xlsx", progress=progress, desc="xlsx", timeout=5)
    assert out.read_bytes() == b"x" * 3000
    shown = [state.strip() for state in screen.getvalue().split("\r") if state.strip()]
    if not progress:
        assert shown == []
        return
    assert [state.split("|")[0] for state in shown] == ["xlsx:   0%", "xlsx:  33%", "xlsx:  67%", "xlsx: 100%"]
    assert "2.93k/2.93k" in shown[-1] and all("/2.93k" in state for state in shown)


def test_sha256_file(tmp_path: Path) -> None:
    data = os.urandom(5000)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk_size=1000) == sha(data)


# --------------------------------------------------------------------------- failures


def test_wrong_checksum(tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "f.bin").write_bytes(b"payload")
    wrong = sha(b"something else")
    with serve_directory(tmp_path / "srv") as base:
        url = f"{base}/f.bin"
        with pytest.raises(ChecksumError) as exc:
            download_file(url, tmp_path / "dl" / "f.bin", sha256=wrong, timeout=5, progress=False)
    msg = str(exc.value)
    assert url in msg and wrong in msg and sha(b"payload") in msg
    assert isinstance(exc.value, DownloadError)
    assert os.listdir(tmp_path / "dl") == []


def test_failure_leaves_existing_dest_untouched(tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "f.bin").write_bytes(b"new")
    dest = tmp_path / "dl" / "f.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"old")
    with serve_directory(tmp_path / "srv") as base:
        with pytest.raises(ChecksumError):
            download_file(f"{base}/f.bin", dest, sha256="0" * 64, timeout=5, progress=False)
    assert dest.read_bytes() == b"old"
    assert os.listdir(dest.parent) == ["f.bin"]


def test_bad_sha256_argument(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not-a-digest"):
        download_file("http://127.0.0.1:9/x", tmp_path / "x", sha256="not-a-digest")
    assert list(tmp_path.iterdir()) == []


def test_server_dies_mid_file(tmp_path: Path) -> None:
    with serve_handler(TruncatingHandler) as base:
        url = f"{base}/big.tar.gz"
        with pytest.raises(DownloadError, match="300 of 1000") as exc:
            download_file(url, tmp_path / "dl" / "big.tar.gz", timeout=5, progress=False)
    assert url in str(exc.value)
    assert not isinstance(exc.value, ChecksumError)
    assert os.listdir(tmp_path / "dl") == []


def test_http_404(tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    with serve_directory(tmp_path / "srv") as base:
        url = f"{base}/missing.zip"
        with pytest.raises(DownloadError) as exc:
            download_file(url, tmp_path / "dl" / "missing.zip", timeout=5, progress=False)
    assert url in str(exc.value) and "404" in str(exc.value)
    assert os.listdir(tmp_path / "dl") == []


def test_connection_refused(tmp_path: Path) -> None:
    base, stop = start_server(QuietHandler)
    stop()  # nothing listens on that port any more
    with pytest.raises(DownloadError, match="could not open"):
        download_file(f"{base}/x", tmp_path / "x", timeout=5, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_keyboard_interrupt_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class InterruptingBar:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def __enter__(self) -> InterruptingBar:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def update(self, n: int) -> None:
            raise KeyboardInterrupt

    monkeypatch.setattr(dl, "tqdm", InterruptingBar)
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "f.bin").write_bytes(b"data")
    with serve_directory(tmp_path / "srv") as base:
        with pytest.raises(KeyboardInterrupt):
            download_file(f"{base}/f.bin", tmp_path / "dl" / "f.bin", timeout=5)
    assert os.listdir(tmp_path / "dl") == []


def test_custom_headers_are_sent(tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []

    class RecordingHandler(QuietHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve_handler(RecordingHandler) as base:
        out = download_file(
            f"{base}/f",
            tmp_path / "f",
            timeout=5,
            progress=False,
            headers={"Authorization": "token abc", "X-Bloodlib": "1"},
        )
    assert out.read_bytes() == b"ok"
    assert len(seen) == 1
    assert seen[0]["Authorization"] == "token abc" and seen[0]["X-Bloodlib"] == "1"


# --------------------------------------------------------------------------- unsafe archives


def _symlink(tf: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("data/link")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    tf.addfile(info)


def _hardlink(tf: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("data/hard")
    info.type, info.linkname = tarfile.LNKTYPE, "data/ok.txt"
    tf.addfile(info)


def _fifo(tf: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("data/pipe")
    info.type = tarfile.FIFOTYPE
    tf.addfile(info)


OK = {"data/ok.txt": b"fine"}  # comes first: nothing may be written before validation


@pytest.mark.parametrize(
    "kind,member,build",
    [
        ("tar", "../evil.txt", lambda p: make_tar(p, {**OK, "../evil.txt": b"x"})),
        ("tar", "data/../../evil.txt", lambda p: make_tar(p, {**OK, "data/../../evil.txt": b"x"})),
        ("tar", "/tmp/evil.txt", lambda p: make_tar(p, {**OK, "/tmp/evil.txt": b"x"})),
        ("tar", "data/link", lambda p: make_tar(p, OK, extra=_symlink)),
        ("tar", "data/hard", lambda p: make_tar(p, OK, extra=_hardlink)),
        ("tar", "data/pipe", lambda p: make_tar(p, OK, extra=_fifo)),
        ("zip", "../evil.txt", lambda p: make_zip(p, {**OK, "../evil.txt": b"x"})),
        ("zip", "C:/evil.txt", lambda p: make_zip(p, {**OK, "C:/evil.txt": b"x"})),
        ("zip", "..\\evil.txt", lambda p: make_zip(p, {**OK, "..\\evil.txt": b"x"})),
    ],
)
def test_unsafe_members_refused(tmp_path: Path, kind: str, member: str, build: Callable[[Path], Path]) -> None:
    archive = build(tmp_path / f"bad.{kind}")
    dest = tmp_path / "a" / "b" / "dest"
    with pytest.raises(UnsafeArchiveError) as exc:
        extract_archive(archive, dest)
    assert repr(member) in str(exc.value)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["bad." + kind]


def test_symlink_zip_member_refused(tmp_path: Path) -> None:
    info = zipfile.ZipInfo("data/link")
    info.external_attr = 0o120777 << 16
    with zipfile.ZipFile(tmp_path / "l.zip", "w") as zf:
        zf.writestr("data/ok.txt", b"fine")
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="data/link"):
        extract_archive(tmp_path / "l.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_symlink_outside_mapping_is_skipped(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "r.tgz", {"Repo/sub/a.txt": b"a"}, extra=_symlink)
    written = extract_archive(archive, tmp_path / "out", mapping=[("Repo/sub/", "")])
    assert written == [tmp_path / "out" / "a.txt"]
    with pytest.raises(UnsafeArchiveError, match="data/link"):
        extract_archive(archive, tmp_path / "out2", mapping=[("data/", "")])


def test_existing_symlink_in_dest_cannot_redirect(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside, target_is_directory=True)
    archive = make_zip(tmp_path / "z.zip", {"sub/x.txt": b"x"})
    with pytest.raises(UnsafeArchiveError, match="sub/x.txt"):
        extract_archive(archive, dest)
    assert list(outside.iterdir()) == []


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "f.zip").write_bytes(b"just some text, not an archive")
    with pytest.raises(DownloadError, match="f.zip"):
        extract_archive(tmp_path / "f.zip", tmp_path / "out")
