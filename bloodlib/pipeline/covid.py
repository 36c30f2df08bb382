"""The pipeline's COVID-19 model: Task 3's classifiers trained on OSR's *scale-free* features.

The honest bridge. Task 3's models read a lab blood count in 10^9/L; a smear image gives cells
counted on a few fields, which are not concentrations (and a user photographs fields with cells,
not random ones). So the pipeline's model is trained on features both sources can compute the
same way (:mod:`bloodlib.pipeline.features`): the differential as fractions, the
neutrophil-to-lymphocyte ratio and platelets per WBC, plus age and sex when the user gives them.
It is evaluated with Task 3's nested CV (:func:`bloodlib.diagnosis.honest.run_honest`, which takes
any feature frame) on the same splits as Task 3's ``table1`` features, so the two AUCs are
directly comparable; the fitted model is tuned and refitted on all of OSR
(:func:`bloodlib.diagnosis.tuning.tune`, Task 3's pipelines from
:func:`bloodlib.diagnosis.models.make_classifier`) and cached next to the trained models.

Assumption (stated in every output): the image-derived fractions and ratios estimate the
patient's blood fractions and ratios. This holds for the differential only if the fields are a
fair sample of the smear's WBCs and the classifier is right; it does *not* hold for platelets per
WBC on fields chosen to show a WBC (BCCD's), which is why every sample lists the features that
fall outside OSR's range.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bloodlib.fsutil import atomic_write_bytes, atomic_write_text
from bloodlib.modelcache import run_key
from bloodlib.pipeline.features import AGE_SEX, osr_features
from bloodlib.pipeline.params import PipelineParams

#: Pseudo-count added to both counts of a ratio estimated from cells counted on images.
COUNT_PSEUDO = 0.5
#: Percentiles of OSR's features that bound the "training range" of each feature.
RANGE_PERCENTILES = (1.0, 99.0)


def load_osr_cohort() -> pd.DataFrame:
    """OSR (``covid_study_v2.xlsx``) via :func:`bloodlib.diagnosis.load_osr`, its one warning silenced."""
    import warnings

    from bloodlib.data import locate
    from bloodlib.diagnosis import load_osr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_osr(locate("covid-osr") / "covid_study_v2.xlsx")


def feature_frame(osr: pd.DataFrame, p: PipelineParams, *, with_age_sex: bool) -> pd.DataFrame:
    """The model's input columns for OSR: ``p.covid_features`` (+ age, sex)."""
    features = osr_features(osr, with_age_sex=with_age_sex)
    return features[list(p.covid_features) + (list(AGE_SEX) if with_age_sex else [])]


def honest_kwargs(p: PipelineParams) -> dict[str, Any]:
    """Keyword arguments of :func:`~bloodlib.diagnosis.honest.run_honest` from the pipeline's parameters."""
    return {
        "classifiers": list(p.covid_cv_classifiers),
        "random_state": p.seed,
        "outer_repeats": p.outer_repeats,
        "outer_folds": p.outer_folds,
        "inner_folds": p.inner_folds,
        "grid_size": p.covid_grid_size,
        "scoring": "roc_auc",
        "ci_level": p.ci_level,
        "threshold": 0.5,
        "n_jobs": p.n_jobs,
    }


def nested_cv(osr: pd.DataFrame, p: PipelineParams, *, progress: bool = True) -> dict[str, Any]:
    """Task 3's nested CV on three feature sets, same splits: scale-free, scale-free + age/sex, and
    Task 3's ``table1`` (absolute counts + age + sex). Returns ``{name: HonestResult}``."""
    from bloodlib.diagnosis import run_honest, xy_groups

    y, groups = osr["covid"].to_numpy(), osr["duplicate_group"].to_numpy()
    sets = {
        "scale-free": feature_frame(osr, p, with_age_sex=False),
        "scale-free + age, sex": feature_frame(osr, p, with_age_sex=True),
        "Task 3 table1 (10^9/L, age, sex)": xy_groups(osr, "table1")[0],
    }
    return {
        name: run_honest(X, y, groups, name=name, progress=progress, **honest_kwargs(p)) for name, X in sets.items()
    }


def cv_table(results: dict[str, Any]) -> pd.DataFrame:
    """One row per feature set and classifier: AUC, accuracy, sensitivity, specificity with CIs."""
    rows = []
    for name, result in results.items():
        for row in result.summary.to_dict("records"):
            rows.append(
                {
                    "features": name,
                    "classifier": row["classifier"],
                    "n": result.n,
                    **{
                        k: row[k]
                        for k in row
                        if k.split("_")[0] in ("auc", "accuracy", "sensitivity", "specificity")
                        and not k.endswith("_sd")
                    },
                }
            )
    return pd.DataFrame(rows)


