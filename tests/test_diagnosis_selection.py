"""Task 3's selection made inside the inner loop, the hyper-parameters per fold, and the faithful protocol over seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bloodlib.diagnosis.faithful import faithful_over_seeds, run_faithful, seed_summary
from bloodlib.diagnosis.honest import (
    INNER_SELECTED,
    HonestResult,
    inner_selected_folds,
    inner_selected_oof,
    inner_selected_summary,
    params_per_fold,
)
from bloodlib.diagnosis.plots import seeds_figure
from bloodlib.diagnosis.results import knn_table, seeds_table, selection_table
from tests.diagnosis_helpers import synthetic_cohort


def _result(inner: dict[tuple[int, int], dict[str, float]], auc: dict[str, float]) -> HonestResult:
    """Two classifiers over the given outer folds; each fold's outer AUC is ``auc[classifier]``."""
    rows, oof = [], []
    for (r, f), scores in inner.items():
        for name, score in scores.items():
            metrics = {"auc": auc[name], "accuracy": 0.7, "sensitivity": 0.6, "specificity": 0.8, "brier": 0.2}
            rows.append(
                {"repeat": r, "fold": f, "classifier": name, "n_train": 80, "n_test": 20, **metrics}
                | {"inner_score": score, "best_params": f"n_neighbors={5 + f}" if name == "knn" else "C=1.0"}
            )
            oof.append({"repeat": r, "fold": f, "classifier": name, "row": f, "y_true": f % 2, "proba": 0.5})
    settings = {"classifiers": ["logistic_regression", "knn"], "ci_level": 0.95}
    folds = pd.DataFrame(rows)
    return HonestResult("osr_table1", 100, 40, settings, folds, pd.DataFrame(), pd.DataFrame(oof), [])


def test_the_inner_cv_chooses_per_fold_without_the_outer_scores():
    inner = {(0, 0): {"logistic_regression": 0.7, "knn": 0.8}, (0, 1): {"logistic_regression": 0.9, "knn": 0.6}}
    inner[(1, 0)] = {"logistic_regression": np.nan, "knn": np.nan}  # no inner scores: the first classifier
    inner[(1, 1)] = {"logistic_regression": 0.75, "knn": 0.75}  # a tie: the first classifier
    result = _result(inner, auc={"logistic_regression": 0.6, "knn": 0.9})
    chosen = inner_selected_folds(result)
    assert chosen["classifier"].tolist() == ["knn", "logistic_regression", "logistic_regression", "logistic_regression"]
    summary = inner_selected_summary(result)
    assert summary.loc[0, "classifier"] == INNER_SELECTED and summary.loc[0, "n_outer_folds"] == 4
    assert summary.loc[0, "auc_mean"] == pytest.approx((0.9 + 0.6 * 3) / 4)  # not the best outer mean, 0.9
    assert summary.loc[0, "auc_ci_low"] <= summary.loc[0, "auc_mean"] <= summary.loc[0, "auc_ci_high"]
    oof = inner_selected_oof(result)
    assert len(oof) == 4 and oof.set_index(["repeat", "fold"]).loc[(0, 0), "classifier"] == "knn"
    ks = params_per_fold(result, "knn")
    assert ks["best_params"].tolist() == ["n_neighbors=5", "n_neighbors=6", "n_neighbors=5", "n_neighbors=6"]
    with pytest.raises(ValueError, match="'rbf_svm' was not run"):
        params_per_fold(result, "rbf_svm")
    counts = selection_table({"osr_table1": result})
    assert counts["osr_table1"].sum() == 4 and counts.loc["Logistic Regression", "osr_table1"] == 3


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return synthetic_cohort(90, negative_share=0.35, seed=5)


def test_faithful_over_seeds_reuses_the_first_split_and_summarises_the_spread(cohort):
    kwargs = {
        "feature_set": "table1",
        "classifiers": ["logistic_regression", "knn"],
        "random_state": 7,
        "test_size": 0.25,
        "cv_folds": 2,
        "grid_size": "none",
        "scoring": "accuracy",
        "n_jobs": 1,
    }
    first = run_faithful(cohort, **kwargs)
    over = faithful_over_seeds(cohort, seeds=3, done=first, **kwargs)
    assert over["seed"].tolist() == [7, 7, 8, 8, 9, 9]
    assert over.loc[0, "accuracy"] == first.summary.loc[0, "accuracy"]
    again = run_faithful(cohort, **{**kwargs, "random_state": 8}).summary
    assert over.loc[2, "accuracy"] == again.loc[0, "accuracy"]
    spread = seed_summary(over, {"knn": 0.5})
    assert spread["seeds"].tolist() == [3, 3] and (spread["min"] <= spread["median"]).all()
    assert np.isnan(spread.loc[0, "paper"]) and spread.loc[1, "paper"] == 0.5
    paper = {"knn_10": {"accuracy": 0.5}}
    assert seeds_table(over, paper).loc[1, "share_at_or_above_paper"] == (over.loc[[1, 3, 5], "accuracy"] >= 0.5).mean()
    seeds_figure(over, paper_accuracy={"knn": 0.5}).savefig("/dev/null", format="png")
    honest = _result({(0, 0): {"logistic_regression": 0.7, "knn": 0.8}}, auc={"logistic_regression": 0.6, "knn": 0.9})
    table = knn_table(first, {"osr_table1": honest})
    assert table.loc["faithful", "faithful (75/25)"] == "defaults"  # grid "none": k = 10
    assert table.loc["repeat 0, fold 0", "osr_table1"] == "n_neighbors=5"
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        faithful_over_seeds(cohort, seeds=0, **kwargs)
