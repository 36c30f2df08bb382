"""Scale-free blood-count features: the one definition shared by the lab data and the images.

A smear image gives *counts of cells seen*, not concentrations in 10^9/L, and the fields a user
photographs are not a random sample of the slide. What can be computed the same way from a lab
blood count (OSR) and from cells counted on images are ratios that do not depend on the volume:

- the WBC differential as fractions of the four subtypes the classifier knows
  (neutrophils, lymphocytes, monocytes, eosinophils; basophils, which the classifier never
  predicts, are left out of the denominator on both sides);
- the neutrophil-to-lymphocyte ratio (NLR, undefined without lymphocytes);
- platelets per WBC (undefined without WBCs).

The logarithms of the two ratios are offered for models (the ratios are heavily skewed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The WBC subtypes of the differential, in the classifier's class order.
SUBTYPES: tuple[str, ...] = ("eosinophil", "lymphocyte", "monocyte", "neutrophil")

#: Every feature :func:`scale_free_features` computes.
SCALE_FREE_FEATURES: tuple[str, ...] = (
    "neutrophil_fraction",
    "lymphocyte_fraction",
    "monocyte_fraction",
    "eosinophil_fraction",
    "nlr",
    "platelets_per_wbc",
    "log_nlr",
    "log_platelets_per_wbc",
)

#: Demographic features added when the user gives them (OSR: ``sex`` 1 = male).
AGE_SEX: tuple[str, ...] = ("age", "sex")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    out[~np.isfinite(out)] = np.nan
    return out


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(np.asarray(x, dtype=float))
    out[~np.isfinite(out)] = np.nan
    return out


def scale_free_features(
    *,
    neutrophils: np.ndarray,
    lymphocytes: np.ndarray,
    monocytes: np.ndarray,
    eosinophils: np.ndarray,
    platelets: np.ndarray,
    wbc: np.ndarray,
    pseudo_count: float = 0.0,
) -> pd.DataFrame:
    """The :data:`SCALE_FREE_FEATURES` of each row (NaN where undefined).

    Inputs are arrays of equal length in any one unit (10^9/L from a lab, or cells counted on
    images). ``wbc`` is the total WBC (lab: including basophils; images: every WBC detected).
    ``pseudo_count`` is added to both terms of the two ratios: for cells counted on a few images,
    ``(N + 0.5) / (L + 0.5)`` estimates the ratio without becoming infinite or zero when one
    count is zero (lab values need none: 0).
    """
    neu, lym, mono, eos = (np.asarray(v, dtype=float) for v in (neutrophils, lymphocytes, monocytes, eosinophils))
    four = neu + lym + mono + eos
    nlr = _ratio(neu + pseudo_count, lym + pseudo_count)
    per_wbc = _ratio(np.asarray(platelets, dtype=float) + pseudo_count, np.asarray(wbc, dtype=float) + pseudo_count)
    return pd.DataFrame(
        {
            "neutrophil_fraction": _ratio(neu, four),
            "lymphocyte_fraction": _ratio(lym, four),
            "monocyte_fraction": _ratio(mono, four),
            "eosinophil_fraction": _ratio(eos, four),
            "nlr": nlr,
            "platelets_per_wbc": per_wbc,
            "log_nlr": _log(nlr),
            "log_platelets_per_wbc": _log(per_wbc),
        }
    )


def osr_features(osr: pd.DataFrame, *, with_age_sex: bool) -> pd.DataFrame:
    """Scale-free features of the OSR cohort (a frame from :func:`bloodlib.diagnosis.load_osr`)."""
    out = scale_free_features(
        neutrophils=osr["neutrophils"].to_numpy(),
        lymphocytes=osr["lymphocytes"].to_numpy(),
        monocytes=osr["monocytes"].to_numpy(),
        eosinophils=osr["eosinophils"].to_numpy(),
        platelets=osr["platelets"].to_numpy(),
        wbc=osr["wbc"].to_numpy(),
    )
    if with_age_sex:
        out["age"] = osr["age"].to_numpy(dtype=float)
        out["sex"] = osr["sex"].to_numpy(dtype=float)
    return out
