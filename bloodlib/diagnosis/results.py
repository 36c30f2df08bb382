"""Running everything from parameters, comparing with the paper, and exporting metrics.

- :func:`load_cohorts`, :func:`cohort_overview`, :func:`missing_values`: the data and its tables.
- :func:`run_covid_diagnosis`: faithful protocol + honest protocol on every cohort.
- :func:`faithful_text`, :func:`table4_display`: the faithful protocol's sizes and Table 4.
- :func:`compare_with_paper`, :func:`paper_vs_ours`: the paper's Table 4
  (``bloodlib.paper.paper_results``) side by side.
- :func:`honest_table`, :func:`honest_text`, :func:`best_oof`: the honest protocol per cohort.
- :func:`metrics_dict`: JSON-serialisable nested dict for ``metrics.json``.
- :func:`summary_rows`: headline rows ``{"metric", "paper", "ours", "note"}`` for the report index.

No metric value is hard-coded here: the paper's numbers come from the YAML file (or dict)
passed in, ours from the results.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bloodlib.diagnosis.data import feature_columns, load_einstein, load_osr
from bloodlib.diagnosis.faithful import CLASS_NAMES, FaithfulResult, run_faithful
from bloodlib.diagnosis.honest import METRICS, HonestResult, run_honest_cohorts
from bloodlib.diagnosis.models import DISPLAY_NAMES
from bloodlib.diagnosis.params import CovidDiagnosisParams

#: Our classifier name -> key in the ``task3_covid`` section of ``paper_results.yaml``.
PAPER_KEYS: dict[str, str] = {
    "logistic_regression": "logistic_regression",
    "knn": "knn_10",
    "linear_svm": "linear_svm",
    "rbf_svm": "rbf_svm",
    "gaussian_process": "gaussian_process",
    "decision_tree": "decision_tree",
    "random_forest": "random_forest",
    "mlp": "mlp_20_40_20",
    "adaboost": "adaboost",
}


def load_cohorts(params: CovidDiagnosisParams) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """``({"OSR": osr[, "Einstein": einstein]}, warnings)``: the cohorts from the local data (Einstein
    only when ``params.run_einstein``) and the messages of the warnings OSR's loader gave (e.g. the
    text cell that becomes missing), for the notebook to print."""
    from bloodlib.data import locate

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cohorts = {"OSR": load_osr(locate("covid-osr") / "covid_study_v2.xlsx")}
    if params.run_einstein:
        path = locate("covid-einstein") / "dataset.xlsx"
        cohorts["Einstein"] = load_einstein(path, complete_cbc=params.einstein_complete_cbc)
    return cohorts, [str(warning.message) for warning in caught]


def cohort_overview(cohorts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per cohort: patients, positives, negatives and duplicated records."""
    return pd.DataFrame(
        {
            name: {
                "patients": len(df),
                "positive": int(df["covid"].sum()),
                "negative": int((df["covid"] == 0).sum()),
                "duplicate records": int(len(df) - df["duplicate_group"].nunique()),
            }
            for name, df in cohorts.items()
        }
    ).T


def missing_values(cohort: pd.DataFrame) -> pd.DataFrame:
    """Missing values per feature of the ``extended`` set, and whether the feature is in ``table1``."""
    extended, table1 = feature_columns("extended"), feature_columns("table1")
    return pd.DataFrame({"missing values": cohort[extended].isna().sum(), "in table1": [c in table1 for c in extended]})


@dataclass
class CovidDiagnosisResults:
    """Everything the notebook shows: the faithful result and the honest results by cohort."""

    faithful: FaithfulResult
    honest: dict[str, HonestResult]


def run_covid_diagnosis(
    params: CovidDiagnosisParams, *, osr: pd.DataFrame, einstein: pd.DataFrame | None
) -> CovidDiagnosisResults:
    """Faithful protocol on ``osr``, honest protocol on OSR (each feature set) and Einstein.

    ``einstein`` is ignored (and may be None) when ``params.run_einstein`` is false.
    """
    if params.run_einstein and einstein is None:
        raise ValueError("params.run_einstein is true but no Einstein cohort was given")
    faithful = run_faithful(osr, **params.faithful_kwargs())
    honest = run_honest_cohorts(
        osr=osr,
        einstein=einstein if params.run_einstein else None,
        osr_feature_sets=list(params.honest_feature_sets),
        **params.honest_kwargs(),
    )
    return CovidDiagnosisResults(faithful=faithful, honest=honest)


def faithful_text(faithful: FaithfulResult, paper: dict[str, Any]) -> str:
    """One line: the faithful protocol's complete cases beside the paper's usable samples, and the split.

    ``paper`` is ``bloodlib.paper.paper_results("task3_covid")``.
    """
    return (
        f"faithful protocol: {faithful.n_complete} complete cases of {faithful.n_rows}{_paper_samples(paper)}; "
        f"train {faithful.n_train} {faithful.train_counts}, test {faithful.n_test} {faithful.test_counts}"
    )


