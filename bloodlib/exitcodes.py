"""Exit codes of the ``bloodlib`` commands and the helpers that keep environment errors and interrupts
free of tracebacks (shared by :mod:`bloodlib.cli` and the commands' own entry points)."""

from __future__ import annotations

import contextlib
import errno
import signal
import threading

EXIT_OK = 0
EXIT_INPUTS_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERRUPTED = 130

EXIT_CODES = f"""exit codes:
  {EXIT_OK}    ok
  {EXIT_INPUTS_FAILED}    some inputs failed (an image, a notebook, a data set); the others were done
  {EXIT_USAGE}    usage or parameters (a bad option, a bad params file, --out refused)
  {EXIT_ENVIRONMENT}    environment: disk full, no permission, read-only folder, models missing or damaged,
       a lock held too long by another process (BLOODLIB_LOCK_TIMEOUT)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C or SIGTERM); finished results are kept, partial ones removed
"""


def environment_message(err: BaseException) -> str:
    """An environment error in words, without a traceback (disk full, permissions, read-only, lock)."""
    from bloodlib.fsutil import LockTimeoutError

    if isinstance(err, LockTimeoutError):
        return str(err)
    if isinstance(err, OSError):
        what = {
            errno.ENOSPC: "disk full",
            errno.EDQUOT: "disk quota exceeded",
            errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted",
            errno.EROFS: "read-only file system",
        }.get(err.errno, err.strerror or type(err).__name__)
        where = f": {err.filename}" if err.filename else ""
        return f"{what}{where}" if err.strerror or err.filename else f"{what}: {err}"
    return f"{type(err).__name__}: {err}"


@contextlib.contextmanager
def interrupts_as_keyboard():
    """While the block runs (in the main thread), SIGTERM raises :class:`KeyboardInterrupt` like Ctrl-C,
    so that ``finally`` blocks clean up (staging folders, kernels) instead of the process just dying."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
