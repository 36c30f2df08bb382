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

The cache holds no pickle (a models folder someone hands you must not run code): ``model.json``
records which candidate of the hyper-parameter grid won the tuning (its index in the grid, which
the cache key pins), and loading refits that candidate on OSR -- the same fit
:class:`~sklearn.model_selection.GridSearchCV` made, in milliseconds. A ``model.json`` that is not
such a record is refused with :class:`~bloodlib.modelcache.CorruptModelError` naming the file and
``bloodlib train covid``, which fits the model again.

Assumption (stated in every output): the image-derived fractions and ratios estimate the
patient's blood fractions and ratios. This holds for the differential only if the fields are a
fair sample of the smear's WBCs and the classifier is right; it does *not* hold for platelets per
WBC on fields chosen to show a WBC (BCCD's), which is why every sample lists the features that
fall outside OSR's range.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bloodlib.fsutil import atomic_write_text, file_lock, lock_timeout, move_aside
from bloodlib.modelcache import CorruptModelError, run_key
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
        grid_index: per pipeline (``base``, ``with_age_sex``), the index of its hyper-parameters in
            :func:`~bloodlib.diagnosis.models.param_grid` (None: the defaults, an empty grid).
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
    grid_index: dict[str, int | None] = field(default_factory=dict)

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


def _grid_index(p: PipelineParams, params: dict[str, Any]) -> int | None:
    """Position of the tuned ``params`` in the classifier's grid (None for an empty grid)."""
    from sklearn.model_selection import ParameterGrid

    from bloodlib.diagnosis.models import param_grid

    grid = param_grid(p.covid_classifier, size=p.covid_grid_size)
    if not grid:
        return None
    for index, candidate in enumerate(ParameterGrid(grid)):
        if candidate == params:
            return index
    raise ValueError(f"tuned parameters {params} are not in the {p.covid_grid_size} grid of {p.covid_classifier}")


def _fit(osr: pd.DataFrame, p: PipelineParams, with_age_sex: bool) -> tuple[Any, str, int | None]:
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
    return model, format_params(params), _grid_index(p, params)


def _refit(osr: pd.DataFrame, p: PipelineParams, with_age_sex: bool, index: int | None) -> Any:
    """The pipeline :func:`_fit` chose (grid candidate ``index``), fitted on all of OSR again."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import ParameterGrid
    from threadpoolctl import threadpool_limits

    from bloodlib.diagnosis.models import make_classifier, param_grid

    model = make_classifier(p.covid_classifier, random_state=p.seed)
    if index is not None:
        model.set_params(**ParameterGrid(param_grid(p.covid_classifier, size=p.covid_grid_size))[index])
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(feature_frame(osr, p, with_age_sex=with_age_sex), osr["covid"].to_numpy())


def fit_covid_model(osr: pd.DataFrame, p: PipelineParams, key: str = "") -> CovidModel:
    """Tune (inner CV, grouped by duplicate records) and refit on all of OSR, with and without age/sex."""
    base, base_params, base_index = _fit(osr, p, False)
    full, full_params, full_index = _fit(osr, p, True)
    return CovidModel(
        p.covid_classifier,
        list(p.covid_features),
        base,
        full,
        _ranges(osr, p),
        len(osr),
        int(osr["covid"].sum()),
        key,
        {"base": base_params, "with_age_sex": full_params},
        {"base": base_index, "with_age_sex": full_index},
    )


def _ranges(osr: pd.DataFrame, p: PipelineParams) -> dict[str, tuple[float, float]]:
    features = osr_features(osr, with_age_sex=True)
    low, high = RANGE_PERCENTILES
    return {
        c: (float(np.nanpercentile(features[c], low)), float(np.nanpercentile(features[c], high)))
        for c in list(p.covid_features) + list(AGE_SEX)
    }


#: ``model.json``'s format; part of the cache key (older caches held a pickle and are never read).
MODEL_FORMAT = "grid-index-refit-1"


def model_record(model: CovidModel) -> dict[str, Any]:
    """What ``model.json`` holds: :meth:`CovidModel.describe` and the grid index of each pipeline."""
    return {"format": MODEL_FORMAT, **model.describe(), "grid_index": model.grid_index}


def model_from_record(record: Any, osr: pd.DataFrame, p: PipelineParams, key: str, path: Path) -> CovidModel:
    """The model ``model.json`` (``record``, read from ``path``) describes, refitted on ``osr``.

    Raises:
        CorruptModelError: ``record`` is not a model record of these parameters (names ``path``).
    """
    from sklearn.model_selection import ParameterGrid

    from bloodlib.diagnosis.models import param_grid

    grid = param_grid(p.covid_classifier, size=p.covid_grid_size)
    size = len(ParameterGrid(grid)) if grid else 0
    try:
        index = record["grid_index"]
        problems = [
            name
            for name, ok in (
                ("format", record.get("format") == MODEL_FORMAT),
                ("key", record.get("key") == key),
                ("classifier", record.get("classifier") == p.covid_classifier),
                ("features", record.get("features") == list(p.covid_features)),
                (
                    "grid_index",
                    set(index) == {"base", "with_age_sex"}
                    and all((i is None and not size) or (type(i) is int and 0 <= i < size) for i in index.values()),
                ),
                ("params", isinstance(record.get("params"), dict)),
            )
            if not ok
        ]
    except (TypeError, KeyError, AttributeError):
        problems = ["not a model record"]
    if problems:
        raise CorruptModelError(
            f"{path} is damaged or not this model's record ({', '.join(problems)} wrong)", path, reason=str(path)
        )
    return CovidModel(
        p.covid_classifier,
        list(p.covid_features),
        _refit(osr, p, False, index["base"]),
        _refit(osr, p, True, index["with_age_sex"]),
        _ranges(osr, p),
        len(osr),
        int(osr["covid"].sum()),
        key,
        {k: str(v) for k, v in record["params"].items()},
        dict(index),
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
        "format": MODEL_FORMAT,
    }
    return run_key(spec, data)


def read_model(path: Path, osr: pd.DataFrame, p: PipelineParams, key: str) -> CovidModel:
    """The cached model at ``path`` (``model.json``), refitted on ``osr``.

    Raises:
        CorruptModelError: the file is not valid JSON or not this model's record; the message names
            it and ``bloodlib train covid``.
    """
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return model_from_record(record, osr, p, key, path)
    except (UnicodeDecodeError, ValueError, CorruptModelError) as err:
        reason = f"{path} is damaged ({err})" if not isinstance(err, CorruptModelError) else str(err)
        raise CorruptModelError(
            f"{reason}; rebuild it with `bloodlib train covid` (it refits the COVID-19 model on OSR)",
            path,
            reason=reason,
        ) from None


def load_or_fit(p: PipelineParams, root: Path, *, rebuild_damaged: bool = False) -> CovidModel:
    """The model from ``<root>/pipeline/covid/<key>/model.json`` (refitted on OSR from its record), or
    tuned and fitted on OSR and cached there (holding the key's lock, so two processes fit it once).

    Args:
        rebuild_damaged: move a damaged ``model.json`` aside (with a warning) and fit again, instead of
            raising.

    Raises:
        FileNotFoundError: OSR is not available (and so no key can be computed).
        CorruptModelError: ``model.json`` is damaged and ``rebuild_damaged`` is False.
    """
    key = cache_key(p)
    folder = Path(root) / "pipeline" / "covid" / key
    path = folder / "model.json"
    if path.is_file():
        try:
            return read_model(path, load_osr_cohort(), p, key)
        except CorruptModelError as err:
            if not rebuild_damaged:
                raise
            import warnings

            aside = move_aside(path, "corrupt")
            warnings.warn(f"{err.reason}; moved to {aside.name}, fitting the COVID-19 model again", stacklevel=2)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(
                file_lock(
                    folder.with_name(f".{key}.lock"), what=f"fitting the COVID-19 model {key}", timeout=lock_timeout()
                )
            )
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            return fit_covid_model(load_osr_cohort(), p, key)  # a read-only models folder: used uncached
        if path.is_file():  # fitted by another process while this one waited
            return read_model(path, load_osr_cohort(), p, key)
        model = fit_covid_model(load_osr_cohort(), p, key)
        atomic_write_text(path, json.dumps(model_record(model), indent=2) + "\n")
        return model


def train_cli(profile: str, root: Path) -> int:
    """``bloodlib train covid --profile <profile>``: the COVID-19 model of ``bloodlib analyze`` into the model
    cache (a damaged cached copy is moved aside and fitted again)."""
    from bloodlib.modelcache import models_root
    from bloodlib.params import load_params

    p = load_params("04_pipeline", profile, root)
    model = load_or_fit(p, models_root(), rebuild_damaged=True)
    print(f"COVID-19 model ({model.classifier}, {model.params}): key {model.key}, fitted on {model.n} OSR records")
    return 0
