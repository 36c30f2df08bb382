"""``reports/<profile>/index.html``: the paper's numbers beside ours first, then every report, provenance.

The page leads with the summary rows of every notebook's ``metrics.json`` (``metric``, ``paper``,
``ours``, ``note``), grouped by notebook, each with a cue (:func:`compare`): **better**, **within CI**
(the paper's number lies in our confidence interval) or **worse** than the paper, or none where the
paper gives no number. Then each notebook's status, time and links, then provenance.
"""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path

from bloodlib.fsutil import atomic_write_text
from bloodlib.report.timing import timing_section

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}.ok{color:#176317;font-weight:bold}.failed{color:#b00020;font-weight:bold}
.thumbs img{height:120px;margin:4px;border:1px solid #ddd}code{background:#f6f6f6;padding:1px 3px}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.task th{background:#e8eef6;font-size:105%}tr.task th small{font-weight:normal;color:#444;margin-left:1em}
.cue{display:inline-block;padding:0 6px;border-radius:3px;font-weight:600;white-space:nowrap}
.cue.better{background:#d8f0d8;color:#145214}.cue.within{background:#e4e9f2;color:#1f3d66}
.cue.worse{background:#f8dcdc;color:#8a1020}.cue.none{color:#888;font-weight:normal}
p.legend{font-size:90%;color:#444}
details.differs summary{cursor:pointer;font-size:92%}details.differs[open] summary{color:#555}
"""

#: Words in a metric's name that make a lower value the better one (errors, false negatives, time).
LOWER_IS_BETTER = ("false negative", "mape", "mae", "error", "minutes", "seconds", "time")
_CI = re.compile(r"(\d+(?:\.\d+)?)\s*% CI[:\s]*\[?\s*([-+]?\d*\.?\d+)\s*(?:,|–|-|to)\s*([-+]?\d*\.?\d+)")
#: Cue class -> its label on the page.
CUES = {"better": "▲ better", "within": "● within CI", "worse": "▼ worse", "none": "–"}


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return escape(str(value))


def _link(href: str, text: str) -> str:
    return f'<a href="{escape(href)}">{escape(text)}</a>'


def _files_cell(out_dir: Path, name: str) -> str:
    folder = out_dir / name
    if not folder.is_dir():
        return "–"
    parts = []
    if (folder / "metrics.json").is_file():
        parts.append(_link(f"{name}/metrics.json", "metrics.json"))
    if (folder / f"{name}.ipynb").is_file():
        parts.append(_link(f"{name}/{name}.ipynb", "executed notebook"))
    tables = sorted((folder / "tables").glob("*.csv"))
    parts += [_link(f"{name}/tables/{t.name}", t.name) for t in tables]
    return "<br>".join(parts)


def _thumbs(out_dir: Path, name: str) -> str:
    figures = sorted((out_dir / name / "figures").glob("*.png"))
    return "".join(
        f'<a href="{escape(f"{name}/figures/{f.name}")}"><img src="{escape(f"{name}/figures/{f.name}")}" '
        f'alt="{escape(f.stem)}" title="{escape(f.stem)}"></a>'
        for f in figures
    )


def _summary_rows(out_dir: Path, name: str) -> list[dict]:
    path = out_dir / name / "metrics.json"
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8")).get("summary", [])


#: The "differs from the paper in" cell of a summary row that does not say.
NO_PAPER_NUMBER = "the paper reports no such number"
NOT_STATED = "not stated by the notebook"


def _differs_cell(row: dict) -> str:
    """A summary row's ``differs`` (what differs from the paper), with our model and the paper's below it
    (``model``, ``paper_model``); rows without ``differs`` say why."""
    differs = row.get("differs") or (NO_PAPER_NUMBER if row.get("paper") is None else NOT_STATED)
    models = [f"{label}: {row[key]}" for label, key in (("ours", "model"), ("paper", "paper_model")) if row.get(key)]
    text = escape(str(differs)) + "".join(f"<br><small>{escape(str(m))}</small>" for m in models)
    if not row.get("differs") and not models:
        return text
    # folded: the same deviations repeat on every row of a model and would make the summary pages long
    first = escape(str(differs).split(";", 1)[0])
    return f'<details class="differs"><summary>{first}</summary>{text}</details>'


def confidence_interval(row: dict) -> tuple[float, float] | None:
    """Our interval of a summary row: its ``ci`` (``[low, high]``), else the first "NN% CI a-b" (or
    "[a, b]") in its note; None if it has neither."""
    ci = row.get("ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        return float(ci[0]), float(ci[1])
    found = _CI.search(str(row.get("note", "")))
    return (float(found.group(2)), float(found.group(3))) if found else None


def higher_is_better(row: dict) -> bool:
    """A summary row's direction: its ``better`` (``"higher"`` or ``"lower"``), else lower for the
    metrics named in :data:`LOWER_IS_BETTER`, higher for the rest."""
    if row.get("better") in ("higher", "lower"):
        return row["better"] == "higher"
    metric = str(row.get("metric", "")).lower()
    return not any(word in metric for word in LOWER_IS_BETTER)


def compare(row: dict) -> str:
    """The cue of a summary row: ``"within"`` when the paper's number lies in our interval, else
    ``"better"`` or ``"worse"`` by the row's direction; ``"none"`` without both numbers (a tie
    without an interval counts as within)."""
    paper, ours = row.get("paper"), row.get("ours")
    if not isinstance(paper, (int, float)) or not isinstance(ours, (int, float)):
        return "none"
    ci = confidence_interval(row)
    if (ci is not None and min(ci) <= paper <= max(ci)) or ours == paper:
        return "within"
    return "better" if (ours > paper) == higher_is_better(row) else "worse"


def _cue(kind: str, row: dict) -> str:
    ci = confidence_interval(row)
    title = f"ours {_fmt(row.get('ours'))}" + (f", CI {ci[0]:.3f}–{ci[1]:.3f}" if ci else ", no CI")
    title += f"; paper {_fmt(row.get('paper'))}; {'higher' if higher_is_better(row) else 'lower'} is better"
    return f'<span class="cue {kind}" title="{escape(title)}">{CUES[kind]}</span>'


def _summary_section(out_dir: Path, names: list[str]) -> str:
    """The paper-vs-ours table, one group of rows per notebook, each row with its cue."""
    groups = []
    for name in names:
        rows = _summary_rows(out_dir, name)
        if not rows:
            continue
        kinds = [compare(row) for row in rows]
        tally = " · ".join(
            f"{kinds.count(k)} {CUES[k].split(' ', 1)[1]}" for k in ("better", "within", "worse") if k in kinds
        )
        report = _link(f"{name}.html", "report") if (out_dir / f"{name}.html").is_file() else ""
        body = "".join(
            f"<tr><td>{escape(row['metric'])}</td>"
            f'<td class="num">{_fmt(row.get("paper"))}</td><td class="num">{_fmt(row.get("ours"))}</td>'
            f"<td>{_cue(kind, row)}</td><td>{escape(str(row.get('note', '')))}</td><td>{_differs_cell(row)}</td></tr>"
            for row, kind in zip(rows, kinds)
        )
        groups.append(
            f'<tr class="task"><th colspan="6">{escape(name)} {report}<small>{escape(tally)}</small></th></tr>{body}'
        )
    return (
        '<table class="summary"><tr><th>metric</th><th>paper</th><th>ours</th><th>vs paper</th>'
        "<th>note (split, protocol, interval)</th><th>differs from the paper in</th></tr>"
        + ("".join(groups) or '<tr><td colspan="6">no metrics yet</td></tr>')
        + "</table>"
    )


def render_index(out_dir: Path, record: dict) -> str:
    """The index page for a report folder and its ``runs.json`` record."""
    prov = record.get("provenance", {})
    runs = record.get("notebooks", {})
    rows, details = [], []
    for name in sorted(runs):
        run = runs[name]
        html_ok = (out_dir / f"{name}.html").is_file()
        report = _link(f"{name}.html", f"{name}.html") if html_ok else "–"
        status = f'<span class="{escape(run["status"])}">{escape(run["status"])}</span>'
        if run["status"] == "failed":
            status += f"<br><small>{escape(run.get('error') or '')}</small>"
            if (out_dir / f"{name}.failed.ipynb").is_file():
                status += "<br>" + _link(f"{name}.failed.ipynb", "failed notebook")
            if html_ok:
                report += "<br><small>(previous good report)</small>"
        rows.append(
            f"<tr><td>{escape(name)}</td><td>{status}</td><td>{report}</td>"
            f'<td class="num">{run["wall_s"] / 60:.1f}</td><td>{escape(run["finished_at"])}</td>'
            f"<td>{_files_cell(out_dir, name)}</td></tr>"
        )
        data = "".join(
            f"<li><code>{escape(d['name'])}</code>: {'verified' if d['ok'] else 'NOT verified: ' + escape('; '.join(d['problems']))}"
            f" – {escape(d['path'] or '')}<br><small>"
            + "; ".join(f"{escape(k)} <code>{escape(v)}</code>" for k, v in d["sha256"].items())
            + "</small></li>"
            for d in run.get("data", [])
        )
        params = escape(json.dumps(run.get("parameters", {}), indent=1))
        details.append(
            f"<details><summary>{escape(name)}: parameters and data</summary><pre>{params}</pre>"
            f"<ul>{data or '<li>no registered data sets</li>'}</ul></details>"
        )
        thumbs = _thumbs(out_dir, name)
        if thumbs:
            details.append(f'<div class="thumbs"><b>{escape(name)} figures</b><br>{thumbs}</div>')
    versions = ", ".join(f"{escape(k)} {escape(v)}" for k, v in prov.get("packages", {}).items())
    machine = prov.get("machine", {})
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>bloodlib reports – {escape(str(prov.get("profile", "")))}</title>
<link rel="icon" href="data:,"><style>{_STYLE}</style></head><body>
<h1>bloodlib reports – profile <code>{escape(str(prov.get("profile", "")))}</code></h1>
<p>Automated blood-smear analysis, rebuilt from Shojaee &amp; Omidvar. Research tool, not a diagnostic device.</p>
<h2>Summary: the paper's numbers beside ours</h2>
<p class="legend">{CUES["better"]} / {CUES["worse"]}: ours is better / worse than the paper's number (by the metric's
direction: lower for errors, false negatives and times); {CUES["within"]}: the paper's number lies in our confidence
interval (given in the note), or equals ours; {CUES["none"]}: the paper gives no number. Hover a cue for the numbers.</p>
{_summary_section(out_dir, sorted(runs))}
<h2>Reports</h2>
<table><tr><th>notebook</th><th>status</th><th>report</th><th>time (min)</th><th>finished (UTC)</th><th>files</th></tr>
{"".join(rows)}</table>
{timing_section(runs)}
<h2>Provenance</h2>
<ul><li>git commit: <code>{escape(str(prov.get("git_commit", "unknown")))}</code></li>
<li>machine: {escape(str(machine.get("platform", "")))}, {escape(str(machine.get("cpus", "")))} CPUs</li>
<li>packages: {versions}</li></ul>
{"".join(details)}
</body></html>
"""


def write_index(out_dir: Path, record: dict, root: Path | None = None) -> Path:
    """Write ``index.html`` into ``out_dir`` atomically."""
    return atomic_write_text(out_dir / "index.html", render_index(out_dir, record))
