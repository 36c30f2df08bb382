"""03_covid_diagnosis executed with the quick profile through the report runner."""

from __future__ import annotations

import pytest

from tests.notebook_helpers import render_quick


@pytest.mark.slow
def test_covid_notebook_quick(tmp_path):
    out, metrics = render_quick("03_covid_diagnosis", tmp_path)
    files = out / "03_covid_diagnosis"
    figures = {p.stem for p in (files / "figures").glob("*.png")}
    assert {"fig11_confusion_matrix", "roc_osr_table1", "calibration_osr_table1"} <= figures
    tables = {p.stem for p in (files / "tables").glob("*.csv")}
    assert {"table4_faithful", "table4_vs_paper", "honest_osr_table1", "cohorts"} <= tables
    assert {"faithful_over_seeds", "faithful_over_seeds_all", "inner_cv_choices", "knn_k_per_fold"} <= tables
    assert "faithful_over_seeds" in figures
    honest = metrics["metrics"]["honest"]["osr_table1"]
    for clf in honest.values():
        auc = clf["auc"]
        assert 0.0 <= auc["ci_low"] <= auc["mean"] <= auc["ci_high"] <= 1.0
    assert any(row["metric"].startswith("Task 3 faithful") and row["paper"] for row in metrics["summary"])
    assert all(row["differs"] for row in metrics["summary"])
    optimistic = [row for row in metrics["summary"] if "best of the" in row["metric"]]
    assert optimistic and all("optimistic" in row["metric"] for row in optimistic)
    selected = metrics["metrics"]["honest_selected"]["osr_table1"]
    assert sum(selected["chosen"].values()) == 3  # one choice per outer fold (quick: 1 x 3)
    assert metrics["metrics"]["faithful_over_seeds"]["gaussian_process"]["seeds"] == 2
    html = (out / "03_covid_diagnosis.html").read_text()
    assert "no RBC column" in html and "Figure 11" in html