def _paper_samples(paper: dict[str, Any]) -> str:
    """`` (paper: 201)``: the paper's usable samples, or nothing where ``paper`` does not give them."""
    n = paper.get("usable_samples")
    return "" if n is None else f" (paper: {n})"


def table4_display(faithful: FaithfulResult) -> pd.DataFrame:
    """The faithful Table 4 indexed by classifier (display name) and class, as the paper lays it out."""
    return faithful.table4.drop(columns=["classifier"]).set_index(["display_name", "class"])


def compare_with_paper(faithful: FaithfulResult, paper: dict[str, Any]) -> pd.DataFrame:
    """Table 4 side by side: one row per classifier, class and metric, ``paper`` vs ``ours``.

    Metrics: per class precision/recall/F1, and (class ``"all"``) accuracy and
    false-negative %. ``paper`` is NaN where the paper has no value.
    """
    rows = []
    t4 = faithful.table4.set_index(["classifier", "class"])
    for name in faithful.summary["classifier"]:
        ref = paper.get(PAPER_KEYS[name]) or {}
        for metric in ("accuracy", "false_negative_pct"):
            rows.append(_cmp_row(name, "all", metric, ref.get(metric), t4.loc[(name, "negative"), metric]))
        for cls in CLASS_NAMES:
            for metric in ("precision", "recall", "f1"):
                rows.append(_cmp_row(name, cls, metric, (ref.get(cls) or {}).get(metric), t4.loc[(name, cls), metric]))
    out = pd.DataFrame(rows)
    out["difference"] = out["ours"] - out["paper"]
    return out


def paper_vs_ours(comparison: pd.DataFrame) -> pd.DataFrame:
    """The overall rows (accuracy, false negatives %) of :func:`compare_with_paper`, one row per
    classifier, the paper's and our value of each metric side by side."""
    overall = comparison[comparison["class"] == "all"]
    return overall.pivot(index="display_name", columns="metric", values=["paper", "ours"])


def honest_table(result: HonestResult) -> pd.DataFrame:
    """Mean and CI of AUC, accuracy, sensitivity and specificity per classifier (display names)."""
    summary = result.summary.set_index("classifier").rename(index=DISPLAY_NAMES)
    metrics = ("auc", "accuracy", "sensitivity", "specificity")
    return summary[[f"{m}_{s}" for m in metrics for s in ("mean", "ci_low", "ci_high")]]


def honest_text(cohort: str, result: HonestResult) -> str:
    """One Markdown line: the cohort's size and the nested CV's folds and grid."""
    st = result.settings
    return (
        f"**{cohort}** — n={result.n} ({result.n_positive} positive), "
        f"{st['outer_repeats']}×{st['outer_folds']} outer folds, "
        f"{st['inner_folds']} inner folds, grid `{st['grid_size']}`"
    )


def best_oof(result: HonestResult, metric: str = "auc") -> tuple[str, np.ndarray, np.ndarray]:
    """``(classifier, y_true, P(positive))``: the pooled out-of-fold predictions of the classifier
    with the best mean ``metric`` (what the calibration figure draws)."""
    best = result.best_classifier(metric)
    oof = result.oof_for(best)
    return best, oof["y_true"].to_numpy(), oof["proba"].to_numpy()


def _cmp_row(name: str, cls: str, metric: str, paper: Any, ours: Any) -> dict[str, Any]:
    return {
        "classifier": name,
        "display_name": DISPLAY_NAMES[name],
        "class": cls,
        "metric": metric,
        "paper": float(paper) if paper is not None else float("nan"),
        "ours": float(ours),
    }


