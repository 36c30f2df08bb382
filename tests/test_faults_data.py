"""Fault suite, ``bloodlib data fetch``: a copy that fails verification is fetched again (``--force`` always),
never by modifying ``BLOODLIB_DATA``; a malformed ``kaggle.json``, a corrupt or encrypted archive make the next
source be tried; credentials never follow a redirect to another origin. Loopback servers only."""

from __future__ import annotations

import errno
import functools
import http.server
import io
import zipfile
from pathlib import Path

import pytest

from bloodlib import cli
from bloodlib.data import download as dl
from bloodlib.data import registry
from bloodlib.data.download import DownloadError, download_file, extract_archive
from tests.fault_helpers import leftovers, snapshot
from tests.http_helpers import QuietHandler, make_tar, serve_handler
from tests.test_registry import FILES, fake_spec

MAPPING = (("Repo-abc/data/", ""),)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOODLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BLOODLIB_DATA", raising=False)
    return tmp_path


class CountingHandler(QuietHandler):
    """Serves a folder and counts the GET requests of each path (class attribute ``hits``)."""

    hits: dict[str, int] = {}

    def do_GET(self) -> None:
        CountingHandler.hits[self.path] = CountingHandler.hits.get(self.path, 0) + 1
        super().do_GET()


def serve(folder: Path):
    CountingHandler.hits = {}
    return serve_handler(functools.partial(CountingHandler, directory=str(folder)))


def fetch_cli(*args: str) -> int:
    return cli.main(["data", "fetch", *args])


def good_source(isolated: Path, base: str) -> registry.Source:
    return registry.Source(url=f"{base}/repo.tar.gz", mapping=MAPPING)


@pytest.fixture
def served(isolated):
    folder = isolated / "srv"
    folder.mkdir()
    make_tar(folder / "repo.tar.gz", FILES)
    return folder


def test_a_cached_copy_that_fails_verification_is_fetched_again(isolated, served, monkeypatch, capsys):
    with serve(served) as base:
        monkeypatch.setitem(registry.DATASETS, "fake", fake_spec(isolated, good_source(isolated, base)))
        assert fetch_cli("fake") == 0
        folder = isolated / "cache" / "data" / "fake"
        (folder / "a.txt").write_bytes(b"alphA\n")  # one changed byte: the quick check still passes
        capsys.readouterr()
        assert fetch_cli("fake") == 0
    out = capsys.readouterr().out
    assert "the cached copy failed verification (.: sha256" in out and "downloaded again" in out
    assert (folder / "a.txt").read_bytes() == b"alpha\n" and registry.verify("fake").ok
    assert CountingHandler.hits["/repo.tar.gz"] == 2 and leftovers(isolated / "cache") == []


def test_force_downloads_again_a_copy_that_verifies(isolated, served, monkeypatch, capsys):
    with serve(served) as base:
        monkeypatch.setitem(registry.DATASETS, "fake", fake_spec(isolated, good_source(isolated, base)))
        assert fetch_cli("fake") == 0 and fetch_cli("fake") == 0
        assert CountingHandler.hits["/repo.tar.gz"] == 1  # verified: not downloaded again
        assert fetch_cli("fake", "--force") == 0
        assert CountingHandler.hits["/repo.tar.gz"] == 2
    assert "downloaded again (--force)" in capsys.readouterr().out and registry.verify("fake").ok


def test_a_failed_repair_keeps_the_old_copy(isolated, served, monkeypatch, capsys):
    with serve(served) as base:
        monkeypatch.setitem(registry.DATASETS, "fake", fake_spec(isolated, good_source(isolated, base)))
        assert fetch_cli("fake") == 0
    folder = isolated / "cache" / "data" / "fake"
    (folder / "a.txt").write_bytes(b"alphA\n")
    before = snapshot(folder)
    with pytest.warns(UserWarning, match="source failed"), serve(isolated / "empty") as base:
        monkeypatch.setitem(
            registry.DATASETS, "fake", fake_spec(isolated, good_source(isolated, base), good_source(isolated, base))
        )
        assert fetch_cli("fake") == 1  # the server is gone: the data set could not be repaired
    err = capsys.readouterr().err
    assert "fake: FAILED" in err and "HTTP 404" in err and "Traceback" not in err
    assert snapshot(folder) == before and leftovers(isolated / "cache") == []


def test_a_bloodlib_data_copy_is_never_modified(isolated, served, monkeypatch, capsys):
    local = isolated / "local" / "fake"
    local.mkdir(parents=True)
    for name, data in FILES.items():
        if name.startswith("Repo-abc/data/"):
            (local / name.removeprefix("Repo-abc/data/")).parent.mkdir(parents=True, exist_ok=True)
            (local / name.removeprefix("Repo-abc/data/")).write_bytes(data)
    (local / "a.txt").write_bytes(b"alphA\n")
    before = snapshot(local)
    monkeypatch.setenv("BLOODLIB_DATA", str(local.parent))
    with serve(served) as base:
        monkeypatch.setitem(registry.DATASETS, "fake", fake_spec(isolated, good_source(isolated, base)))
        assert fetch_cli("fake") == 1
    err = capsys.readouterr().err
    assert f"{local} fails verification" in err and "never modifies BLOODLIB_DATA" in err
    assert snapshot(local) == before and CountingHandler.hits == {}


