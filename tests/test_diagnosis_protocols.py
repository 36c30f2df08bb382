"""Faithful (Table 4) and honest (nested CV) protocols: sizes, layout, grouping, no leakage."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import make_classification
from sklearn.pipeline import Pipeline

from bloodlib.diagnosis import tuning
from bloodlib.diagnosis.data import xy_groups
from bloodlib.diagnosis.faithful import run_faithful
from bloodlib.diagnosis.honest import METRICS, corrected_t_interval, run_honest
from bloodlib.diagnosis.models import make_classifier

HONEST_TINY = {
    "random_state": 0,
    "outer_repeats": 2,
    "outer_folds": 3,
    "inner_folds": 2,
    "grid_size": "small",
    "scoring": "roc_auc",
    "ci_level": 0.95,
    "threshold": 0.5,
    "n_jobs": 1,
    "progress": False,
}


@pytest.fixture(scope="module")
def synthetic() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Easy problem with an ``rid`` column (row id) and raw (unscaled, shifted) features."""
    X, y = make_classification(n_samples=90, n_features=4, n_informative=3, n_redundant=0, random_state=1)
    X = pd.DataFrame(X * 7.0 + 50.0, columns=["a", "b", "c", "d"])
    X.insert(0, "rid", np.arange(len(X), dtype=float))
    groups = np.arange(len(X))
    groups[[5, 6]] = groups[5]  # one duplicate-style group
    return X, y, groups


# --- faithful -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faithful(osr):
    return run_faithful(
        osr,
        feature_set="table1",
        classifiers=["logistic_regression", "knn", "gaussian_process"],
        random_state=0,
        test_size=0.25,
        cv_folds=3,
        grid_size="small",
        scoring="accuracy",
        n_jobs=1,
    )


def test_faithful_sizes(faithful):
    assert faithful.n_rows == 279
    assert faithful.n_complete == 206  # complete cases on table1 (paper: 201)
    assert (faithful.n_train, faithful.n_test) == (154, 52)
    assert faithful.test_counts["positive"] + faithful.test_counts["negative"] == 52
    # stratified: class shares of train and test agree (144/206 positive overall)
    assert faithful.test_counts == {"negative": 16, "positive": 36}
    assert faithful.train_counts == {"negative": 46, "positive": 108}
    assert len(faithful.X_test) == len(faithful.y_test) == 52


def test_faithful_table4_layout_and_fn_pct(faithful):
    t4 = faithful.table4
    for col in ("classifier", "class", "accuracy", "precision", "recall", "f1", "support", "false_negative_pct"):
        assert col in t4.columns
    assert len(t4) == 2 * 3 and set(t4["class"]) == {"negative", "positive"}
    for name in ("logistic_regression", "knn", "gaussian_process"):
        cm = faithful.confusion(name)
        tn, fp, fn, tp = cm.ravel()
        rows = t4[t4["classifier"] == name].set_index("class")
        assert rows["false_negative_pct"].iloc[0] == pytest.approx(100 * fn / faithful.n_test)
        assert rows["accuracy"].iloc[0] == pytest.approx((tn + tp) / faithful.n_test)
        assert rows.loc["positive", "recall"] == pytest.approx(tp / (tp + fn))
        assert rows.loc["negative", "recall"] == pytest.approx(tn / (tn + fp))
        assert rows["support"].sum() == faithful.n_test
        summary = faithful.summary.set_index("classifier").loc[name]
        assert (summary["tn"], summary["fp"], summary["fn"], summary["tp"]) == (tn, fp, fn, tp)
        assert 0 <= summary["auc"] <= 1
        assert len(faithful.proba[name]) == faithful.n_test


# --- no leakage -----------------------------------------------------------------------


class Spy(BaseEstimator, TransformerMixin):
    """Records the row ids (column ``rid``) of every ``fit``; passes data through."""

    fits: ClassVar[list[frozenset]] = []

    def fit(self, X, y=None):
        Spy.fits.append(frozenset(np.asarray(X)[:, 0].astype(int).tolist()))
        return self

    def transform(self, X):
        return X


def _spied(name: str, *, random_state: int) -> Pipeline:
    return Pipeline([("spy", Spy()), *make_classifier(name, random_state=random_state).steps])


def test_no_leak_every_fit_sees_outer_training_rows_only(synthetic, monkeypatch):
    X, y, groups = synthetic
    Spy.fits.clear()
    monkeypatch.setattr(tuning, "make_classifier", _spied)
    res = run_honest(X, y, groups, name="spy", classifiers=["logistic_regression", "knn"], **HONEST_TINY)
    train_sets = [frozenset(train.tolist()) for _, _, train, _ in res.splits]
    assert Spy.fits, "the spy was never fitted"
    for seen in Spy.fits:
        assert any(seen <= train for train in train_sets), (
            "a pipeline was fitted on rows outside an outer-training part"
        )
    for train in train_sets:  # the refit of each outer fold sees exactly its training part
        assert train in Spy.fits


