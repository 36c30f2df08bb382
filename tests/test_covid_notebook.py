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
    honest = metrics["metrics"]["honest"]["osr_table1"]
    for clf in honest.values():
        auc = clf["auc"]
        assert 0.0 <= auc["ci_low"] <= auc["mean"] <= auc["ci_high"] <= 1.0
    assert any(row["metric"].startswith("Task 3 faithful") and row["paper"] for row in metrics["summary"])
    html = (out / "03_covid_diagnosis.html").read_text()
    assert "no RBC column" in html and "Figure 11" in html
