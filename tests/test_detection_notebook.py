"""notebooks/01_detection.ipynb under the quick profile, the CLI trainer, and the report's figures."""

from __future__ import annotations

import math

import pytest

from bloodlib.cli import main
from tests.notebook_helpers import render_quick
from tests.paths import ROOT


@pytest.mark.slow
def test_notebook_renders_under_quick(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOODLIB_MODELS", str(tmp_path / "models"))
    out, metrics = render_quick("01_detection", tmp_path)
    folder = out / "01_detection"
    for figure in ("loss_curves", "pr_curves", "count_scatter", "figure5"):
        assert (folder / "figures" / f"{figure}.png").stat().st_size > 1000, figure
    tables = ("split", "training", "table2", "map", "counts", "inference_time", "targets", "test_overlaps", "models")
    tables += ("hsv_grid", "tta_selection", "validation_by_epoch", "overlap_free_table2", "overlap_free_map")
    for table in tables + ("overlap_free_counts",):
        assert (folder / "tables" / f"{table}.csv").is_file(), table
    summary = {row["metric"]: row for row in metrics["summary"]}
    assert summary["VGG16-SSD300 mAP@0.5"]["paper"] == 0.84
    assert summary["AlexNet-SSD300 mAP@0.5"]["paper"] == 0.36
    assert 0.0 <= summary["VGG16-SSD300 mAP@0.5"]["ours"] <= 1.0
    assert "official split" in summary["VGG16-SSD300 mAP@0.5"]["note"]
    assert all(row["differs"] for row in metrics["summary"])  # every row says how it differs from the paper
    assert summary["VGG16-SSD300 mAP@0.5"]["model"].startswith("SSD300, VGG16-BN backbone at width 0.125")
    assert "VGG16-SSD300 mAP@0.5, test images overlapping no train/val image" in summary
    evidence = metrics["metrics"]["evidence"]
    selection = evidence["tta_selection"]
    assert {row["views"] for row in selection} == {1, 2, 4} and sum(row["params"] for row in selection) == 2
    assert sum(row["params"] for row in evidence["hsv_grid"]) == 1
    assert metrics["metrics"]["split"] == "official" and metrics["metrics"]["profile"] == "quick"
    kinds = {row["kind"] for row in metrics["metrics"]["inference_time"]}
    assert {"reference", "ours", "fused", "views", "hsv"} <= kinds
    assert all(row["median_s"] > 0 for row in metrics["metrics"]["inference_time"])
    hsv = metrics["metrics"]["hsv_wbc_accuracy"]
    assert 0.0 <= hsv <= 1.0 and not math.isnan(hsv)


@pytest.mark.slow
@pytest.mark.usefixtures("data_root")
def test_cli_trains_into_the_cache_then_reuses_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BLOODLIB_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("BLOODLIB_ROOT", str(ROOT))
    assert main(["train", "detection", "--profile", "quick"]) == 0
    first = capsys.readouterr().out
    assert "VGG16-SSD300: trained" in first and "AlexNet-SSD300: trained" in first and "split official" in first
    assert len(list((tmp_path / "models" / "detection").glob("ssd_*/*/final.pt"))) == 2
    assert main(["train", "detection", "--profile", "quick"]) == 0
    assert capsys.readouterr().out.count(": cached") == 2
