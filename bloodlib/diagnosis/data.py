"""Loading the two COVID-19 blood-count cohorts into canonical, snake_case tables.

Two public cohorts are used (see ``SOURCE.md`` next to each file):

- **OSR** (IRCCS Ospedale San Raffaele, Milan; Brinati et al. 2020, Zenodo 3886927),
  ``covid-osr/covid_study_v2.xlsx``: 279 patients, routine blood exams in absolute
  units, target ``SWAB`` (RT-PCR, 1 = positive; 177 positives).
- **Einstein** (Hospital Israelita Albert Einstein, Sao Paulo; Kaggle
  ``einsteindata4u/covid19``), ``covid-einstein/dataset.xlsx``: 5,644 patients, lab
  values already z-scored, target ``SARS-Cov-2 exam result``.

Feature sets (lists of canonical column names) are defined here too, see
:func:`feature_columns`.
"""

from __future__ import annotations

import warnings
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

#: OSR v2 spreadsheet header -> canonical column name.
OSR_COLUMNS: dict[str, str] = {
    "GENDER": "sex",
    "AGE": "age",
    "WBC": "wbc",
    "Platelets": "platelets",
    "Neutrophils": "neutrophils",
    "Lymphocytes": "lymphocytes",
    "Monocytes": "monocytes",
    "Eosinophils": "eosinophils",
    "Basophils": "basophils",
    "CRP": "crp",
    "AST": "ast",
    "ALT": "alt",
    "ALP": "alp",
    "GGT": "ggt",
    "LDH": "ldh",
    "SWAB": "covid",
}

#: Einstein spreadsheet header (whitespace-normalised) -> canonical column name.
#: The ten CBC columns are the count-type CBC values: the blood features of the paper's
#: Table 1 (leukocytes = WBC, red blood cells, platelets and the five differential counts)
#: plus hemoglobin and hematocrit. Left out: the derived red-cell indices (MCV, MCH, MCHC,
#: RDW) and the mean platelet volume. Rows with all ten present: 513 (75 positive),
#: the figure quoted in ``covid-einstein/SOURCE.md``.
EINSTEIN_COLUMNS: dict[str, str] = {
    "Patient age quantile": "age_quantile",
    "Leukocytes": "leukocytes",
    "Red blood Cells": "red_blood_cells",
    "Hemoglobin": "hemoglobin",
    "Hematocrit": "hematocrit",
    "Platelets": "platelets",
    "Neutrophils": "neutrophils",
    "Lymphocytes": "lymphocytes",
    "Monocytes": "monocytes",
    "Eosinophils": "eosinophils",
    "Basophils": "basophils",
    "SARS-Cov-2 exam result": "covid",
}

TARGET = "covid"
GROUP = "duplicate_group"

_TABLE1 = ["sex", "age", "wbc", "platelets", "neutrophils", "lymphocytes", "monocytes", "eosinophils", "basophils"]
_BIOCHEMISTRY = ["crp", "ast", "alt", "alp", "ggt", "ldh"]
_EINSTEIN_CBC = [
    "leukocytes",
    "red_blood_cells",
    "hemoglobin",
    "hematocrit",
    "platelets",
    "neutrophils",
    "lymphocytes",
    "monocytes",
    "eosinophils",
    "basophils",
]

#: Named feature sets. ``table1``: the paper's Table 1 features that exist in the public
#: OSR release (Table 1 also lists RBC, which the release does not have).
#: ``extended``: table1 + the biochemistry of Brinati et al. (CRP, AST, ALT, ALP, GGT, LDH).
#: ``einstein``: age quantile + the ten CBC columns of the Einstein cohort.
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "table1": tuple(_TABLE1),
    "extended": tuple(_TABLE1 + _BIOCHEMISTRY),
    "einstein": tuple(["age_quantile"] + _EINSTEIN_CBC),
}


def feature_columns(name: str) -> list[str]:
    """The canonical column names of feature set ``name`` (see :data:`FEATURE_SETS`).

    Raises:
        ValueError: for an unknown name; the message lists the valid names.
    """
    if name not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {name!r}; valid names: {sorted(FEATURE_SETS)}")
    return list(FEATURE_SETS[name])


def _check_columns(df: pd.DataFrame, required: list[str], path: Path) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {missing}; found {list(df.columns)}")


def _to_numeric_with_warnings(
    df: pd.DataFrame, columns: list[str], path: Path, headers: dict[str, str]
) -> pd.DataFrame:
    """Coerce ``columns`` to float; every non-numeric cell becomes NaN with a warning.

    The warning names the 0-based data index, the 1-based spreadsheet row (header = row 1)
    and the column (spreadsheet header and canonical name), and quotes the bad value.
    """
    out = df.copy()
    for col in columns:
        raw = out[col]
        num = pd.to_numeric(raw, errors="coerce")
        bad = num.isna() & raw.notna()
        for idx in raw.index[bad]:
            pos = out.index.get_loc(idx)
            warnings.warn(
                f"{path.name}: non-numeric value {raw.loc[idx]!r} in column {headers.get(col, col)!r} ({col!r}) at data index {pos} "
                f"(0-based) = spreadsheet row {pos + 2} (1-based, header is row 1); set to NaN",
                UserWarning,
                stacklevel=3,
            )
        out[col] = num.astype(float)
    return out


