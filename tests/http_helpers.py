"""Loopback HTTP servers and small archives for the download and registry tests."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static-file handler that does not log every request to stderr."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def start_server(
    handler: Callable[..., http.server.BaseHTTPRequestHandler],
) -> tuple[str, Callable[[], None]]:
    """Serve ``handler`` on 127.0.0.1 (ephemeral port) in a daemon thread.

    Returns ``(base_url, stop)``; ``stop()`` shuts the server down (bounded wait).
    """
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    host, port = server.server_address[:2]
    return f"http://{host}:{port}", stop


@contextlib.contextmanager
def serve_handler(handler: Callable[..., http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Context manager around :func:`start_server`; yields the base URL."""
    base_url, stop = start_server(handler)
    try:
        yield base_url
    finally:
        stop()


@contextlib.contextmanager
def serve_directory(path: Path) -> Iterator[str]:
    """Serve the files under ``path`` over HTTP; yields the base URL (no trailing slash)."""
    with serve_handler(functools.partial(QuietHandler, directory=str(path))) as base_url:
        yield base_url


def make_tar(
    path: Path, files: dict[str, bytes], mode: str = "w:gz", extra: Callable[[tarfile.TarFile], None] | None = None
) -> Path:
    """Write a tar archive of ``{member_name: content}``; ``extra(tf)`` may add odd members."""
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if extra is not None:
            extra(tf)
    return path


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    """Write a zip archive of ``{member_name: content}``."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


class TruncatingHandler(QuietHandler):
    """Announces 1000 bytes, sends 300, then drops the connection."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"x" * 300)
        self.wfile.flush()
        self.close_connection = True