def test_a_malformed_kaggle_json_is_a_warning_and_the_mirror_is_used(isolated, served, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(isolated))
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    (isolated / "kaggle.json").write_text('{"username": "ann", "key": ')
    with serve(served) as base:
        kaggle = registry.Source(url=f"{base}/kaggle.zip", mapping=MAPPING, auth="kaggle")
        monkeypatch.setitem(registry.DATASETS, "fake", fake_spec(isolated, kaggle, good_source(isolated, base)))
        with pytest.warns(UserWarning) as caught:
            assert fetch_cli("fake") == 0
    texts = [str(w.message) for w in caught]
    assert any(f"ignoring {isolated / 'kaggle.json'}: not usable Kaggle credentials" in t for t in texts)
    assert any("Kaggle credentials not found" in t and "trying the next one" in t for t in texts)
    assert "/kaggle.zip" not in CountingHandler.hits and registry.verify("fake").ok


def corrupt_gzip(folder: Path) -> bytes:
    """A .tar.gz of the data set plus 256 kB of noise, with bytes late in its deflate stream flipped: the tar
    headers read fine, and tarfile alone would extract garbage (it never reads gzip's CRC at the end)."""
    import random

    noise = random.Random(0).randbytes(256 * 1024)
    data = make_tar(folder / "big.tar.gz", {**FILES, "Repo-abc/data/zz-noise.bin": noise}).read_bytes()
    at = len(data) * 3 // 4
    return data[:at] + bytes(b ^ 0xFF for b in data[at : at + 64]) + data[at + 64 :]


def encrypted_zip() -> bytes:
    """A zip whose member claims to be encrypted (flag bit 0), as ``zip -e`` makes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("Repo-abc/data/a.txt", b"alpha\n")
    data = bytearray(buffer.getvalue())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        data[at + offset] |= 0x1
    return bytes(data)


@pytest.mark.parametrize("kind", ["zlib", "encrypted"])
def test_archive_errors_are_download_errors_and_the_next_source_is_tried(isolated, served, monkeypatch, kind):
    bad = served / "bad.bin"
    if kind == "zlib":
        bad.write_bytes(corrupt_gzip(isolated))
    else:
        bad.write_bytes(encrypted_zip())
    with pytest.raises(DownloadError, match="corrupt archive .*bad.bin: |encrypted member 'Repo-abc/data/a.txt'"):
        extract_archive(bad, isolated / "x", mapping=MAPPING)
    with serve(served) as base:
        first = registry.Source(url=f"{base}/bad.bin", mapping=MAPPING)
        monkeypatch.setitem(registry.DATASETS, "fake", fake_spec(isolated, first, good_source(isolated, base)))
        with pytest.warns(UserWarning, match=r"bad.bin: (corrupt archive|encrypted member)"):
            folder = registry.fetch("fake")
    assert registry.verify("fake").ok and folder.is_dir() and leftovers(isolated / "cache") == []


class Recorder(QuietHandler):
    """Answers 200 with a body and records each request's path and Authorization header."""

    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        Recorder.seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


def redirector(target: str) -> type[http.server.BaseHTTPRequestHandler]:
    class Redirect(Recorder):
        def do_GET(self) -> None:
            if self.path.startswith("/landed"):
                return super().do_GET()
            Recorder.seen.append((self.path, self.headers.get("Authorization")))
            if self.path.startswith("/same"):
                self.send_response(302)
                self.send_header("Location", "/landed")
                self.end_headers()
                return
            self.send_response(302)
            self.send_header("Location", f"{target}/file")
            self.end_headers()

    return Redirect


def test_credentials_never_follow_a_redirect_to_another_origin(tmp_path):
    Recorder.seen = []
    secret = {"Authorization": "Basic c2VjcmV0"}
    with serve_handler(Recorder) as other, serve_handler(redirector(other)) as kaggle:
        download_file(f"{kaggle}/download", tmp_path / "a", headers=secret, progress=False)
        download_file(f"{kaggle}/same", tmp_path / "b", headers=secret, progress=False)
    assert Recorder.seen == [
        ("/download", "Basic c2VjcmV0"),
        ("/file", None),  # another port on the same host is another origin: no credentials
        ("/same", "Basic c2VjcmV0"),
        ("/landed", "Basic c2VjcmV0"),  # a redirect within the origin keeps them
    ]
    assert (tmp_path / "a").read_bytes() == b"ok"


def test_a_full_disk_stops_the_fetch_at_once_and_exits_3(isolated, served, monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(isolated / "cache" / "data"))

    monkeypatch.setattr(registry, "extract_archive", full)
    with serve(served) as base:
        sources = (good_source(isolated, base), good_source(isolated, base))
        monkeypatch.setitem(registry.DATASETS, "fake", fake_spec(isolated, *sources))
        assert fetch_cli("fake") == 3
    err = capsys.readouterr().err
    assert f"disk full: {isolated / 'cache' / 'data'}" in err and "Traceback" not in err
    assert CountingHandler.hits["/repo.tar.gz"] == 1  # the second source was not tried: it would fail the same way
    assert leftovers(isolated / "cache") == [] and not (isolated / "cache" / "data" / "fake").exists()


def test_download_temporary_files_honour_the_umask(tmp_path, served):
    import os

    previous = os.umask(0o022)
    try:
        with serve(served) as base:
            path = dl.download_file(f"{base}/repo.tar.gz", tmp_path / "repo.tar.gz", progress=False)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
