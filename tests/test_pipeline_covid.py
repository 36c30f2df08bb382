"""Scale-free features, per-sample aggregation, and the scale-free COVID-19 model on OSR."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from bloodlib.pipeline import covid
from bloodlib.pipeline.aggregate import aggregate, covid_flags
from bloodlib.pipeline.features import SCALE_FREE_FEATURES, scale_free_features
from bloodlib.pipeline.infer import FieldResult
from bloodlib.pipeline.io import Field
from tests.pipeline_helpers import quick_params


def test_scale_free_features():
    f = scale_free_features(
        neutrophils=[6, 3, 0],
        lymphocytes=[2, 0, 0],
        monocytes=[1, 0, 0],
        eosinophils=[1, 1, 0],
        platelets=[20, 5, 0],
        wbc=[10, 4, 0],
    )
    assert list(f.columns) == list(SCALE_FREE_FEATURES)
    assert f.loc[0, "neutrophil_fraction"] == pytest.approx(0.6) and f.loc[0, "nlr"] == pytest.approx(3.0)
    assert f.loc[0, "platelets_per_wbc"] == pytest.approx(2.0) and f.loc[0, "log_nlr"] == pytest.approx(math.log(3))
    assert math.isnan(f.loc[1, "nlr"]) and math.isnan(f.loc[1, "log_nlr"])  # no lymphocytes
    assert f.loc[2].isna().all()  # no WBC at all
    counted = scale_free_features(
        neutrophils=[3], lymphocytes=[0], monocytes=[0], eosinophils=[1], platelets=[0], wbc=[4], pseudo_count=0.5
    )
    assert counted.loc[0, "nlr"] == pytest.approx(7.0) and counted.loc[0, "platelets_per_wbc"] == pytest.approx(
        0.5 / 4.5
    )


def field_result(index: int, labels: list[int], subtypes: list[int]) -> FieldResult:
    n = len(labels)
    prob = np.zeros((n, 4), np.float32)
    for i, s in enumerate(subtypes):
        if s >= 0:
            prob[i, s] = 0.9
    return FieldResult(
        index,
        labels=np.array(labels),
        subtype=np.array(subtypes),
        subtype_prob=prob,
        boxes=np.zeros((n, 4), np.float32),
        scores=np.ones(n, np.float32),
        width=10,
        height=10,
    )


def test_aggregate_sums_fields_and_skips_failed_ones():
    fields = [Field("s", Path(f"{i}.jpg"), str(i)) for i in range(3)]
    results = [
        field_result(0, [1, 1, 2, 3], [-1, -1, 3, -1]),  # 2 RBC, a neutrophil, a platelet
        FieldResult(1, error="not an image"),
        field_result(2, [1, 2, 2], [-1, 1, 3]),
    ]  # RBC, lymphocyte, neutrophil
    agg = aggregate("s", "dir", fields, results, pseudo_count=0.5)
    assert (agg.fields, agg.fields_ok) == (3, 2)
    assert agg.totals == {
        "rbc": 3,
        "wbc": 3,
        "platelets": 1,
        "eosinophil": 0,
        "lymphocyte": 1,
        "monocyte": 0,
        "neutrophil": 2,
    }
    assert agg.per_field["rbc"] == pytest.approx(1.5)
    assert agg.differential_pct["neutrophil"] == pytest.approx(200 / 3)
    assert agg.ratios == pytest.approx({"nlr": 2.0, "platelets_per_wbc": 1 / 3, "wbc_per_1000_rbc": 1000.0})
    assert agg.features["nlr"] == pytest.approx(2.5 / 1.5)
    flags = covid_flags(agg, {"probability": 0.3, "out_of_range": [], "imputed": []}, min_wbc=100)
    assert flags["low_confidence"] and "3 WBCs classified, fewer than 100" in flags["reasons"][0]
    assert not covid_flags(agg, {"probability": 0.3, "out_of_range": [], "imputed": []}, min_wbc=3)["low_confidence"]
    empty = aggregate("e", "dir", [], [], pseudo_count=0.5)
    assert not empty.ok and math.isnan(empty.features["neutrophil_fraction"])


def test_fitted_model_predicts_and_flags(osr):
    model = covid.fit_covid_model(osr, quick_params(), key="test")
    assert model.n == 279 and model.n_positive == 177
    typical = covid.feature_frame(osr, quick_params(), with_age_sex=False).median().to_dict()
    base = model.predict(typical)
    assert 0 <= base["probability"] <= 1 and base["out_of_range"] == [] and "age" not in base["model"]
    with_demo = model.predict(typical, age=60, sex=1)
    assert "age, sex" in with_demo["model"] and with_demo["probability"] != base["probability"]
    odd = model.predict(dict(typical, log_platelets_per_wbc=-3.0))
    assert odd["out_of_range"] == ["log_platelets_per_wbc"]
    none = model.predict({k: math.nan for k in typical})
    assert math.isnan(none["probability"])


def test_nested_cv_compares_feature_sets_on_the_same_splits(osr):
    p = dataclasses.replace(quick_params(), n_jobs=1)
    results = covid.nested_cv(osr, p, progress=False)
    assert list(results) == ["scale-free", "scale-free + age, sex", "Task 3 table1 (10^9/L, age, sex)"]
    splits = [[(r, f, tuple(test)) for r, f, _, test in res.splits] for res in results.values()]
    assert splits[0] == splits[1] == splits[2]
    table = covid.cv_table(results)
    assert len(table) == 3 and table["auc_mean"].between(0.5, 1).all()


def test_model_is_cached(tmp_path, osr):
    p = dataclasses.replace(quick_params(), covid_grid_size="none")
    first = covid.load_or_fit(p, tmp_path)
    cached = list((tmp_path / "pipeline" / "covid").glob("*/model.json"))
    assert len(cached) == 1 and not list((tmp_path / "pipeline" / "covid").rglob("*.pkl"))
    second = covid.load_or_fit(p, tmp_path)
    assert second.key == first.key and second.params == first.params
