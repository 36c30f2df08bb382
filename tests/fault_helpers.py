"""Shared pieces of the fault suite (``tests/test_faults_*.py``): hostile files, a lock held by another process,
and checks that nothing was left behind."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.paths import ROOT


class Payload:
    """Unpickling this creates the file ``path`` (what a crafted model file would do, harmlessly)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def malicious_torch_file(payload: Path) -> bytes:
    """A torch file (zip) whose pickle, unpickled with full pickle, would create ``payload``."""
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(1, 1), "bias": torch.zeros(1), "x": Payload(payload)}, buffer)
    return buffer.getvalue()


def malicious_pickle(payload: Path) -> bytes:
    """A plain pickle that would create ``payload`` when loaded."""
    return pickle.dumps(Payload(payload))


def leftovers(folder: Path, *patterns: str) -> list[str]:
    """Staging, temporary and partial files under ``folder`` (recursively): what an interrupted write leaves."""
    patterns = patterns or ("*.tmp", "*.staging-*", "*.partial-*", "*.part", "*.old-*")
    return sorted(str(p.relative_to(folder)) for pattern in patterns for p in folder.rglob(pattern))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


HOLDER = """
import sys, time
from pathlib import Path
from bloodlib.fsutil import file_lock
lock, what, seconds, then = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
with file_lock(lock, what=what):
    print("locked", flush=True)
    time.sleep(seconds)
    if then:
        exec(then)
"""


def hold_lock(lock: Path, *, what: str, seconds: float, then: str = "") -> subprocess.Popen:
    """Another process holding ``lock`` for ``seconds`` (then running the Python code ``then`` before
    releasing it); returns once it holds the lock."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock), what, str(seconds), then],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 30
    line = process.stdout.readline()
    assert line.strip() == "locked" and time.monotonic() < deadline, "the lock holder did not start"
    return process