def _clean(value: Any) -> Any:
    """Python scalars for JSON: numpy numbers -> float/int, NaN -> None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def metrics_dict(faithful: FaithfulResult | None, honest: dict[str, HonestResult]) -> dict[str, Any]:
    """JSON-serialisable metrics: ``{"faithful": {set: {clf: {...}}}, "honest": {cohort: {clf: {...}}}, "data": {...}}``.

    Faithful entries: accuracy, auc, false_negative_pct, tn/fp/fn/tp, best_params and per class
    (``negative``/``positive``) precision, recall, f1, support. Honest entries: for each metric
    ``{"mean", "sd", "ci_low", "ci_high"}``, plus ``n_outer_folds``, ``ci_method``, ``ci_level``.
    ``data`` holds sizes and settings per protocol/cohort.
    """
    out: dict[str, Any] = {"faithful": {}, "honest": {}, "data": {}}
    if faithful is not None:
        per_clf = {}
        t4 = faithful.table4.set_index(["classifier", "class"])
        for _, s in faithful.summary.iterrows():
            entry = {k: s[k] for k in ("accuracy", "auc", "false_negative_pct", "tn", "fp", "fn", "tp", "best_params")}
            for cls in CLASS_NAMES:
                entry[cls] = {m: t4.loc[(s["classifier"], cls), m] for m in ("precision", "recall", "f1", "support")}
            per_clf[s["classifier"]] = entry
        out["faithful"][faithful.feature_set] = per_clf
        out["data"][f"faithful_{faithful.feature_set}"] = {
            "n_rows": faithful.n_rows,
            "n_complete": faithful.n_complete,
            "n_train": faithful.n_train,
            "n_test": faithful.n_test,
            "train_counts": faithful.train_counts,
            "test_counts": faithful.test_counts,
            "n_duplicate_pairs_split": faithful.n_duplicate_pairs_split,
        }
    for cohort, res in honest.items():
        per_clf = {}
        for _, s in res.summary.iterrows():
            entry: dict[str, Any] = {
                m: {k: s[f"{m}_{k}"] for k in ("mean", "sd", "ci_low", "ci_high")} for m in METRICS
            }
            entry.update({"n_outer_folds": s["n_outer_folds"], "ci_method": s["ci_method"], "ci_level": s["ci_level"]})
            per_clf[s["classifier"]] = entry
        out["honest"][cohort] = per_clf
        out["data"][f"honest_{cohort}"] = {"n": res.n, "n_positive": res.n_positive, **res.settings}
    return _clean(out)


def summary_rows(
    faithful: FaithfulResult | None, honest: dict[str, HonestResult], *, paper: dict[str, Any]
) -> list[dict[str, Any]]:
    """Headline rows ``{"metric": str, "paper": float | None, "ours": float, "note": str}``.

    ``paper`` is ``bloodlib.paper.paper_results("task3_covid")``. Rows: faithful accuracy of the
    Gaussian process and 10-NN and the GP false-negative %, the best faithful accuracy, and
    per honest cohort the best mean nested-CV AUC with its CI (no paper value: the paper
    reports no AUC), plus the honest GP accuracy on ``osr_table1`` against the paper's.
    """
    rows: list[dict[str, Any]] = []

    def paper_value(name: str, metric: str) -> float | None:
        value = (paper.get(PAPER_KEYS[name]) or {}).get(metric)
        return float(value) if value is not None else None

    if faithful is not None:
        s = faithful.summary.set_index("classifier")
        note = (
            f"faithful 75/25 split, complete cases n={faithful.n_complete}{_paper_samples(paper)}, "
            f"n_test={faithful.n_test}; grid search on the training part (the paper tuned on the test set)"
        )
        for name in ("gaussian_process", "knn"):
            if name in s.index:
                rows.append(
                    {
                        "metric": f"Task 3 faithful: {DISPLAY_NAMES[name]} accuracy ({faithful.feature_set})",
                        "paper": paper_value(name, "accuracy"),
                        "ours": float(s.loc[name, "accuracy"]),
                        "note": note,
                    }
                )
        if "gaussian_process" in s.index:
            rows.append(
                {
                    "metric": f"Task 3 faithful: {DISPLAY_NAMES['gaussian_process']} false negatives (% of test set)",
                    "paper": paper_value("gaussian_process", "false_negative_pct"),
                    "ours": float(s.loc["gaussian_process", "false_negative_pct"]),
                    "note": note,
                }
            )
        best = str(s["accuracy"].idxmax())
        paper_best = max((v for n in s.index if (v := paper_value(n, "accuracy")) is not None), default=None)
        rows.append(
            {
                "metric": f"Task 3 faithful: best accuracy over classifiers ({faithful.feature_set})",
                "paper": paper_best,
                "ours": float(s.loc[best, "accuracy"]),
                "note": f"ours: {DISPLAY_NAMES[best]}; " + note,
            }
        )
    for cohort, res in honest.items():
        best = res.best_classifier("auc")
        s = res.summary.set_index("classifier").loc[best]
        st = res.settings
        rows.append(
            {
                "metric": f"Task 3 honest: best nested-CV AUC ({cohort})",
                "paper": None,
                "ours": float(s["auc_mean"]),
                "note": (
                    f"{DISPLAY_NAMES[best]}; {int(100 * s['ci_level'])}% CI [{s['auc_ci_low']:.3f}, "
                    f"{s['auc_ci_high']:.3f}] ({s['ci_method']}); n={res.n} ({res.n_positive} positive); "
                    f"{st['outer_repeats']}x{st['outer_folds']} outer, {st['inner_folds']} inner folds, "
                    f"grid {st['grid_size']}"
                ),
            }
        )
    if "osr_table1" in honest and "gaussian_process" in honest["osr_table1"].summary["classifier"].values:
        s = honest["osr_table1"].summary.set_index("classifier").loc["gaussian_process"]
        rows.append(
            {
                "metric": "Task 3 honest: Gaussian Process Classifier accuracy (osr_table1, nested CV)",
                "paper": paper_value("gaussian_process", "accuracy"),
                "ours": float(s["accuracy_mean"]),
                "note": (
                    f"{int(100 * s['ci_level'])}% CI [{s['accuracy_ci_low']:.3f}, {s['accuracy_ci_high']:.3f}]; "
                    f"all n={honest['osr_table1'].n} rows, imputation inside the pipeline, duplicates kept in one fold"
                ),
            }
        )
    return _clean(rows)
