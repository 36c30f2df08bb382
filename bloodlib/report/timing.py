"""The index's "Where the time goes" section: minutes per notebook and phase, and the slowest cells.

It reads what the runner records per notebook in ``runs.json`` (:class:`~bloodlib.report.runner.NotebookRun`):
``phases`` (seconds of training, evaluation, bootstrap, plots and other, :mod:`bloodlib.progress`),
``reused`` (the recorded seconds of the work taken from caches instead of done) and ``cells`` (seconds
of each code cell). This run's minutes plus the reused minutes are a little less than a render with
empty caches takes on the machine that did the work (crops and prepared data are kept too, untimed).
Runs recorded before these existed show their total time only.
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
    seconds (None where the run recorded no phases); ``reused``, the recorded seconds of the work taken
    from caches, and ``empty_cache``, ``total + reused`` (None where the run recorded no reuse);
    ``unrecorded``, how many reused items had no recorded seconds (``empty_cache`` is then a lower bound)."""
    rows = []
    for name in sorted(runs):
        run = runs[name]
        phases, reused = run.get("phases") or {}, run.get("reused")
        seconds = sum(v for p, v in reused.items() if p in PHASES and isinstance(v, (int, float))) if reused else None
        total = run.get("wall_s")
        rows.append(
            {
                "notebook": name,
                "total": total,
                **{c: phases.get(c) for c in COLUMNS},
                "reused": seconds,
                "empty_cache": total + seconds if seconds is not None and isinstance(total, (int, float)) else None,
                "unrecorded": int((reused or {}).get("unrecorded") or 0),
            }
        )
    return rows


def _empty_cache(row: dict) -> str:
    """A row's minutes with empty caches, marked as a lower bound when some reuse was not recorded."""
    if row["empty_cache"] is None:
        return "–"
    return ("&ge; " if row["unrecorded"] else "") + _minutes(row["empty_cache"])


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
        + f'<td class="num">{_minutes(r["reused"])}</td><td class="num">{_empty_cache(r)}</td>'
        + "</tr>"
        for r in rows
    )
    sums = ("total", *COLUMNS, "reused", "empty_cache")
    totals = {c: sum(r[c] for r in rows if isinstance(r[c], (int, float))) for c in sums}
    complete = all(r["empty_cache"] is not None for r in rows)
    all_row = {
        "empty_cache": totals["empty_cache"] if complete else None,
        "unrecorded": sum(r["unrecorded"] for r in rows),
    }
    body += (
        f'<tr><th>all</th><th class="num">{_minutes(totals["total"])}</th>'
        + "".join(f'<th class="num">{_minutes(totals[c])}</th>' for c in COLUMNS)
        + f'<th class="num">{_minutes(totals["reused"])}</th><th class="num">{_empty_cache(all_row)}</th>'
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
        "data loading and cropping, tables, rendering the HTML). <i>Reused</i>: the minutes the work this run "
        "took from caches (trained models, kept predictions and tables) took when it was done; <i>with empty "
        "caches</i>: this run plus the reused work, a little less than a first render takes on the machine "
        "that did the work (the WBC crops and prepared data kept between renders are not counted; &ge;: some "
        "reused work has no record of its time, e.g. predictions kept before such records existed).</p>\n"
        f'<table class="timing"><tr><th>notebook</th><th>minutes</th>{head}'
        f"<th>reused</th><th>with empty caches</th></tr>{body}</table>\n{cells}"
    )
