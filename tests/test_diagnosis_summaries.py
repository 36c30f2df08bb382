"""The COVID report's table and text helpers (bloodlib.diagnosis.results) on a small synthetic cohort."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bloodlib.diagnosis import DISPLAY_NAMES, feature_columns, run_faithful, run_honest, summary_rows
from bloodlib.diagnosis.results import (
    SELECTED_NAME,
    best_oof,
    calibration_figures,
    cohort_overview,
    compare_with_paper,
    faithful_text,
    honest_captions,
    honest_table,
    honest_tables_by_cohort,
    honest_text,
    load_warnings_text,
    missing_values,
    paper_vs_ours,
    roc_figures,
    table4_display,
)
from bloodlib.paper import paper_results
from tests.diagnosis_helpers import synthetic_cohort

NAMES = ["logistic_regression", "knn"]


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return synthetic_cohort(80, negative_share=0.4, seed=3, pairs=True)


@pytest.fixture(scope="module")
def results(cohort):
    kwargs = {"classifiers": NAMES, "random_state": 0, "grid_size": "none", "n_jobs": 1}
    faithful = run_faithful(cohort, feature_set="table1", test_size=0.25, cv_folds=3, scoring="accuracy", **kwargs)
    X = cohort.drop(columns=["covid", "duplicate_group"])
    honest = run_honest(
        X,
        cohort["covid"].to_numpy(),
        cohort["duplicate_group"].to_numpy(),
        name="osr_table1",
        outer_repeats=1,
        outer_folds=3,
        inner_folds=2,
        scoring="roc_auc",
        ci_level=0.95,
        threshold=0.5,
        progress=False,
        **kwargs,
    )
    return faithful, honest


def test_cohort_overview_and_missing_values(cohort):
    overview = cohort_overview({"OSR": cohort})
    assert overview.loc["OSR"].to_dict() == {
        "patients": 80,
        "positive": int(cohort["covid"].sum()),
        "negative": int((cohort["covid"] == 0).sum()),
        "duplicate records": 40,
    }
    extended = pd.DataFrame(np.nan, index=range(3), columns=feature_columns("extended"))
    extended.iloc[0] = 1.0
    missing = missing_values(extended)
    assert (missing["missing values"] == 2).all()
    assert missing["in table1"].sum() == len(feature_columns("table1"))


def test_faithful_text_and_note_read_the_paper_samples(results):
    faithful, honest = results
    paper = paper_results("task3_covid")
    text = faithful_text(faithful, paper)
    assert f"{faithful.n_complete} complete cases of 80 (paper: {paper['usable_samples']})" in text
    assert "(paper:" not in faithful_text(faithful, {})
    rows = summary_rows(faithful, {"osr_table1": honest}, paper=paper)
    assert f"(paper: {paper['usable_samples']})" in rows[0]["note"]
    assert rows[0]["paper"] == paper["knn_10"]["accuracy"]  # 10-NN: the paper's knn_10 entry


def test_table4_and_paper_comparison_layout(results):
    faithful, _ = results
    table4 = table4_display(faithful)
    assert table4.index.names == ["display_name", "class"] and "classifier" not in table4.columns
    wide = paper_vs_ours(compare_with_paper(faithful, paper_results("task3_covid")))
    assert set(wide.index) == {DISPLAY_NAMES[n] for n in NAMES}
    assert set(wide.columns) == {(v, m) for v in ("paper", "ours") for m in ("accuracy", "false_negative_pct")}
    assert wide.loc[DISPLAY_NAMES["logistic_regression"], ("paper", "accuracy")] == 0.87


def test_honest_table_text_and_best_out_of_fold(results):
    _, honest = results
    table = honest_table(honest)
    assert list(table.index) == [DISPLAY_NAMES[n] for n in NAMES] + [SELECTED_NAME] and table.shape[1] == 12
    assert table.columns[0] == "auc_mean" and table.columns[-1] == "specificity_ci_high"
    expected = f"**osr_table1** — n=80 ({honest.n_positive} positive), 1×3 outer folds, 2 inner folds, grid `none`"
    assert honest_text("osr_table1", honest) == expected
    best, y_true, proba = best_oof(honest)
    assert best == honest.best_classifier("auc") and len(y_true) == len(proba) == 80
    assert set(np.unique(y_true)) <= {0, 1} and ((proba >= 0) & (proba <= 1)).all()


def test_every_cohort_gets_its_table_caption_and_figures(results):
    _, honest = results
    both = {"OSR": honest, "Einstein": honest}
    assert list(honest_tables_by_cohort(both)) == ["OSR", "Einstein"]
    assert honest_tables_by_cohort(both)["OSR"].equals(honest_table(honest))
    assert honest_captions(both)["Einstein"] == honest_text("Einstein", honest)
    assert list(roc_figures(both)) == ["roc_OSR", "roc_Einstein"]
    calibration = calibration_figures(both, n_bins=5)
    assert list(calibration) == ["calibration_OSR", "calibration_Einstein"]
    assert calibration["calibration_OSR"].axes[0].get_title() == f"{SELECTED_NAME} — OSR"


def test_load_warnings_text_lists_each_warning_or_says_there_were_none():
    assert load_warnings_text([]) == "Loading the cohorts gave no warnings."
    text = load_warnings_text(["cell B3 is text", "two rows lack a date"])
    assert text.endswith("- cell B3 is text\n- two rows lack a date")
