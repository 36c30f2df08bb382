"""Computed tables kept between renders, for work that trains no network (notebook 03's protocols).

:func:`cached_tables` stores what ``compute()`` returned -- named pandas tables (numeric and text
columns) and numeric arrays -- in one ``.npz`` under ``<user cache>/results/<task>/<key>.npz``, the key
hashing the inputs (:func:`bloodlib.modelcache.run_key`), which include the data and a digest of the
code that computed the tables (:func:`bloodlib.modelcache.source_digest`), so a change of parameters,
data or code computes anew. Files are read with ``allow_pickle=False``: text is stored as fixed-width
unicode arrays, never as Python objects; a file that cannot be read back is computed again.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bloodlib import progress
from bloodlib.fsutil import atomic_write_bytes
from bloodlib.modelcache import numeric_array, run_key
from bloodlib.paths import cache_dir

Table = pd.DataFrame | np.ndarray
_LAYOUT = "__layout__"


def results_root() -> Path:
    """Where computed tables are kept: ``<user cache>/results``."""
    return cache_dir() / "results"


def _column(values: pd.Series, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A column as a numpy array and, for text, which entries are missing (None for numbers)."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return values.to_numpy(), None
    missing = values.isna().to_numpy()
    if values[~missing].map(lambda v: isinstance(v, str)).all():
        return np.array(["" if m else v for v, m in zip(values, missing)], dtype=str), missing
    raise ValueError(f"{where}: only numeric and text columns can be kept, got {values.dtype}")


def to_bytes(tables: dict[str, Table]) -> bytes:
    """``tables`` as the bytes of one ``.npz`` (see the module docstring).

    Raises:
        ValueError: a table has a column that is neither numeric nor text, or an array is not numeric.
    """
    arrays: dict[str, np.ndarray] = {}
    layout: dict[str, Any] = {}
    for name, table in tables.items():
        if isinstance(table, np.ndarray):
            arrays[f"{name}"] = numeric_array(table, name)
            layout[name] = {"kind": "array"}
            continue
        columns, text = [], []
        for i, column in enumerate(table.columns):
            arrays[f"{name}/{i}"], missing = _column(table[column], f"{name}.{column}")
            if missing is not None:
                arrays[f"{name}/{i}/missing"] = missing
            columns.append(str(column))
            text.append(missing is not None)
        layout[name] = {"kind": "frame", "columns": columns, "text": text, "rows": len(table)}
    arrays[_LAYOUT] = np.array(json.dumps(layout))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def from_bytes(data: bytes) -> dict[str, Table]:
    """The inverse of :func:`to_bytes` (nothing is unpickled)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        layout = json.loads(str(stored[_LAYOUT]))
        out: dict[str, Table] = {}
        for name, entry in layout.items():
            if entry["kind"] == "array":
                out[name] = stored[name]
                continue
            values = {}
            for i, (column, is_text) in enumerate(zip(entry["columns"], entry["text"], strict=True)):
                array = stored[f"{name}/{i}"]
                if is_text:
                    missing = stored[f"{name}/{i}/missing"]
                    array = pd.Series([None if m else v for v, m in zip(array.tolist(), missing)])
                values[column] = array
            out[name] = pd.DataFrame(values, index=pd.RangeIndex(entry["rows"]))
        return out


def cached_tables(task: str, inputs: dict[str, Any], compute: Callable[[], dict[str, Table]]) -> dict[str, Table]:
    """``compute()``, or what it returned before for the same ``inputs`` (JSON-serialisable: parameters,
    data digests, :func:`~bloodlib.modelcache.source_digest` of the code). Frames come back with a
    fresh ``RangeIndex``. The seconds ``compute()`` took are kept beside the file and reported as reused
    training when it is read back (:func:`bloodlib.progress.reused_file`; notebook 03's protocols are
    its training)."""
    path = results_root() / task / f"{run_key(inputs, {})}.npz"
    if path.is_file():
        try:
            tables = from_bytes(path.read_bytes())
        except (OSError, ValueError, KeyError, EOFError):
            pass  # damaged: computed again below
        else:
            progress.reused_file(path, phase="training", what=task)
            return tables
    started = time.perf_counter()
    tables = compute()
    data = to_bytes(tables)
    atomic_write_bytes(path, data)
    progress.record_cost(path, time.perf_counter() - started)
    return from_bytes(data)  # what a cached run returns, so both runs show the same
