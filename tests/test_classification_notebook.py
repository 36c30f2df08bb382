"""Notebook 02_wbc_subtypes renders under the quick profile with every table and figure."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.notebook_helpers import render_quick

NAME = "02_wbc_subtypes"


@pytest.mark.slow
@pytest.mark.timeout(1200)  # trains eight CNNs: 107 s on 2 quiet cores, 320 s at load 5 (default 600 s)
def test_notebook_renders_under_quick(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOODLIB_MODELS", str(tmp_path / "models"))  # never touch the user's model cache
    out, metrics = render_quick(NAME, tmp_path)
    folder = out / NAME
    table = pd.read_csv(folder / "tables" / "table3.csv")
    assert len(table) == 8 * 4 and set(table["set"]) == {"TEST", "TEST_UNSEEN", "TEST_SIMPLE", "BCCD"}
    unseen = table[table["set"] == "TEST_UNSEEN"]["groups"].iloc[0]
    assert unseen == table[table["set"] == "TEST"]["groups"].iloc[0] - 2  # the groups of 204~277 and 230~257
    tta = pd.read_csv(folder / "tables" / "tta_selection.csv")
    assert len(tta) == 8 and tta["val_bacc_tta_on"].between(0, 1).all() and (tta["params"] == "on").all()
    regrouping = pd.read_csv(folder / "tables" / "regrouping.csv").set_index("quantity")
    assert regrouping.loc["source groups in TRAIN", "changed"] < 0  # (233, 254) joined
    assert all(row["differs"] for row in metrics["summary"])
    assert table["accuracy"].between(0, 1).all()
    assert (table["accuracy_lo"] <= table["accuracy"] + 1e-9).all() and (
        table["accuracy"] <= table["accuracy_hi"] + 1e-9
    ).all()
    figures = {p.stem for p in (folder / "figures").glob("*.png")}
    assert {
        "fig6_learning_curves_standard",
        "fig7_learning_curves_custom",
        "fig8_feature_maps_densenet121",
        "fig9_feature_maps_arch2",
        "fig10_confusion_arch2",
        "confusion_all_test",
    } <= figures
    leaks = pd.read_csv(folder / "tables" / "leakage_check.csv")
    assert leaks.query("`other set` == 'val'")["shared groups"].item() == 0
    assert metrics["metrics"]["selected_model"] in table["model"].tolist()
    assert any(row["paper"] is not None for row in metrics["summary"])
    costs = pd.read_csv(folder / "tables" / "model_costs.csv")
    assert len(costs) == 8 and (costs["gflops"] > 0).all()
