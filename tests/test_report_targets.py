"""Targets come from params/<profile>/targets.yaml; the library only compares values with them."""

from __future__ import annotations

import pytest

from bloodlib.params import PROFILES, ParamsError
from bloodlib.report.targets import Target, load_targets, targets_table


def write(root, text, profile="cpu"):
    (root / "params" / profile).mkdir(parents=True)
    (root / "params" / profile / "targets.yaml").write_text(text)
    return root


def test_every_profile_lists_the_detection_targets():
    for profile in PROFILES:
        targets = load_targets("01_detection", profile)
        assert [t.metric for t in targets] == [
            "best_mAP50",
            "best_platelets_AP50",
            "best_wbc_exact",
            "best_rbc_mape",
            "wall_minutes",
        ]
    assert load_targets("02_wbc_subtypes", "cpu") == ()


def test_targets_table_compares_both_ways():
    targets = (Target("mAP", "map", ">=", 0.9), Target("minutes", "wall", "<=", 20.0))
    table = targets_table({"map": 0.95, "wall": 25.0}, targets)
    assert table["target"].tolist() == ["mAP >= 0.9", "minutes <= 20"]
    assert table["met"].tolist() == [True, False] and table["reached"].tolist() == [0.95, 25.0]
    assert targets_table({}, ()).columns.tolist() == ["target", "reached", "met"]
    with pytest.raises(ValueError, match="lack the target metric"):
        targets_table({"map": 0.95}, targets)


def test_malformed_targets_are_errors_naming_the_file(tmp_path):
    root = write(tmp_path, '01_detection:\n  - {target: a, metric: m, op: "==", value: 1}\n')
    with pytest.raises(ParamsError, match=r"targets.yaml: 01_detection: .*op must be one of"):
        load_targets("01_detection", "cpu", root)
    root = write(tmp_path / "b", "01_detection:\n  - {target: a, metric: m}\n")
    with pytest.raises(ParamsError, match="exactly the keys"):
        load_targets("01_detection", "cpu", root)
    with pytest.raises(ParamsError, match="not found"):
        load_targets("01_detection", "quick", root)
