"""Notebook 04_pipeline renders under the quick profile (tiny models trained into a temporary cache)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.notebook_helpers import render_quick

NAME = "04_pipeline"


@pytest.mark.slow
def test_notebook_renders_under_quick(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOODLIB_MODELS", str(tmp_path / "models"))  # never touch the user's model cache
    out, metrics = render_quick(NAME, tmp_path)
    folder = out / NAME
    figures = {p.stem for p in (folder / "figures").glob("*.png")}
    assert {
        "annotated_examples",
        "count_scatter",
        "chain_confusion_all",
        "chain_confusion_unseen",
        "covid_nested_cv_auc",
        "feature_shift",
    } <= figures
    counts = pd.read_csv(folder / "tables" / "counts.csv")
    assert set(counts["level"]) == {"image", "pseudo-sample"} and len(counts) == 6
    confusion = pd.read_csv(folder / "tables" / "chain_confusion_all.csv", index_col=0)
    assert list(confusion.columns) == ["eosinophil", "lymphocyte", "monocyte", "neutrophil", "missed"]
    predictions = pd.read_csv(folder / "tables" / "pseudo_sample_predictions.csv")
    assert len(predictions) == 2 and predictions["low_confidence"].all()
    m = metrics["metrics"]
    assert m["images"] == 16 and m["images_per_second"] > 0
    assert set(m["covid_auc"]) == {"scale_free", "scale_free_age_sex", "task3_table1"}
    assert len(metrics["summary"]) >= 5
