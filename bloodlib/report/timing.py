"""The index's "Where the time goes" section: minutes per notebook and phase, and the slowest cells.

It reads what the runner records per notebook in ``runs.json`` (:class:`~bloodlib.report.runner.NotebookRun`):
``phases`` (seconds of training, evaluation, bootstrap, plots and other, :mod:`bloodlib.progress`) and
``cells`` (seconds of each code cell). Runs recorded before these existed show their total time only.
"""

from __future__ import annotations

from html import escape

from bloodlib.progress import PHASES

COLUMNS = (*PHASES, "other")
#: Cells listed per notebook (the slowest first).
SLOWEST_CELLS = 6


def _minutes(seconds) -> str:
    return f"{seconds / 60:.1f}" if isinstance(seconds, (int, float)) else "–"


def phase_rows(runs: dict[str, dict]) -> list[dict]:
    """One row per notebook (sorted by name): ``notebook``, ``total`` and each of :data:`COLUMNS`, in
    seconds (None where the run recorded no phases)."""
    rows = []
    for name in sorted(runs):
        run = runs[name]
        phases = run.get("phases") or {}
        rows.append({"notebook": name, "total": run.get("wall_s"), **{c: phases.get(c) for c in COLUMNS}})
    return rows


def slowest_cells(run: dict, n: int = SLOWEST_CELLS) -> list[dict]:
    """The ``n`` code cells of a run that took longest, slowest first."""
    cells = [c for c in run.get("cells") or [] if isinstance(c.get("seconds"), (int, float))]
    return sorted(cells, key=lambda c: -c["seconds"])[:n]


def timing_section(runs: dict[str, dict]) -> str:
    """The section's HTML for the ``notebooks`` of a ``runs.json`` record ("" when there are none)."""
    if not runs:
        return ""
    rows = phase_rows(runs)
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    body = "".join(
        f'<tr><td>{escape(r["notebook"])}</td><td class="num"><b>{_minutes(r["total"])}</b></td>'
        + "".join(f'<td class="num">{_minutes(r[c])}</td>' for c in COLUMNS)
        + "</tr>"
        for r in rows
    )
    totals = {c: sum(r[c] for r in rows if isinstance(r[c], (int, float))) for c in ("total", *COLUMNS)}
    body += (
        f'<tr><th>all</th><th class="num">{_minutes(totals["total"])}</th>'
        + "".join(f'<th class="num">{_minutes(totals[c])}</th>' for c in COLUMNS)
        + "</tr>"
    )
    cells = "".join(
        f"<details><summary>{escape(name)}: the slowest cells</summary><table>"
        "<tr><th>cell</th><th>first line</th><th>minutes</th></tr>"
        + "".join(
            f'<tr><td class="num">{c.get("cell", "")}</td><td><code>{escape(str(c.get("label", "")))}</code></td>'
            f'<td class="num">{_minutes(c["seconds"])}</td></tr>'
            for c in slowest_cells(runs[name])
        )
        + "</table></details>"
        for name in sorted(runs)
        if slowest_cells(runs[name])
    )
    return (
        '<h2 id="time">Where the time goes</h2>\n<p class="legend">Minutes of the latest run of each notebook: '
        "training (fitting models, with their validation passes), evaluation (predictions on the evaluation "
        "sets), bootstrap (confidence intervals), plots (drawing and saving figures) and other (kernel start, "
        "data loading and cropping, tables, rendering the HTML).</p>\n"
        f'<table class="timing"><tr><th>notebook</th><th>minutes</th>{head}</tr>{body}</table>\n{cells}'
    )
