"""A small report folder built without a kernel: an executed-looking notebook, its page, its files and the index."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import nbformat

STAGING = "/home/someone/project/reports/quick/.90_demo.staging-abc123/90_demo"


def png_bytes(width: int = 8, height: int = 6) -> bytes:
    """A real PNG of ``width`` x ``height`` grey pixels."""
    import matplotlib.image
    import numpy as np

    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, np.full((height, width), 0.5), format="png", cmap="gray")
    return buffer.getvalue()


def executed_notebook() -> nbformat.NotebookNode:
    """What papermill leaves: the notebook's parameters cell, the injected copy (with the staging folder),
    code cells with a printed line, a figure, a table and a tqdm widget, and the widget state."""
    nb = nbformat.v4.new_notebook()
    defaults = nbformat.v4.new_code_cell('profile = "cpu"\nreport_dir = ""\nsize = 3\nmodels = ["a", "b"]')
    defaults.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell(
        f'# Parameters\nprofile = "quick"\nreport_dir = "{STAGING}"\nsize = 4\nmodels = ["a"]\n'
    )
    injected.metadata["tags"] = ["injected-parameters"]
    figure = nbformat.v4.new_code_cell("report.figure(fig, 'line')")
    figure.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="size: 4\n"),
        nbformat.v4.new_output(
            "display_data", data={"image/png": base64.b64encode(png_bytes()).decode(), "text/plain": "<Figure>"}
        ),
        nbformat.v4.new_output(
            "display_data",
            data={
                "application/vnd.jupyter.widget-view+json": {"model_id": "x", "version_major": 2},
                "text/plain": "HBox()",
            },
        ),
    ]
    table = nbformat.v4.new_code_cell("frame")
    table.outputs = [
        nbformat.v4.new_output(
            "execute_result",
            data={
                "text/html": '<table class="dataframe"><tr><th>x</th></tr><tr><td>1</td></tr></table>',
                "text/plain": "x 1",
            },
            execution_count=4,
        )
    ]
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "# Demo report\n\nSee [the section](#Section) and [the table](90_demo/tables/xs.csv)."
        ),
        defaults,
        injected,
        figure,
        nbformat.v4.new_markdown_cell("## Section"),
        table,
    ]
    nb.metadata["papermill"] = {"parameters": {"models": ["a"], "profile": "quick", "report_dir": STAGING, "size": 4}}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    return nb


def report_folder(out: Path) -> Path:
    """``out`` laid out like ``reports/<profile>/``: one report page with its files, ``runs.json`` and the index."""
    from bloodlib.report.html import report_html
    from bloodlib.report.index import write_index

    (out / "90_demo" / "figures").mkdir(parents=True)
    (out / "90_demo" / "tables").mkdir()
    (out / "90_demo" / "figures" / "line.png").write_bytes(png_bytes())
    (out / "90_demo" / "tables" / "xs.csv").write_text("x\n1\n")
    summary = [
        {"metric": "accuracy", "paper": 0.8, "ours": 0.7, "note": "95% CI [0.6, 0.85]"},
        {"metric": "recall", "paper": 0.8, "ours": 0.9, "note": "no interval"},
        {"metric": "false negatives (%)", "paper": 5.0, "ours": 7.5, "note": "95% CI 6.0-9.0"},
        {"metric": "minutes", "paper": None, "ours": 3.0, "note": ""},
    ]
    (out / "90_demo" / "metrics.json").write_text(
        json.dumps({"notebook": "90_demo", "summary": summary, "metrics": {}})
    )
    (out / "90_demo.html").write_text(report_html(executed_notebook()))
    run = {
        "name": "90_demo",
        "profile": "quick",
        "status": "ok",
        "wall_s": 90.0,
        "finished_at": "2026-01-01T00:00:00+00:00",
        "parameters": {"size": 4},
        "data": [],
        "error": None,
    }
    record = {"provenance": {"profile": "quick", "packages": {"bloodlib": "0.1.0"}}, "notebooks": {"90_demo": run}}
    (out / "runs.json").write_text(json.dumps(record))
    write_index(out, record)
    return out
