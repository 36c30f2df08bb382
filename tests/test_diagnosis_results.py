"""Parameter profiles, metrics export, paper comparison and figures (synthetic data, no files)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml

from bloodlib.diagnosis import (
    CLASSIFIERS,
    CovidDiagnosisParams,
    calibration_figure,
    compare_with_paper,
    confusion_matrix_figure,
    mean_roc,
    metrics_dict,
    roc_figure,
    run_faithful,
    run_honest,
    summary_rows,
)
from bloodlib.params import build
from tests.diagnosis_helpers import synthetic_cohort

PARAMS_DIR = Path(__file__).resolve().parents[1] / "params"
FIELDS = [f.name for f in dataclasses.fields(CovidDiagnosisParams)]


def _profile(name: str) -> dict:
    return yaml.safe_load((PARAMS_DIR / name / "03_covid_diagnosis.yaml").read_text(encoding="utf-8"))


def _build(values: dict) -> CovidDiagnosisParams:
    return build(CovidDiagnosisParams, values, "test values")


# --- parameters -----------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["quick", "cpu", "paper"])
def test_profile_files_state_exactly_the_fields(profile):
    values = _profile(profile)
    assert sorted(values) == sorted(FIELDS)
    params = _build(values)
    assert params.confusion_matrix_classifier in params.classifiers
    text = (PARAMS_DIR / profile / "03_covid_diagnosis.yaml").read_text(encoding="utf-8")
    assert text.startswith("#"), "each profile file starts with a comment header"


def test_cpu_and_paper_profiles_run_everything():
    for profile in ("cpu", "paper"):
        p = _build(_profile(profile))
        assert list(p.classifiers) == list(CLASSIFIERS)
        assert set(p.honest_feature_sets) == {"table1", "extended"} and p.run_einstein
        assert p.faithful_feature_set == "table1" and p.faithful_test_size == 0.25
    paper = _build(_profile("paper"))
    assert (paper.outer_repeats, paper.outer_folds, paper.grid_size) == (10, 5, "full")


def test_params_reject_bad_values():
    good = _profile("quick")
    with pytest.raises(ValueError, match="missing key.*random_state"):
        _build({k: v for k, v in good.items() if k != "random_state"})
    with pytest.raises(ValueError, match="unknown key.*epochs"):
        _build({**good, "epochs": 3})
    with pytest.raises(ValueError, match="classifiers"):
        _build({**good, "classifiers": ["naive_bayes"]})
    with pytest.raises(ValueError, match="outer_folds"):
        _build({**good, "outer_folds": True})
    with pytest.raises(ValueError, match="grid_size"):
        _build({**good, "grid_size": "huge"})


# --- results on a small synthetic cohort -------------------------------------------------


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return synthetic_cohort(120, negative_share=0.4, seed=2)


@pytest.fixture(scope="module")
def results(cohort):
    names = ["logistic_regression", "knn", "gaussian_process"]
    faithful = run_faithful(
        cohort,
        feature_set="table1",
        classifiers=names,
        random_state=0,
        test_size=0.25,
        cv_folds=3,
        grid_size="none",
        scoring="accuracy",
        n_jobs=1,
    )
    X, y, g = (
        cohort[[c for c in cohort.columns if c not in ("covid", "duplicate_group")]],
        cohort["covid"],
        np.arange(120),
    )
    honest = run_honest(
        X,
        y.to_numpy(),
        g,
        name="osr_table1",
        classifiers=names,
        random_state=0,
        outer_repeats=1,
        outer_folds=3,
        inner_folds=2,
        grid_size="none",
        scoring="roc_auc",
        ci_level=0.95,
        threshold=0.5,
        n_jobs=1,
        progress=False,
    )
    return faithful, {"osr_table1": honest}


PAPER = {
    "gaussian_process": {
        "accuracy": 0.89,
        "negative": {"precision": 0.89, "recall": 0.89, "f1": 0.89},
        "positive": {"precision": 0.9, "recall": 0.9, "f1": 0.9},
        "false_negative_pct": 5.26,
    },
    "knn_10": {"accuracy": 0.88, "negative": {"precision": None}, "false_negative_pct": 5.26},
}


def test_metrics_dict_is_json_and_complete(results):
    faithful, honest = results
    m = metrics_dict(faithful, honest)
    text = json.dumps(m, allow_nan=False)  # NaN must have become null
    assert json.loads(text) == m
    gp = m["faithful"]["table1"]["gaussian_process"]
    assert gp["accuracy"] == pytest.approx(faithful.summary.set_index("classifier").loc["gaussian_process", "accuracy"])
    assert set(gp["negative"]) == {"precision", "recall", "f1", "support"}
    h = m["honest"]["osr_table1"]["knn"]["auc"]
    assert h["ci_low"] <= h["mean"] <= h["ci_high"]
    assert m["data"]["faithful_table1"]["n_test"] == faithful.n_test == 30
    assert m["data"]["honest_osr_table1"]["n"] == 120
    selected = m["honest_selected"]["osr_table1"]
    assert sum(selected["chosen"].values()) == 3 and selected["auc"]["mean"] is not None


def test_summary_rows_use_given_paper_values(results):
    faithful, honest = results
    rows = summary_rows(faithful, honest, paper=PAPER)
    json.dumps(rows, allow_nan=False)
    assert all(set(r) == {"metric", "paper", "ours", "note", "model", "paper_model", "differs"} for r in rows)
    assert all(r["differs"] for r in rows)
    by_metric = {r["metric"]: r for r in rows}
    gp = next(r for k, r in by_metric.items() if "faithful" in k and "Gaussian" in k and "accuracy" in k)
    assert gp["paper"] == 0.89
    assert gp["ours"] == pytest.approx(faithful.summary.set_index("classifier").loc["gaussian_process", "accuracy"])
    assert "on the test set" in gp["paper_model"] and "training part" in gp["differs"]
    knn = next(r for k, r in by_metric.items() if "faithful" in k and "Nearest" in k)
    assert knn["paper"] == 0.88  # read from the argument, not hard-coded
    assert "k = 10" in knn["differs"] and "n_neighbors" in knn["note"] or "defaults" in knn["note"]
    optimistic = next(r for k, r in by_metric.items() if "best of the" in k and "(osr_table1)" in k)
    assert "optimistic" in optimistic["metric"] and optimistic["paper"] is None
    assert optimistic["ours"] == pytest.approx(honest["osr_table1"].summary["auc_mean"].max())
    selected = by_metric[
        "Task 3 honest: nested-CV AUC, classifier chosen in each outer fold by the inner CV (osr_table1)"
    ]
    assert selected["ours"] <= optimistic["ours"] + 1e-12 and "CI" in selected["note"] and "chosen:" in selected["note"]
    best_faithful = next(r for k, r in by_metric.items() if k.startswith("Task 3 faithful: best test accuracy"))
    assert "optimistic" in best_faithful["metric"]


def test_compare_with_paper_and_load(results, tmp_path):
    faithful, _ = results
    cmp = compare_with_paper(faithful, PAPER)
    gp_acc = cmp[(cmp["classifier"] == "gaussian_process") & (cmp["metric"] == "accuracy")].iloc[0]
    assert gp_acc["paper"] == 0.89 and gp_acc["difference"] == pytest.approx(gp_acc["ours"] - 0.89)
    lr = cmp[cmp["classifier"] == "logistic_regression"]
    assert lr["paper"].isna().all()  # not in the given paper dict


# --- figures --------------------------------------------------------------------------


def test_confusion_matrix_figure_annotations():
    fig = confusion_matrix_figure(np.array([0, 0, 0, 1, 1, 1, 1]), np.array([0, 0, 1, 1, 1, 1, 0]), title="GP")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "2\n(66.7%)" in texts and "3\n(75.0%)" in texts and "1\n(25.0%)" in texts
    assert fig.axes[0].get_title() == "GP"
    plt.close(fig)


def test_roc_and_calibration_figures(results):
    _, honest = results
    res = honest["osr_table1"]
    fig = roc_figure(res.oof, summary=res.summary, title="ROC")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(labels) == 3 and any("Gaussian" in lab for lab in labels)
    plt.close(fig)
    _grid, mean, sd = mean_roc(res.oof_for("knn"))
    assert mean[0] == 0 and mean[-1] == 1 and np.all(np.diff(mean) >= -1e-12)
    best = res.oof_for(res.best_classifier())
    fig = calibration_figure(best["y_true"], best["proba"], n_bins=5, title="cal")
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "cal"
    plt.close(fig)
    assert not math.isnan(sd.sum())