def duplicate_groups(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Group ids such that rows identical on ``columns`` (NaN == NaN) share an id.

    Ids are consecutive ints 0..n_groups-1 in order of first appearance; a row without
    an exact duplicate gets its own id. Cross-validation with these groups keeps every
    set of duplicates in one fold.
    """
    key = df[columns].astype(object).where(df[columns].notna(), "<NA>").astype(str).agg("\x1f".join, axis=1)
    codes, _ = pd.factorize(key, sort=False)
    return codes.astype(int)


def load_osr(path: str | PathLike[str]) -> pd.DataFrame:
    """Read the OSR cohort (``covid_study_v2.xlsx``) into canonical columns.

    Columns: ``sex`` (1 = male ``M``, 0 = female ``F``), ``age``, ``wbc``, ``platelets``,
    ``neutrophils``, ``lymphocytes``, ``monocytes``, ``eosinophils``, ``basophils``,
    ``crp``, ``ast``, ``alt``, ``alp``, ``ggt``, ``ldh`` (all float, absolute units as
    released), ``covid`` (int 0/1, from ``SWAB``) and ``duplicate_group`` (int).

    Notes:
        - The public release has **no RBC column**, although the paper's Table 1 lists
          red blood cells; every OSR feature set here therefore lacks RBC.
        - Non-numeric cells (the release has one, ``"0-4"`` in Lymphocytes) become NaN
          with a :class:`UserWarning` naming the data index (0-based), the spreadsheet row
          (1-based, header = row 1), the column and the value.
        - Five records appear twice with identical features and target (data indices
          2/77, 8/102, 10/107, 14/134, 18/144). Each pair shares a ``duplicate_group`` id,
          every other row has a unique id, so grouped CV keeps each pair in one fold.

    Raises:
        ValueError: if a required column is missing (message names the file and the
            columns), or ``GENDER``/``SWAB`` hold values other than M/F and 0/1.
    """
    path = Path(path)
    raw = pd.read_excel(path)
    raw.columns = [str(c).strip() for c in raw.columns]
    _check_columns(raw, list(OSR_COLUMNS), path)
    df = raw[list(OSR_COLUMNS)].rename(columns=OSR_COLUMNS).reset_index(drop=True)

    sex = df["sex"].astype(str).str.strip().str.upper()
    bad_sex = sorted(set(sex) - {"M", "F"})
    if bad_sex:
        raise ValueError(f"{path}: GENDER must be M or F, found {bad_sex}")
    df["sex"] = (sex == "M").astype(int)

    numeric = [c for c in df.columns if c not in ("sex", TARGET)]
    df = _to_numeric_with_warnings(df, numeric, path, {v: k for k, v in OSR_COLUMNS.items()})

    target = pd.to_numeric(df[TARGET], errors="coerce")
    if target.isna().any() or not set(target.unique()) <= {0, 1}:
        raise ValueError(f"{path}: SWAB must be 0/1, found {sorted(map(str, df[TARGET].unique()))}")
    df[TARGET] = target.astype(int)
    df[GROUP] = duplicate_groups(df, [c for c in df.columns if c != GROUP])
    return df


def load_einstein(path: str | PathLike[str], *, complete_cbc: bool = False) -> pd.DataFrame:
    """Read the Einstein cohort (``dataset.xlsx``) into canonical columns.

    Columns: ``age_quantile`` (0-19), the ten CBC columns ``leukocytes``,
    ``red_blood_cells``, ``hemoglobin``, ``hematocrit``, ``platelets``, ``neutrophils``,
    ``lymphocytes``, ``monocytes``, ``eosinophils``, ``basophils`` (already z-scored by
    the data provider), ``covid`` (1 = "positive") and ``duplicate_group`` (int, exact
    duplicates on features + target share an id; there are none in the release).

    Rows: only patients with a blood count (``leukocytes`` present): 602 rows,
    83 positive. 89 of them lack the differential (neutrophils); those are imputed
    inside the model pipelines. With ``complete_cbc=True`` only rows with all ten CBC
    columns are kept: 513 rows, 75 positive.

    Raises:
        ValueError: if a required column is missing (message names the file and the
            columns) or the target holds values other than positive/negative.
    """
    path = Path(path)
    raw = pd.read_excel(path)
    raw.columns = [" ".join(str(c).replace("\xa0", " ").split()) for c in raw.columns]
    _check_columns(raw, list(EINSTEIN_COLUMNS), path)
    df = raw[list(EINSTEIN_COLUMNS)].rename(columns=EINSTEIN_COLUMNS)

    label = df[TARGET].astype(str).str.strip().str.lower()
    bad = sorted(set(label) - {"positive", "negative"})
    if bad:
        raise ValueError(f"{path}: 'SARS-Cov-2 exam result' must be positive/negative, found {bad}")
    df[TARGET] = (label == "positive").astype(int)
    numeric = [c for c in df.columns if c != TARGET]
    df = _to_numeric_with_warnings(df, numeric, path, {v: k for k, v in EINSTEIN_COLUMNS.items()})

    keep = df["leukocytes"].notna()
    if complete_cbc:
        keep &= df[_EINSTEIN_CBC].notna().all(axis=1)
    df = df.loc[keep].reset_index(drop=True)
    df[GROUP] = duplicate_groups(df, [c for c in df.columns if c != GROUP])
    return df


def xy_groups(df: pd.DataFrame, feature_set: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(X, y, groups) of a loaded cohort for feature set ``feature_set``.

    ``groups`` is the ``duplicate_group`` column, or one group per row if absent.
    """
    cols = feature_columns(feature_set)
    _check_columns(df, cols + [TARGET], Path("<dataframe>"))
    groups = df[GROUP].to_numpy() if GROUP in df.columns else np.arange(len(df))
    return df[cols].astype(float), df[TARGET].to_numpy().astype(int), groups
