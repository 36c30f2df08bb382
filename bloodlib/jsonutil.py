"""JSON for every file bloodlib writes: numpy/torch values made plain, NaN and infinities as ``null``.

:func:`jsonable` is the one sanitiser (report ``metrics.json`` and ``runs.json``, the outputs of
``bloodlib analyze``, the diagnosis metrics); :func:`json_text` is the one way to format a file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def jsonable(value: Any, *, digits: int | None = None) -> Any:
    """``value`` with only JSON types left, recursively.

    - dicts (keys made ``str``), lists and tuples (-> lists) are walked;
    - numpy (and torch) scalars and arrays become Python numbers and (nested) lists (``.tolist()``);
    - floats that are NaN or infinite become ``None``, the others are rounded to ``digits``
      decimals when ``digits`` is given;
    - ``Path`` becomes ``str``; booleans, ints, strings and ``None`` stay as they are.
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v, digits=digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, digits=digits) for v in value]
    if hasattr(value, "tolist"):  # numpy/torch scalar or array
        return jsonable(value.tolist(), digits=digits)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return round(value, digits) if digits is not None else float(value)
    if isinstance(value, Path):
        return str(value)
    return value


def json_text(value: Any, *, digits: int | None = None) -> str:
    """Indented JSON of :func:`jsonable` ``(value, digits=digits)``, keys in insertion order, ending in a newline.

    Raises:
        TypeError: ``value`` holds something JSON cannot represent (after :func:`jsonable`).
    """
    return json.dumps(jsonable(value, digits=digits), indent=2, allow_nan=False) + "\n"
