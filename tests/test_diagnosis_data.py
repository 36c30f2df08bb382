"""Loaders of the COVID-19 cohorts: real files (from BLOODLIB_DATA) and synthetic error cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bloodlib.diagnosis.data import (
    FEATURE_SETS,
    OSR_COLUMNS,
    duplicate_groups,
    feature_columns,
    load_einstein,
    load_osr,
    xy_groups,
)
from tests.paths import require_data


@pytest.fixture(scope="module")
def einstein_path() -> Path:
    return require_data("covid-einstein/dataset.xlsx")


# --- OSR, real file (the session fixture osr_loaded of conftest.py) -------------------------------------------------------------------


def test_osr_columns_and_counts(osr_loaded):
    df, _ = osr_loaded
    expected = list(OSR_COLUMNS.values()) + ["duplicate_group"]
    assert list(df.columns) == expected
    assert len(df) == 279
    assert int(df["covid"].sum()) == 177
    assert set(df["covid"].unique()) == {0, 1}
    assert df["sex"].sum() == 188  # 188 M -> 1, 91 F -> 0
    assert set(df["sex"].unique()) == {0, 1}
    for col in expected[1:-2]:
        assert df[col].dtype == float, col
    assert df["duplicate_group"].dtype.kind == "i"
    # spot check of the mapping: first data row of the spreadsheet
    first = df.iloc[0]
    assert (first["sex"], first["age"], first["wbc"], first["platelets"], first["covid"]) == (1, 56, 2.9, 128.0, 1)
    assert np.isnan(df.loc[2, "neutrophils"])


def test_osr_bad_cell_becomes_nan_with_warning(osr_loaded):
    df, caught = osr_loaded
    assert np.isnan(df.loc[53, "lymphocytes"])
    assert df["lymphocytes"].isna().sum() == 71  # 70 empty + the "0-4" cell
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    bad = [m for m in messages if "'0-4'" in m]
    assert len(bad) == 1
    assert "Lymphocytes" in bad[0] and "data index 53" in bad[0] and "spreadsheet row 55" in bad[0]


def test_osr_duplicate_groups(osr_loaded):
    df, _ = osr_loaded
    sizes = df["duplicate_group"].value_counts()
    pairs = sizes[sizes > 1]
    assert len(pairs) == 5 and (pairs == 2).all()
    assert df["duplicate_group"].nunique() == 279 - 5
    pair_rows = sorted(df.index[df["duplicate_group"].isin(pairs.index)].tolist())
    assert pair_rows == [2, 8, 10, 14, 18, 77, 102, 107, 134, 144]
    for a, b in [(2, 77), (8, 102), (10, 107), (14, 134), (18, 144)]:
        assert df.loc[a, "duplicate_group"] == df.loc[b, "duplicate_group"]
        left = df.drop(columns="duplicate_group").loc[a]
        right = df.drop(columns="duplicate_group").loc[b]
        assert left.equals(right)


def test_osr_feature_sets(osr_loaded):
    df, _ = osr_loaded
    X, y, g = xy_groups(df, "table1")
    assert list(X.columns) == feature_columns("table1")
    assert len(X.columns) == 9 and "rbc" not in X.columns
    assert len(X) == len(y) == len(g) == 279
    assert (g == df["duplicate_group"].to_numpy()).all()
    assert len(feature_columns("extended")) == 15
    assert set(feature_columns("extended")) - set(feature_columns("table1")) == {
        "crp",
        "ast",
        "alt",
        "alp",
        "ggt",
        "ldh",
    }


def test_feature_columns_unknown_name():
    with pytest.raises(ValueError, match="valid names") as err:
        feature_columns("table2")
    for name in FEATURE_SETS:
        assert name in str(err.value)


# --- Einstein, real file ---------------------------------------------------------------


def test_einstein_rows_and_columns(einstein_path):
    df = load_einstein(einstein_path)
    assert (len(df), int(df["covid"].sum())) == (602, 83)
    assert list(df.columns) == feature_columns("einstein") + ["covid", "duplicate_group"]
    assert df["leukocytes"].notna().all()
    assert df["neutrophils"].isna().sum() == 89
    complete = load_einstein(einstein_path, complete_cbc=True)
    assert (len(complete), int(complete["covid"].sum())) == (513, 75)
    assert complete[feature_columns("einstein")].notna().all().all()


# --- synthetic spreadsheets -----------------------------------------------------------


def _osr_frame(n: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    data = {col: rng.uniform(1, 10, n).round(1) for col in OSR_COLUMNS}
    data["GENDER"] = ["M", "F"] * (n // 2)
    data["AGE"] = list(range(40, 40 + n))
    data["SWAB"] = [0, 1] * (n // 2)
    return pd.DataFrame(data)


def test_missing_column_raises_with_file_and_column(tmp_path):
    path = tmp_path / "no_ldh.xlsx"
    _osr_frame().drop(columns=["LDH", "Basophils"]).to_excel(path, index=False)
    with pytest.raises(ValueError) as err:
        load_osr(path)
    msg = str(err.value)
    assert "no_ldh.xlsx" in msg and "'LDH'" in msg and "'Basophils'" in msg


def test_bad_cell_warns_and_becomes_nan(tmp_path):
    frame = _osr_frame().astype({"CRP": object})
    frame.loc[2, "CRP"] = "n.d."
    path = tmp_path / "bad.xlsx"
    frame.to_excel(path, index=False)
    with pytest.warns(UserWarning, match=r"'n\.d\.'.*'CRP'.*data index 2.*spreadsheet row 4"):
        df = load_osr(path)
    assert np.isnan(df.loc[2, "crp"])
    assert df["crp"].notna().sum() == 3
    assert df["duplicate_group"].nunique() == 4


def test_bad_target_raises(tmp_path):
    frame = _osr_frame()
    frame.loc[1, "SWAB"] = 2
    path = tmp_path / "target.xlsx"
    frame.to_excel(path, index=False)
    with pytest.raises(ValueError, match="SWAB"):
        load_osr(path)


def test_duplicate_groups_treats_nan_as_equal():
    df = pd.DataFrame({"a": [1.0, np.nan, 1.0, np.nan, 2.0], "b": [0, 1, 0, 1, 0]})
    g = duplicate_groups(df, ["a", "b"])
    assert g[0] == g[2] and g[1] == g[3]
    assert len(set(g)) == 3
