"""Where things live: the project root, the user cache, report folders.

Everything is resolved from explicit arguments or environment variables at call
time (never at import), so tests can point the library at temporary folders.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The bloodlib checkout: ``BLOODLIB_ROOT`` if set, else the folder above the package.

    Raises:
        FileNotFoundError: if that folder has no ``notebooks/`` and ``params/``
            (e.g. bloodlib was installed as a wheel, without the project files).
    """
    root = Path(os.environ.get("BLOODLIB_ROOT") or PACKAGE_DIR.parent).resolve()
    if not (root / "notebooks").is_dir() or not (root / "params").is_dir():
        raise FileNotFoundError(
            f"{root} is not a bloodlib checkout (no notebooks/ and params/ folders); "
            "set BLOODLIB_ROOT to the project folder"
        )
    return root


def cache_dir() -> Path:
    """The user cache: ``BLOODLIB_CACHE`` if set, else the platform cache folder."""
    return Path(os.environ.get("BLOODLIB_CACHE") or platformdirs.user_cache_dir("bloodlib")).resolve()


def local_data_dir() -> Path | None:
    """The folder named by ``BLOODLIB_DATA`` (laid out like ``shared/data``), or None."""
    value = os.environ.get("BLOODLIB_DATA")
    return Path(value).expanduser().resolve() if value else None


def reports_dir(profile: str, root: Path | None = None) -> Path:
    """``reports/<profile>/`` under the project root."""
    return (root or project_root()) / "reports" / profile
