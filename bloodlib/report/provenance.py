"""Provenance of a report run: code version, package versions, machine, data checksums."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = (
    "bloodlib",
    "numpy",
    "pandas",
    "scikit-learn",
    "scipy",
    "torch",
    "torchvision",
    "torchmetrics",
    "timm",
    "opencv-python-headless",
    "matplotlib",
    "seaborn",
    "papermill",
    "nbconvert",
)


def git_commit(root: Path) -> str:
    """``<sha>`` of HEAD, with ``-dirty`` if the work tree has changes; ``unknown`` without git."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine() -> dict[str, str | int]:
    return {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count() or 0}


def data_checksums(names: tuple[str, ...]) -> list[dict]:
    """Verify (hash) each data set a notebook reads; see :func:`bloodlib.data.verify`."""
    from bloodlib.data import verify

    return [verify(name).as_dict() for name in names]
