"""Notebook 05_generalisation renders under the quick profile (tiny general models trained into a temporary cache)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.notebook_helpers import render_quick

NAME = "05_generalisation"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_notebook_renders_under_quick(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOODLIB_MODELS", str(tmp_path / "models"))  # never touch the user's model cache
    out, metrics = render_quick(NAME, tmp_path)
    folder = out / NAME
    figures = {p.stem for p in (folder / "figures").glob("*.png")}
    assert {"scale_estimate", "detector_loss_curves", "cross_source_map", "ood_colour_scores", "examples"} <= figures
    detection = pd.read_csv(folder / "tables" / "detection_by_source.csv")
    assert detection["source"].tolist() == ["BCCD", "PBC", "Raabin", "all"]
    cross = pd.read_csv(folder / "tables" / "cross_source.csv")
    assert set(cross["trained on"]) == {"BCCD", "PBC", "Raabin", "all"} and len(cross) == 12
    loso = pd.read_csv(folder / "tables" / "classifier_loso.csv")
    assert set(loso["left_out"]) == {"dataset2", "PBC"} and set(loso["stain"]) == {"none", "reinhard", "macenko"}
    targets = pd.read_csv(folder / "tables" / "targets.csv")
    assert len(targets) == 8
    assert metrics["metrics"]["headline"]["general_training_minutes"] > 0 and len(metrics["summary"]) >= 6
