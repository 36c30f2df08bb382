"""Kept tables (bloodlib.resultcache) and notebook 03's protocols kept between renders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bloodlib.resultcache import cached_tables, from_bytes, results_root, to_bytes


def test_tables_round_trip_exactly_without_pickle():
    frame = pd.DataFrame(
        {
            "classifier": ["knn", "rbf_svm", "knn"],
            "best_params": ["C=1.0", None, "n_neighbors=15"],
            "auc": [0.1 + 0.2, np.nan, 1 / 3],
            "tp": np.array([1, 2, 3], dtype=np.int64),
            "kept": [True, False, True],
        }
    )
    rows = np.arange(12, dtype=np.int64).reshape(3, 4)
    back = from_bytes(to_bytes({"frame": frame, "rows": rows}))
    pd.testing.assert_frame_equal(back["frame"], frame)
    assert np.array_equal(back["rows"], rows) and back["rows"].dtype == np.int64
    assert back["frame"]["auc"].iloc[0] == 0.1 + 0.2  # bit for bit, not a rounded text
    with pytest.raises(ValueError, match="only numeric and text columns"):
        to_bytes({"bad": pd.DataFrame({"params": [{"C": 1}]})})
    with pytest.raises(ValueError, match="only numeric arrays"):
        to_bytes({"bad": np.array([{"C": 1}], dtype=object)})


def test_cached_tables_compute_once_per_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOODLIB_CACHE", str(tmp_path))
    calls = []

    def compute(value: float):
        calls.append(value)
        return {"t": pd.DataFrame({"x": [value]})}

    assert cached_tables("demo", {"a": 1}, lambda: compute(1.0))["t"]["x"].iloc[0] == 1.0
    assert cached_tables("demo", {"a": 1}, lambda: compute(2.0))["t"]["x"].iloc[0] == 1.0
    assert cached_tables("demo", {"a": 2}, lambda: compute(3.0))["t"]["x"].iloc[0] == 3.0
    for path in (results_root() / "demo").glob("*.npz"):
        path.write_bytes(b"damaged")
    assert cached_tables("demo", {"a": 1}, lambda: compute(4.0))["t"]["x"].iloc[0] == 4.0
    assert calls == [1.0, 3.0, 4.0] and results_root() == tmp_path.resolve() / "results"


def test_notebook_03_protocols_are_kept_with_the_same_numbers(tmp_path, monkeypatch, osr):
    from bloodlib.diagnosis import cache, faithful, honest
    from bloodlib.diagnosis.results import run_covid_diagnosis
    from bloodlib.params import load_params

    monkeypatch.setenv("BLOODLIB_CACHE", str(tmp_path))
    params = load_params("03_covid_diagnosis", "quick")
    params = type(params)(**{**params.__dict__, "run_einstein": False, "honest_feature_sets": ["table1"]})
    first = run_covid_diagnosis(params, osr=osr, einstein=None)

    def refuse(*args, **kwargs):
        raise AssertionError("computed again although kept")

    monkeypatch.setattr(cache, "run_honest_cohorts", refuse)
    monkeypatch.setattr(cache, "faithful_over_seeds", refuse)
    again = run_covid_diagnosis(params, osr=osr, einstein=None)
    pd.testing.assert_frame_equal(again.over_seeds, first.over_seeds)
    for name, result in first.honest.items():
        kept = again.honest[name]
        for table in ("folds", "summary", "oof"):
            pd.testing.assert_frame_equal(getattr(kept, table), getattr(result, table))
        assert (kept.name, kept.n, kept.n_positive, kept.settings) == (
            result.name,
            result.n,
            result.n_positive,
            result.settings,
        )
        assert all(
            (a[0], a[1]) == (b[0], b[1]) and np.array_equal(a[2], b[2]) and np.array_equal(a[3], b[3])
            for a, b in zip(kept.splits, result.splits, strict=True)
        )
    changed = osr.assign(age=osr["age"] + 1) if "age" in osr else osr.iloc[::-1]
    with pytest.raises(AssertionError, match="computed again"):
        run_covid_diagnosis(params, osr=changed, einstein=None)  # other data: not the kept tables
    assert faithful.faithful_over_seeds is not refuse and honest.run_honest_cohorts is not refuse
