"""ReportWriter: a notebook's tables and figures become files under its report folder."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bloodlib.report import ReportWriter


@pytest.fixture
def shown(monkeypatch) -> list:
    """What the writer displays (IPython's ``display`` replaced by a recorder)."""
    import IPython.display

    seen: list = []
    monkeypatch.setattr(IPython.display, "display", lambda *objects: seen.extend(objects))
    return seen


def test_tables_are_saved_whole_and_shown_rounded_under_their_captions(tmp_path, shown):
    report = ReportWriter("90_demo", tmp_path)
    frames = {"map": pd.DataFrame({"x": [0.123456]}), "counts": pd.DataFrame({"y": [2.0]})}
    report.tables(frames, prefix="free", captions={"map": "mAP *per class*"}, decimals=2)
    assert (tmp_path / "tables" / "free_map.csv").read_text() == "x\n0.123456\n"
    assert (tmp_path / "tables" / "free_counts.csv").exists()
    captions = [s.data for s in shown[0::2]]
    assert captions == ["mAP *per class*", "**counts**"]  # the key in bold without a caption
    assert shown[1].loc[0, "x"] == 0.12 and frames["map"].loc[0, "x"] == 0.123456


def test_figures_are_saved_under_their_names_and_bad_names_are_refused(tmp_path):
    import matplotlib.pyplot as plt

    report = ReportWriter("90_demo", tmp_path)
    report.figures({"roc_OSR": plt.figure(), "roc_Einstein": plt.figure()})
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["roc_Einstein.png", "roc_OSR.png"]
    report.figures({})
    with pytest.raises(ValueError, match="'../x'"):
        report.figures({"../x": plt.figure()})
    plt.close("all")


def test_metrics_need_the_summary_columns(tmp_path):
    report = ReportWriter("90_demo", tmp_path)
    with pytest.raises(ValueError, match="lacks \\['paper'\\]"):
        report.metrics({}, summary=[{"metric": "a", "ours": 1}])
    path = report.metrics({"a": 1}, summary=[{"metric": "a", "paper": 0.5, "ours": 1}])
    assert json.loads(path.read_text())["metrics"] == {"a": 1}
