"""Durable, atomic file and folder replacement: readers never see half-written output.

- :func:`atomic_write_bytes` / :func:`atomic_write_text` write a temporary file in the target's
  folder, ``fsync`` it, rename it onto the target and ``fsync`` the folder, so after a crash or a
  power loss the target is either the old file or the whole new one;
- :func:`staging_dir` makes a private working folder next to a target (removed on failure by its
  caller), and :func:`replace_dir` swaps such a folder in place of the target;
- files and folders get the permissions a plain ``open()`` / ``mkdir()`` would give (``0666`` /
  ``0777`` less the process umask: ``0644`` / ``0755`` under umask 022), not the ``0600`` /
  ``0700`` of :mod:`tempfile`, so a group can share a models folder and a web server can serve
  the reports.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process umask (read from ``/proc`` where possible, so no other thread sees it change)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` gives a new folder: ``0o777`` less the umask."""
    return 0o777 & ~current_umask()


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not support fsync on folders
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder (fsynced, then renamed).

    The file gets :func:`file_mode`; on any failure (a full disk, Ctrl-C) the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), file_mode())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def staging_dir(parent: Path, prefix: str) -> Path:
    """A new, empty folder ``parent/<prefix><random>`` with :func:`dir_mode` (not ``mkdtemp``'s 0700)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(folder, dir_mode())
    return folder


def _exchange(a: Path, b: Path) -> bool:
    """Swap the two existing paths ``a`` and ``b`` in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``);
    False where the system cannot."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # a file system without RENAME_EXCHANGE
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target``; an old ``target`` is swapped out in one atomic step where the system
    can (Linux), else renamed aside first; then removed. At no moment is ``target`` missing or mixed.

    ``new`` and ``target`` must be on the same file system (make ``new`` with :func:`staging_dir`
    in ``target``'s parent). The renames are fsynced.
    """
    new, target = Path(new), Path(target)
    if target.is_dir() and not target.is_symlink() and _exchange(new, target):
        fsync_dir(target.parent)
        shutil.rmtree(new, ignore_errors=True)  # the old target, now at new's path
        return
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(new, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def move_aside(path: Path, reason: str = "corrupt") -> Path:
    """Rename ``path`` (file or folder) to ``<name>.<reason>-<n>`` beside it, never overwriting; returns the new path."""
    path = Path(path)
    for n in range(1, 10_000):
        aside = path.with_name(f"{path.name}.{reason}-{n}")
        if not aside.exists():
            os.replace(path, aside)
            fsync_dir(path.parent)
            return aside
    raise FileExistsError(f"too many {reason} copies beside {path}")


class LockTimeoutError(TimeoutError):
    """Another process held a bloodlib lock for longer than the timeout; the message names it."""


#: Environment variable: seconds to wait for a lock held by another process (unset: wait as long as it takes).
LOCK_TIMEOUT_ENV = "BLOODLIB_LOCK_TIMEOUT"


def lock_timeout(default: float | None = None) -> float | None:
    """Seconds to wait for a lock: ``BLOODLIB_LOCK_TIMEOUT`` if set, else ``default`` (None: no limit).

    Raises:
        ValueError: the variable is not a number.
    """
    value = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{LOCK_TIMEOUT_ENV} must be a number of seconds, got {value!r}") from None


def lock_holder(lock_path: Path) -> str:
    """Who holds the lock at ``lock_path``, in words (from its ``.owner`` file), or ``"an unknown process"``."""
    import json

    try:
        owner = json.loads(Path(f"{lock_path}.owner").read_text(encoding="utf-8"))
        return (
            f"process {owner['pid']} on {owner['host']} ({owner.get('command', '?')}, "
            f"{owner.get('what', '?')}, since {owner.get('since', '?')})"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown process"


@contextlib.contextmanager
def file_lock(lock_path: Path, *, what: str, timeout: float | None = None, notify=None):
    """Hold an exclusive inter-process lock (:mod:`filelock`) on ``lock_path`` while the block runs.

    The holder writes ``<lock_path>.owner`` (pid, host, command, ``what``, start time) so that a
    process that has to wait can say whom it waits for: ``notify(message)`` is called once when the
    lock is busy (default: print to stderr).

    Args:
        timeout: seconds to wait (None: as long as it takes).

    Raises:
        LockTimeoutError: still busy after ``timeout`` seconds (names the holder).
    """
    import json
    import socket
    import sys
    import time
    from datetime import UTC, datetime

    import filelock

    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        message = f"waiting for {lock_holder(lock_path)}, which holds the lock on {what} ({lock_path})"
        (notify or (lambda text: print(text, file=sys.stderr, flush=True)))(message)
        started = time.monotonic()
        try:
            lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout))
        except filelock.Timeout:
            raise LockTimeoutError(
                f"{what} is locked by {lock_holder(lock_path)}; gave up after {time.monotonic() - started:.0f} s "
                f"({lock_path}; wait longer with {LOCK_TIMEOUT_ENV}=SECONDS, or remove the lock file if that "
                "process no longer runs)"
            ) from None
    owner = Path(f"{lock_path}.owner")
    try:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:200] if sys.argv else "python",
            "what": what,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        try:
            atomic_write_text(owner, json.dumps(info) + "\n")
        except OSError:  # a read-only folder: the lock still works, the holder is just not named
            pass
        yield lock_path
    finally:
        owner.unlink(missing_ok=True)
        lock.release()
