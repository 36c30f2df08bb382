"""Robust file downloads and safe archive extraction for the data registry.

:func:`download_file` streams a URL into place atomically (temporary file in the
destination folder, length and sha256 checks, then :func:`os.replace`), so a
failed or interrupted download never leaves anything that looks complete.
:func:`extract_archive` unpacks tar / tar.gz / zip archives after validating
every member, optionally remapping archive prefixes to destination prefixes; an archive
that cannot be read (corrupt zlib/gzip/lzma streams, encrypted or unsupported zip members)
raises :class:`DownloadError`, so the registry tries the next source. Credentials passed in
``headers`` (``Authorization``, ``Cookie``) are dropped when a redirect leaves the origin
(scheme, host and port) they were meant for.

Only the standard library, :mod:`tqdm` and :mod:`bloodlib.fsutil` are used.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from tqdm.auto import tqdm

from bloodlib.fsutil import file_mode

__all__ = [
    "ChecksumError",
    "DownloadError",
    "UnsafeArchiveError",
    "download_file",
    "extract_archive",
    "sha256_file",
]

_CHUNK = 1 << 20
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
#: Request headers that carry credentials: never sent to another origin after a redirect.
CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization")
#: What reading a damaged or unsupported archive raises, besides tarfile's and zipfile's own errors.
_ARCHIVE_ERRORS = (zlib.error, lzma.LZMAError, gzip.BadGzipFile, EOFError, NotImplementedError, ValueError)


class DownloadError(RuntimeError):
    """A download failed: network or HTTP error, truncated body, unreadable archive."""


class ChecksumError(DownloadError):
    """The sha256 digest of a downloaded file differs from the expected one."""


class UnsafeArchiveError(DownloadError):
    """An archive member could escape the destination or is a link/device member."""


def sha256_file(path: Path, chunk_size: int = _CHUNK) -> str:
    """Return the hex sha256 digest of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    progress: bool = True,
    desc: str | None = None,
) -> Path:
    """Stream ``url`` to ``dest`` with a tqdm progress bar (total from Content-Length).

    The body goes to a temporary file in ``dest``'s folder and is hashed while
    streaming. A body shorter or longer than the announced Content-Length raises
    :class:`DownloadError`; a sha256 mismatch (when ``sha256`` is given) raises
    :class:`ChecksumError`. Only then is the file moved onto ``dest`` with
    :func:`os.replace`. On any failure or interruption (``KeyboardInterrupt``
    included) the temporary file is removed and ``dest`` is left untouched.
    ``timeout`` applies to connecting and to each socket read. Returns ``dest``.
    """
    dest = Path(dest)
    expected = None
    if sha256 is not None:
        expected = sha256.strip().lower()
        if not _SHA256_RE.fullmatch(expected):
            raise ValueError(f"sha256 for {url} is not a 64-digit hex digest: {sha256!r}")
    request = urllib.request.Request(url, headers=dict(headers or {}))
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), file_mode())  # like open(): the umask, not mkstemp's 0600
            actual = _stream(request, out, timeout=timeout, progress=progress, desc=desc or dest.name)
        if expected is not None and actual != expected:
            raise ChecksumError(f"sha256 mismatch for {url}: expected {expected}, got {actual}")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


class OriginRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects like urllib's, but drops credential headers (:data:`CREDENTIAL_HEADERS`) when
    the new URL's origin (scheme, host, port) differs from the original request's."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            for name in list(new.headers):
                if name.lower() in CREDENTIAL_HEADERS:
                    del new.headers[name]
            for name in list(new.unredirected_hdrs):
                if name.lower() in CREDENTIAL_HEADERS:
                    del new.unredirected_hdrs[name]
        return new


def _open(request: urllib.request.Request, timeout: float):
    """``urlopen`` with :class:`OriginRedirectHandler` (the proxy settings of the environment apply)."""
    return urllib.request.build_opener(OriginRedirectHandler).open(request, timeout=timeout)


def _stream(request: urllib.request.Request, out: IO[bytes], *, timeout: float, progress: bool, desc: str) -> str:
    """Copy the response body for ``request`` into ``out``; return its sha256."""
    url = request.full_url
    try:
        response = _open(request, timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise DownloadError(f"HTTP {exc.code} {exc.reason} for {url}") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise DownloadError(f"could not open {url}: {exc}") from exc
    with response:
        length = response.headers.get("Content-Length", "").strip()
        total = int(length) if length.isdigit() else None
        digest = hashlib.sha256()
        received = 0
        with tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not progress, leave=False
        ) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (http.client.HTTPException, OSError) as exc:
                    raise DownloadError(f"connection to {url} failed after {received} bytes: {exc!r}") from exc
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise DownloadError(f"truncated download from {url}: got {received} of {total} bytes (Content-Length)")
    return digest.hexdigest()


