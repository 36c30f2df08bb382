"""The general models' pieces that need no training: variants, pooled sets, per-source tables, cross-fitting."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from bloodlib.classification.canvases import CanvasSet
from bloodlib.detection.data import Annotation
from bloodlib.general import evaluation
from bloodlib.general.classifier import Variant, pooled, uncertain_share


def test_variants_check_their_sources_and_normalisation():
    assert Variant(("dataset2", "PBC"), "reinhard").slug == "dataset2+PBC_reinhard_jitter"
    assert "colour jitter off" in Variant(("PBC",), "none", False).name
    with pytest.raises(ValueError, match="sources"):
        Variant(("BCCD",), "none")
    with pytest.raises(ValueError, match="stain"):
        Variant(("PBC",), "vahadane")


def test_pooled_sets_keep_sources_apart():
    a = CanvasSet(
        "a",
        pd.DataFrame({"label": ["MONOCYTE"], "group": [7], "source": [7]}),
        torch.zeros(1, 3, 4, 4, dtype=torch.uint8),
    )
    b = CanvasSet(
        "b",
        pd.DataFrame({"label": ["NEUTROPHIL"], "group": ["PBC/x"], "source": ["PBC"]}),
        torch.ones(1, 3, 4, 4, dtype=torch.uint8),
    )
    both = pooled([a, b], "train")
    assert len(both) == 2 and both.frame["group"].tolist() == ["7", "PBC/x"] and both.canvases[1].sum() == 48


def test_uncertain_share_per_set():
    preds = pd.DataFrame(
        {
            "set": ["s"] * 4,
            "y_true": [0, 1, 2, 3],
            "y_pred": [0, 1, 0, 0],
            "p_EOSINOPHIL": [0.9, 0.1, 0.4, 0.3],
            "p_LYMPHOCYTE": [0.1, 0.8, 0.3, 0.3],
            "p_MONOCYTE": [0.0, 0.1, 0.2, 0.2],
            "p_NEUTROPHIL": [0.0, 0.0, 0.1, 0.2],
        }
    )
    (row,) = uncertain_share(preds, 0.5).to_dict("records")
    assert row["uncertain share"] == 0.5 and row["accuracy, confident"] == 1.0 and row["accuracy, uncertain"] == 0.0


def _field(i: int, source: str, n_rbc: int) -> Annotation:
    boxes = np.array([[10 + 30 * k, 10, 35 + 30 * k, 35] for k in range(n_rbc)] + [[200, 200, 260, 260]], np.float32)
    return Annotation(f"{source}{i}", None, 640, 480, boxes, np.array([1] * n_rbc + [2]), source)


def _perfect(a: Annotation, extra: int = 0) -> dict:
    boxes = torch.from_numpy(a.boxes)
    noise = torch.tensor([[400.0, 400.0, 425.0, 425.0]]).repeat(extra, 1)
    return {
        "boxes": torch.cat([boxes, noise]),
        "labels": torch.cat([torch.from_numpy(a.labels), torch.ones(extra, dtype=torch.int64)]),
        "scores": torch.cat([torch.full((len(boxes),), 0.9), torch.full((extra,), 0.2)]),
    }


def test_cross_fitted_counts_use_thresholds_from_the_other_half():
    fields = [_field(i, s, 3 + i % 4) for s in ("BCCD", "PBC") for i in range(8)]
    preds = [_perfect(a, extra=2) for a in fields]  # two low-score false RBCs in every field
    frame, thresholds = evaluation.cross_fitted_counts(preds, fields, seed=0)
    assert len(thresholds) == 2 and all(0.2 < t["RBC"] <= 0.9 for t in thresholds)
    table = evaluation.count_table(frame).set_index(["source", "class"])
    assert table.loc[("BCCD", "RBC"), "exact"] == 1.0 and table.loc[("PBC", "WBC"), "mape"] == 0.0
    assert set(frame["source"]) == {"BCCD", "PBC"} and len(frame) == 16 * 3
    detection = evaluation.detection_by_source(preds, fields, samples=20, seed=0)
    assert detection["source"].tolist() == ["BCCD", "PBC", "all"] and detection["AP50 WBC"].eq(1.0).all()


def test_headline_takes_the_worst_source():
    counts = pd.DataFrame(
        [
            {"source": s, "class": c, "mape": m, "exact": e}
            for s, m, e in (("BCCD", 12.0, 1.0), ("PBC", 8.0, 0.9))
            for c in ("RBC", "WBC", "Platelets")
        ]
    )
    detection = pd.DataFrame({"source": ["BCCD", "PBC", "all"], "mAP50": [0.9, 0.8, 0.85]})
    rescaled = pd.DataFrame({"factor": [1.0, 0.5, 2.0], "RBC mape": [5.0, 11.0, 30.0]})
    classifier = pd.DataFrame({"accuracy": [0.95, 0.91]})
    values = evaluation.headline(detection, counts, rescaled, 0.83, classifier, {"detector": 20.0, "classifier": 5.0})
    assert values["worst_source_rbc_mape"] == 12.0 and values["worst_source_wbc_exact"] == 0.9
    assert values["worst_source_map50"] == 0.8 and values["worst_rescaled_rbc_mape"] == 30.0
    assert values["worst_source_wbc_accuracy"] == 0.91 and values["general_training_minutes"] == 25.0
    assert not math.isnan(values["worst_source_platelet_mape"])


def test_report_metrics_store_the_stain_reference_when_there_is_one():
    from types import SimpleNamespace

    stain = SimpleNamespace(to_dict=lambda: {"method": "reinhard"})
    metrics = evaluation.report_metrics({"a": 1.0}, {"detector": 2.0}, {"WBC": 0.5}, stain)
    assert metrics == {
        "headline": {"a": 1.0},
        "minutes": {"detector": 2.0},
        "thresholds": {"WBC": 0.5},
        "stain": {"method": "reinhard"},
    }
    assert evaluation.report_metrics({}, {}, {}, None)["stain"] is None
