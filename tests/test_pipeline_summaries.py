"""The smear-pipeline report's table and text helpers (bloodlib.pipeline.evaluation), on made-up results."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bloodlib.detection.data import CLASSES, Annotation
from bloodlib.pipeline import evaluation


def ann(image_id: str) -> Annotation:
    return Annotation(image_id, Path(f"{image_id}.jpg"), 640, 480, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))


def chain() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "true": ["neutrophil", "neutrophil", "eosinophil", "monocyte"],
            "predicted": ["neutrophil", evaluation.MISSED, "eosinophil", "lymphocyte"],
            "seen_in_training": [True, True, False, False],
        }
    )


def cv() -> pd.DataFrame:
    rows = [(features, 0.6 + 0.05 * k) for k, features in enumerate(evaluation.COVID_FEATURE_SETS.values())]
    return pd.DataFrame(
        [
            {"features": f, "classifier": c, "auc_mean": auc + (0.1 if c == "rf" else 0)}
            for f, auc in rows
            for c in ("lr", "rf")
        ]
    )


def test_models_thresholds_and_pseudo_sample_tables():
    models = SimpleNamespace(
        info={
            "detector": {"name": "VGG16-SSD300", "profile": "cpu", "key": "d1"},
            "classifier": {"name": "arch2", "profile": "cpu", "key": "c1"},
        }
    )
    table = evaluation.models_table(models, SimpleNamespace(precision="bfloat16"))
    assert table["role"].tolist() == ["detector", "WBC classifier"]
    assert table["runs in"].tolist() == ["bfloat16", "float32"] and table["cache key"].tolist() == ["d1", "c1"]
    thresholds = {c: 0.5 for c in CLASSES}
    assert evaluation.thresholds_table(thresholds).to_dict("records") == [thresholds]
    samples = evaluation.pseudo_samples([ann(f"BloodImage_{i:05d}") for i in range(5)], 2, seed=0)
    overview = evaluation.pseudo_sample_table(samples)
    assert overview["sample"].tolist() == ["pseudo-01", "pseudo-02", "pseudo-03"]
    assert overview["images"].tolist() == [2, 2, 1] and len(overview.loc[0, "image ids"].split(", ")) == 2


def test_chain_accuracy_table_splits_unseen_sources():
    rows = chain()
    assert evaluation.unseen(rows)["true"].tolist() == ["eosinophil", "monocyte"]
    table = evaluation.chain_accuracy_table(rows)
    assert table["WBCs"].tolist() == ["all labelled", "source never seen in training"]
    assert table["n"].tolist() == [4, 2] and table["accuracy"].tolist() == [0.5, 0.5]
    assert table["missed"].tolist() == [0.25, 0.0]
    # exact (Clopper-Pearson) 95% intervals of 2/4 and 1/2
    assert table["ci_low"].tolist() == pytest.approx([0.0676, 0.0126], abs=1e-4)
    assert table["ci_high"].tolist() == pytest.approx([0.9324, 0.9874], abs=1e-4)


def test_covid_aucs_pick_the_classifier_on_each_feature_set():
    aucs = evaluation.covid_aucs(cv(), "lr")
    assert aucs == pytest.approx({"scale_free": 0.6, "scale_free_age_sex": 0.65, "task3_table1": 0.7})
    model = SimpleNamespace(n=279, n_positive=177, params={"base": "C=0.1", "with_age_sex": "C=1"})
    text = evaluation.covid_model_text(aucs, "lr", model)
    assert "**lr**" in text and "AUC **0.600**" in text and "0.650 with age and sex" in text and "279 OSR" in text
    assert evaluation.throughput_text(10, 4.0).startswith("10 images in 4.0 s: 2.5 images/s")


def test_summary_rows_and_metrics():
    counts = pd.DataFrame(
        [
            {"level": level, "class": c, "mape": 10.0 * (k + 1) + (5 if level == "pseudo-sample" else 0)}
            for level in ("image", "pseudo-sample")
            for k, c in enumerate(CLASSES)
        ]
    )
    accuracy = evaluation.chain_accuracy_table(chain())
    aucs = evaluation.covid_aucs(cv(), "lr")
    p = SimpleNamespace(pseudo_sample_size=8, num_threads=2, covid_classifier="lr")
    rows = evaluation.summary_rows(
        images=16,
        samples=2,
        seconds=4.0,
        counts=counts,
        accuracy=accuracy,
        aucs=aucs,
        p=p,
        profile="quick",
        detector_precision="float32",
    )
    assert len(rows) == 7 and all(row["paper"] is None for row in rows)
    assert rows[0]["ours"] == 4.0 and rows[0]["note"].endswith("profile quick; 2 threads, detector in float32")
    assert rows[1]["metric"] == "RBC count MAPE % per image / per pseudo-sample" and rows[1]["ours"] == 10.0
    assert rows[1]["note"].endswith("per pseudo-sample 15.0%")
    assert rows[-1]["ours"] == pytest.approx(0.6) and "table1 features, same splits: 0.700" in rows[-1]["note"]
    assert "95% CI 0.068-0.932 (exact binomial)" in rows[-3]["note"]
    assert "95% CI 0.013-0.987 (exact binomial)" in rows[-2]["note"]
    frame = pd.DataFrame([{"x": 1}])
    models = SimpleNamespace(info={"detector": {}}, thresholds={"RBC": 0.5})
    metrics = evaluation.report_metrics(
        profile="quick",
        images=16,
        seconds=4.0,
        models=models,
        counts=frame,
        accuracy=frame,
        confusion_all=frame,
        spurious=3,
        cv=frame,
        aucs=aucs,
        predictions=frame,
        precision=frame,
    )
    assert (
        metrics["images_per_second"] == 4.0
        and metrics["covid_auc"] is aucs
        and metrics["count_thresholds"] == {"RBC": 0.5}
    )
