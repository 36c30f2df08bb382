"""Fixtures shared by the whole suite; helpers that are plain functions live in ``tests/*_helpers.py``."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.paths import require_data


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make urllib bypass any configured proxy for the loopback server."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def one_thread():
    """Tiny models run faster on one torch thread (and do not stall when the cores are shared)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The local data folder ``BLOODLIB_DATA`` (read-only); the test fails without it."""
    return require_data()


@pytest.fixture(scope="session")
def osr_loaded() -> Iterator[tuple[pd.DataFrame, list[warnings.WarningMessage]]]:
    """OSR (``covid-osr/covid_study_v2.xlsx``) read once per session, with the warnings :func:`load_osr` gave.

    The frame is shared by every test that asks for it: a test copies it before changing it
    (checked when the session ends).
    """
    from bloodlib.diagnosis.data import load_osr

    path = require_data("covid-osr/covid_study_v2.xlsx")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = load_osr(path)
    pristine = frame.copy()
    yield frame, list(caught)
    pd.testing.assert_frame_equal(frame, pristine, obj="the shared OSR frame (a test changed it in place)")


@pytest.fixture(scope="session")
def osr(osr_loaded: tuple[pd.DataFrame, list[warnings.WarningMessage]]) -> pd.DataFrame:
    """The OSR frame of :func:`osr_loaded` (279 rows, one ``duplicate_group`` column)."""
    return osr_loaded[0]