def test_no_leak_faithful_tunes_on_training_part_only(synthetic, monkeypatch):
    X, y, _ = synthetic
    Spy.fits.clear()
    monkeypatch.setattr(tuning, "make_classifier", _spied)
    df = X.rename(columns={"rid": "sex", "a": "age", "b": "wbc", "c": "platelets", "d": "neutrophils"})
    for col in ("lymphocytes", "monocytes", "eosinophils", "basophils"):
        df[col] = 1.0
    df["covid"] = y
    res = run_faithful(
        df,
        feature_set="table1",
        classifiers=["knn"],
        random_state=0,
        test_size=0.25,
        cv_folds=3,
        grid_size="small",
        scoring="accuracy",
        n_jobs=1,
    )
    test_ids = set(res.X_test["sex"].astype(int))
    assert Spy.fits
    assert all(not (seen & test_ids) for seen in Spy.fits), "a test row was used for fitting or tuning"


def test_no_leak_scaler_and_imputer_fitted_on_training_fold(synthetic):
    X, y, groups = synthetic
    X = X.copy()
    X.loc[0, "a"] = 1e6  # extreme value: moves the mean only where row 0 is in the training part
    X.loc[[1, 2, 3], "b"] = np.nan
    res = run_honest(
        X, y, groups, name="scaler", classifiers=["logistic_regression"], return_estimators=True, **HONEST_TINY
    )
    assert res.estimators is not None and len(res.estimators) == len(res.splits)
    full_mean = X.fillna(X.median()).mean().to_numpy()
    for repeat, fold, train, _test in res.splits:
        pipe = res.estimators[(repeat, fold, "logistic_regression")]
        medians = X.iloc[train].median().to_numpy()
        np.testing.assert_allclose(pipe.named_steps["impute"].statistics_, medians)
        expected = X.iloc[train].fillna(X.iloc[train].median()).mean().to_numpy()
        scale_mean = pipe.named_steps["scale"].mean_[: X.shape[1]]
        np.testing.assert_allclose(scale_mean, expected)
        assert not np.allclose(scale_mean, full_mean)
        if 0 not in train:
            assert scale_mean[1] < 1000, "the test-fold outlier moved the scaler"


# --- honest ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def honest(osr):
    X, y, groups = xy_groups(osr, "table1")
    return run_honest(X, y, groups, name="osr_table1", classifiers=["logistic_regression", "knn"], **HONEST_TINY)


def test_honest_duplicates_never_split(osr, honest):
    groups = osr["duplicate_group"].to_numpy()
    pair_groups = set(osr["duplicate_group"].value_counts().loc[lambda s: s > 1].index)
    assert len(pair_groups) == 5
    assert len(honest.splits) == 2 * 3
    for _, _, train, test in honest.splits:
        assert not set(groups[train]) & set(groups[test])
        assert len(train) + len(test) == 279 and not set(train) & set(test)


def test_honest_summary_ci_and_ranges(honest):
    s = honest.summary
    assert list(s["classifier"]) == ["logistic_regression", "knn"]
    for metric in METRICS:
        low, mean, high = s[f"{metric}_ci_low"], s[f"{metric}_mean"], s[f"{metric}_ci_high"]
        assert (low <= mean).all() and (mean <= high).all(), metric
        assert ((low >= 0) & (high <= 1)).all(), metric
    assert s["auc_mean"].between(0.55, 1).all()  # table1 carries signal
    assert (s["n_outer_folds"] == 6).all()
    folds = honest.folds
    assert len(folds) == 6 * 2 and folds["auc"].between(0, 1).all()
    assert honest.best_classifier() in {"logistic_regression", "knn"}


def test_honest_oof_covers_every_row_once_per_repeat(honest):
    oof = honest.oof
    assert oof["proba"].between(0, 1).all()
    counts = oof.groupby(["classifier", "repeat"])["row"].agg(["nunique", "size"])
    assert (counts["nunique"] == 279).all() and (counts["size"] == 279).all()
    part = honest.oof_for("knn")
    assert set(part["classifier"]) == {"knn"} and len(part) == 2 * 279


def test_corrected_t_interval():
    values = np.array([0.70, 0.75, 0.80, 0.72, 0.78])
    mean, low, high = corrected_t_interval(values, test_train_ratio=0.25, level=0.95)
    assert mean == pytest.approx(values.mean())
    naive_half = 2.776 * values.std(ddof=1) / np.sqrt(5)
    assert high - mean > naive_half  # wider than the naive t-interval
    assert low < mean < high
    _, low1, high1 = corrected_t_interval(np.array([0.7]), test_train_ratio=0.25, level=0.95)
    assert np.isnan(low1) and np.isnan(high1)
    _, low2, high2 = corrected_t_interval(np.array([0.99, 0.5, 1.0]), test_train_ratio=0.5, level=0.95)
    assert 0 <= low2 and high2 <= 1
