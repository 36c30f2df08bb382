"""Run a project notebook through the report runner in a throw-away project root."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bloodlib.report.links import broken_links
from bloodlib.report.runner import run_reports
from tests.paths import ROOT, require_data


def render_quick(name: str, tmp_path: Path) -> tuple[Path, dict]:
    """Render ``notebooks/<name>.ipynb`` with the quick profile into ``tmp_path``.

    Returns the report folder and the notebook's ``metrics.json``; fails the test on a
    failed run or any broken link or image in the rendered pages.
    """
    require_data()
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", root / "notebooks")
    shutil.copytree(ROOT / "params", root / "params")
    (run,) = run_reports("quick", only=[name], root=root)
    out = root / "reports" / "quick"
    assert run.status == "ok", f"{name} failed: {run.error} (see {out / (name + '.failed.ipynb')})"
    for page in (out / f"{name}.html", out / "index.html"):
        assert broken_links(page) == [], page.name
    return out, json.loads((out / name / "metrics.json").read_text())
