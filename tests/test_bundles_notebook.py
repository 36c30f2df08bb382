"""A model bundle end to end: render -> export -> fresh models root -> import -> render again trains and
predicts nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from bloodlib import cli
from tests.notebook_helpers import render_quick

NOTEBOOK = "02_wbc_subtypes"


def run_files(models: Path) -> dict[str, int]:
    """Every trained run's ``final.pt`` / ``run.json`` under ``models`` -> its modification time (ns)."""
    return {
        p.relative_to(models).as_posix(): p.stat().st_mtime_ns
        for p in sorted(models.rglob("*"))
        if p.name in ("final.pt", "run.json")
    }


def kept_predictions(models: Path) -> dict[str, int]:
    """Every kept prediction under ``models`` -> its modification time (ns)."""
    return {p.relative_to(models).as_posix(): p.stat().st_mtime_ns for p in sorted(models.rglob("*.npy"))}


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_imported_bundle_renders_the_same_report_without_training(tmp_path, monkeypatch, data_root, capsys):
    instructor, student = tmp_path / "instructor" / "models", tmp_path / "student" / "models"
    monkeypatch.setenv("BLOODLIB_MODELS", str(instructor))  # the kernel inherits it
    _, first = render_quick(NOTEBOOK, tmp_path / "instructor")
    assert not any(row["from cache"] for row in first["metrics"]["training"])  # it did train

    bundle = tmp_path / "class.tar.gz"
    assert cli.main(["models", "export", str(bundle), "--profile", "quick", "--only", NOTEBOOK]) == 0
    monkeypatch.setenv("BLOODLIB_MODELS", str(student))
    assert cli.main(["models", "import", str(bundle)]) == 0
    assert "placed" in capsys.readouterr().out
    imported, predicted = run_files(student), kept_predictions(student)
    assert len(imported) == 2 * len(first["metrics"]["training"])
    assert predicted and all(name.startswith("predictions/wbc_subtypes/") for name in predicted)

    _, second = render_quick(NOTEBOOK, tmp_path / "student")
    assert run_files(student) == imported  # nothing trained, nothing rewritten
    assert kept_predictions(student) == predicted  # nothing predicted again: the bundle brought it all
    assert all(row["from cache"] for row in second["metrics"]["training"])
    assert second["metrics"]["table3"] == first["metrics"]["table3"]
    assert second["metrics"]["selected_model"] == first["metrics"]["selected_model"]
    drop = {"from cache"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in second["metrics"]["training"]] == [
        {k: v for k, v in r.items() if k not in drop} for r in first["metrics"]["training"]
    ]
    assert second["summary"] == first["summary"]
