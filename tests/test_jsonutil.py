"""The one JSON sanitiser: numpy/torch values made plain, NaN and infinities as null, optional rounding."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bloodlib.jsonutil import json_text, jsonable


def test_jsonable_makes_every_value_plain():
    value = {
        1: np.float32(0.5),
        "ints": (np.int64(3), True, np.bool_(False), 2),
        "floats": [math.nan, math.inf, -math.inf, np.float64(-0.25)],
        "array": np.array([[1.5, np.nan]]),
        "tensor": torch.tensor([1, 2]),
        "path": Path("/data/x"),
        "nested": {"none": None, "text": "a"},
    }
    assert jsonable(value) == {
        "1": 0.5,
        "ints": [3, True, False, 2],
        "floats": [None, None, None, -0.25],
        "array": [[1.5, None]],
        "tensor": [1, 2],
        "path": "/data/x",
        "nested": {"none": None, "text": "a"},
    }
    assert type(jsonable(np.float32(0.5))) is float and type(jsonable(np.int64(3))) is int
    assert jsonable(np.bool_(True)) is True


def test_digits_round_floats_only():
    assert jsonable({"p": 0.123456789, "n": 7, "b": True, "x": np.float32(1 / 3)}, digits=4) == {
        "p": 0.1235,
        "n": 7,
        "b": True,
        "x": 0.3333,
    }


def test_json_text_is_indented_ordered_and_strict():
    text = json_text({"b": 1, "a": [math.nan]})
    assert text.endswith("}\n") and text.index('"b"') < text.index('"a"')
    assert json.loads(text) == {"b": 1, "a": [None]}
    with pytest.raises(TypeError):
        json_text({"obj": object()})