def extract_archive(archive: Path, dest: Path, *, mapping: Sequence[tuple[str, str]] | None = None) -> list[Path]:
    """Safely extract a .tar, .tar.gz/.tgz (or other tarfile compression) or .zip into ``dest``.

    The format is detected from the content, not the file name. ``mapping`` is an
    optional list of ``(archive_prefix, dest_prefix)`` pairs: a member whose path
    starts with ``archive_prefix`` (plain string prefix) is written to
    ``dest / (dest_prefix + rest_of_path)``; a member matching several pairs is
    written once per pair; members matching none are skipped. ``None`` extracts
    everything under its own name.

    Every member is validated before anything is written: absolute paths, Windows
    drive paths, ``..`` components and target paths resolving outside ``dest``
    are refused for all members; symlinks, hardlinks and device/fifo members are
    refused whenever the mapping selects them (links outside the mapping are
    never read, so e.g. a GitHub tarball with a symlink elsewhere still works).
    Violations raise :class:`UnsafeArchiveError` naming the member. Directories
    are created as needed. Returns the files written, in archive order.
    """
    archive, dest = Path(archive), Path(dest)
    with open(archive, "rb") as fh:
        is_zip = fh.read(4) in (b"PK\x03\x04", b"PK\x05\x06") and zipfile.is_zipfile(fh)
    try:
        if is_zip:
            with zipfile.ZipFile(archive) as zf:
                members = [(i.filename, _zip_kind(i), i) for i in zf.infolist()]
                encrypted = [i.filename for i in zf.infolist() if i.flag_bits & 0x1]
                if encrypted:
                    raise DownloadError(f"encrypted member {encrypted[0]!r} in {archive}: cannot extract it")
                return _extract(members, lambda i: zf.open(i), archive, dest, mapping)
        if not tarfile.is_tarfile(archive):
            raise DownloadError(f"{archive} is neither a tar nor a zip archive")
        _check_stream(archive)
        with tarfile.open(archive, "r:*") as tf:
            members = [(m.name, _tar_kind(m), m) for m in tf.getmembers()]
            return _extract(members, tf.extractfile, archive, dest, mapping)
    except (tarfile.TarError, zipfile.BadZipFile, *_ARCHIVE_ERRORS) as exc:
        raise DownloadError(f"corrupt archive {archive}: {type(exc).__name__}: {exc}") from exc
    except RuntimeError as exc:  # zipfile: "File ... is encrypted, password required for extraction"
        if isinstance(exc, DownloadError):
            raise
        raise DownloadError(f"cannot extract {archive}: {exc}") from exc


#: Compressed tar streams by their first bytes, and how to read them to the end.
_COMPRESSED = ((b"\x1f\x8b", gzip.open), (b"\xfd7zXZ\x00", lzma.open), (b"BZh", "bz2"))


def _check_stream(archive: Path) -> None:
    """Decompress a compressed tar to its end once, so that its checksum (gzip's CRC, xz's) is verified:
    tarfile stops after the last member and would take a damaged stream's garbage silently."""
    with open(archive, "rb") as fh:
        head = fh.read(6)
    opener = next((o for magic, o in _COMPRESSED if head.startswith(magic)), None)
    if opener is None:
        return
    if opener == "bz2":
        import bz2

        opener = bz2.open
    with opener(archive, "rb") as stream:
        while stream.read(_CHUNK):
            pass


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.isreg():
        return "file"
    if member.isdir():
        return "dir"
    return {tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink"}.get(member.type, "device")


def _zip_kind(info: zipfile.ZipInfo) -> str:
    file_type = stat.S_IFMT(info.external_attr >> 16)  # 0 when not made on Unix
    if file_type == stat.S_IFLNK:
        return "symlink"
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "device"
    return "dir" if info.is_dir() else "file"


def _unsafe_name(name: str) -> bool:
    """True for absolute, drive-letter and ``..``-containing paths (``/`` or ``\\``)."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or bool(_DRIVE_RE.match(name)) or ".." in parts


def _extract(
    members: list[tuple[str, str, Any]],
    open_member: Callable[[Any], IO[bytes]],
    archive: Path,
    dest: Path,
    mapping: Sequence[tuple[str, str]] | None,
) -> list[Path]:
    """Validate all ``(name, kind, handle)`` members, then write the selected ones."""
    root = dest.resolve()
    plan: list[tuple[Path, str, Any]] = []
    for name, kind, handle in members:
        if _unsafe_name(name):
            raise UnsafeArchiveError(f"unsafe member path {name!r} in {archive}")
        pairs = [("", "")] if mapping is None else mapping
        for prefix, target_prefix in pairs:
            if not name.startswith(prefix):
                continue
            if kind not in ("file", "dir"):
                raise UnsafeArchiveError(f"refusing {kind} member {name!r} in {archive}")
            rel = (target_prefix + name[len(prefix) :]).strip("/")
            if not rel:
                continue  # the mapped prefix directory itself
            target = dest / rel
            if _unsafe_name(rel) or not target.resolve().is_relative_to(root):
                raise UnsafeArchiveError(f"member {name!r} in {archive} resolves outside {dest}")
            plan.append((target, kind, handle))
    written: list[Path] = []
    dest.mkdir(parents=True, exist_ok=True)
    for target, kind, handle in plan:
        if kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_member(handle) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
        written.append(target)
    return written
