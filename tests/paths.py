"""Where the tests find the repository and the local data folder (``BLOODLIB_DATA``, read-only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def require_data(relative: str = "") -> Path:
    """``$BLOODLIB_DATA/<relative>``; a test that needs it fails (never skips) when it is missing.

    Tests only read from this folder: anything they write goes under ``tmp_path``.
    """
    value = os.environ.get("BLOODLIB_DATA")
    if not value or not Path(value).is_dir():
        pytest.fail("BLOODLIB_DATA must name the local data folder (e.g. ../shared/data); CI sets it")
    path = Path(value) / relative
    if not path.exists():
        pytest.fail(f"{path} not found: BLOODLIB_DATA={value} must contain {relative}")
    return path