@dataclass
class CovidModel:
    """The fitted scale-free models and what a prediction needs to know.

    Attributes:
        classifier: the Task 3 classifier name.
        features: model inputs without age and sex.
        base: pipeline on ``features``; ``with_age_sex``: on ``features`` + age + sex.
        ranges: per feature, OSR's 1st and 99th percentile (the training range).
        n, n_positive: OSR rows used.
        key: cache key (parameters + OSR checksum).
        params: the tuned hyper-parameters of each pipeline.
    """

    classifier: str
    features: list[str]
    base: Any
    with_age_sex: Any
    ranges: dict[str, tuple[float, float]]
    n: int
    n_positive: int
    key: str
    params: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What ``run.json`` and ``model.json`` say of the model (no fitted estimators)."""
        return {
            "classifier": self.classifier,
            "features": self.features,
            "n": self.n,
            "n_positive": self.n_positive,
            "key": self.key,
            "params": self.params,
            "ranges": self.ranges,
        }

    def predict(self, values: dict[str, float], *, age: float | None = None, sex: int | None = None) -> dict[str, Any]:
        """P(COVID-19 positive) for one sample's scale-free ``values``.

        Returns ``probability`` (NaN when no WBC differential exists), ``model`` (which of the two
        pipelines), ``out_of_range`` (features outside OSR's 1st-99th percentile) and ``imputed``
        (features undefined for this sample, replaced by OSR's median by the pipeline).
        """
        x = {f: float(values.get(f, math.nan)) for f in self.features}
        fractions = [f for f in self.features if f.endswith("_fraction")]
        if fractions and all(math.isnan(x[f]) for f in fractions):
            return {"probability": math.nan, "model": "", "out_of_range": [], "imputed": list(self.features)}
        use_age_sex = age is not None and sex is not None
        model = self.with_age_sex if use_age_sex else self.base
        row = dict(x, **({"age": float(age), "sex": float(sex)} if use_age_sex else {}))
        columns = self.features + (list(AGE_SEX) if use_age_sex else [])
        frame = pd.DataFrame([[row[c] for c in columns]], columns=columns)
        probability = float(model.predict_proba(frame)[0, 1])
        out = [
            f
            for f in columns
            if not math.isnan(row[f]) and f in self.ranges and not self.ranges[f][0] <= row[f] <= self.ranges[f][1]
        ]
        return {
            "probability": probability,
            "model": f"{self.classifier} on {', '.join(columns)}",
            "out_of_range": out,
            "imputed": [f for f in columns if math.isnan(row[f])],
        }


def _fit(osr: pd.DataFrame, p: PipelineParams, with_age_sex: bool) -> tuple[Any, str]:
    from sklearn.model_selection import StratifiedGroupKFold

    from bloodlib.diagnosis.tuning import format_params, tune

    X = feature_frame(osr, p, with_age_sex=with_age_sex)
    cv = StratifiedGroupKFold(n_splits=p.inner_folds, shuffle=True, random_state=p.seed)
    model, params, _, _ = tune(
        p.covid_classifier,
        X,
        osr["covid"].to_numpy(),
        cv=cv,
        groups=osr["duplicate_group"].to_numpy(),
        grid_size=p.covid_grid_size,
        scoring="roc_auc",
        random_state=p.seed,
    )
    return model, format_params(params)


def fit_covid_model(osr: pd.DataFrame, p: PipelineParams, key: str = "") -> CovidModel:
    """Tune (inner CV, grouped by duplicate records) and refit on all of OSR, with and without age/sex."""
    features = osr_features(osr, with_age_sex=True)
    low, high = RANGE_PERCENTILES
    ranges = {
        c: (float(np.nanpercentile(features[c], low)), float(np.nanpercentile(features[c], high)))
        for c in list(p.covid_features) + list(AGE_SEX)
    }
    base, base_params = _fit(osr, p, False)
    full, full_params = _fit(osr, p, True)
    return CovidModel(
        p.covid_classifier,
        list(p.covid_features),
        base,
        full,
        ranges,
        len(osr),
        int(osr["covid"].sum()),
        key,
        {"base": base_params, "with_age_sex": full_params},
    )


def cache_key(p: PipelineParams) -> str:
    """Key of the fitted model: its parameters, scikit-learn's version and OSR's registry checksums."""
    import sklearn

    from bloodlib.data import DataMismatchError, fingerprint

    try:
        data = {"covid-osr": fingerprint("covid-osr")}
    except DataMismatchError as err:
        raise FileNotFoundError(f"OSR (covid-osr) is not available or does not verify: {err}") from err
    spec = {
        "features": list(p.covid_features),
        "classifier": p.covid_classifier,
        "grid": p.covid_grid_size,
        "inner_folds": p.inner_folds,
        "seed": p.seed,
        "sklearn": sklearn.__version__,
    }
    return run_key(spec, data)


def load_or_fit(p: PipelineParams, root: Path) -> CovidModel:
    """The fitted model from ``<root>/pipeline/covid/<key>/model.pkl``, or fitted on OSR and cached there.

    Raises:
        FileNotFoundError: OSR is not available (and so no key can be computed).
    """
    key = cache_key(p)
    folder = Path(root) / "pipeline" / "covid" / key
    path = folder / "model.pkl"
    if path.is_file():
        with path.open("rb") as handle:
            return pickle.load(handle)
    model = fit_covid_model(load_osr_cohort(), p, key)
    buffer = io.BytesIO()
    pickle.dump(model, buffer)
    try:
        atomic_write_bytes(path, buffer.getvalue())
        atomic_write_text(
            folder / "model.json",
            json.dumps(model.describe(), indent=2) + "\n",
        )
    except OSError:  # a read-only models folder: use the model uncached
        pass
    return model
