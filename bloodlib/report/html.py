"""The HTML of an executed notebook, made to read like a report.

nbconvert's JupyterLab template, with four changes (the executed notebook beside it keeps everything):

- **parameters once**: the notebook's ``parameters`` cell and papermill's ``injected-parameters`` copy
  are replaced by one collapsed table of the values the run used (``<details>``), without the
  runner's staging folder (``report_dir``) or any other machine path;
- **code folded**: every code cell's source sits in a closed ``<details>`` ("code") above its outputs,
  and the ``In [n]:`` / ``Out[n]:`` prompts are left out;
- **self-contained**: no script is loaded from the web (require.js, MathJax, Mermaid, the widget
  manager), so a report opened offline or from a plain web server shows no errors; live widgets (tqdm
  bars in the kernel) are dropped, their state being meaningless in a static page;
- a blank favicon, so a browser asks the server for nothing else.
"""

from __future__ import annotations

import copy
import json
import re
from html import escape
from pathlib import Path
from typing import Any

from bloodlib.fsutil import atomic_write_text

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PARAMETER_TAGS = ("parameters", "injected-parameters")
#: Runner parameters left out of the table (``report_dir`` is the runner's staging folder).
HIDDEN_PARAMETERS = ("report_dir",)
_ABSOLUTE = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)")
_ASSIGNED = re.compile(r"^([A-Za-z_]\w*)\s*=", re.MULTILINE)

TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block extra_css %}
<link rel="icon" href="data:,">
<style type="text/css">
details.bl-code > summary,details.bl-params > summary{font-family:var(--jp-ui-font-family,system-ui,sans-serif)}
details.bl-code > summary{cursor:pointer;color:#777;font-size:85%;margin:2px 0 2px 0;list-style-position:inside}
details.bl-code[open] > summary{margin-bottom:4px}
details.bl-params{margin:0.5em 0 1em 0}details.bl-params > summary{cursor:pointer;font-weight:600}
table.bl-params{border-collapse:collapse;font-size:85%;margin-top:0.5em}
table.bl-params td{border:1px solid #ddd;padding:2px 6px;vertical-align:top}
table.bl-params td.bl-name{font-family:monospace;color:#555;background:#f7f7f7}
</style>
{% endblock extra_css %}
{% block input_group -%}
<details class="bl-code"><summary>code</summary>
{{ super() }}
</details>
{%- endblock input_group %}
{% block rawcell scoped %}
{%- if cell.metadata.get('bloodlib') == 'parameters' -%}
<div class="jp-Cell jp-MarkdownCell jp-Notebook-cell">{{ cell.source }}</div>
{%- else -%}
{{ super() }}
{%- endif -%}
{% endblock rawcell %}
"""


def _value_text(value: Any) -> str:
    """A parameter value as shown: lists comma-separated, absolute paths by their last part only."""
    if isinstance(value, (list, tuple)):
        return ", ".join(_value_text(v) for v in value)
    if isinstance(value, str) and _ABSOLUTE.match(value):
        return "…/" + re.split(r"[\\/]", value.rstrip("\\/"))[-1]
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def parameters_html(parameters: dict[str, Any], *, order: list[str] | None = None, columns: int = 3) -> str:
    """A collapsed block holding a table of ``parameters`` (name, value; ``columns`` pairs per row) in
    ``order`` (names not in it last, alphabetically), :data:`HIDDEN_PARAMETERS` left out."""
    rank = {name: i for i, name in enumerate(order or [])}
    names = sorted(parameters, key=lambda name: (rank.get(name, len(rank)), name))
    shown = {k: parameters[k] for k in names if k not in HIDDEN_PARAMETERS}
    profile = shown.pop("profile", None)
    cells = [f'<td class="bl-name">{escape(k)}</td><td>{escape(_value_text(v))}</td>' for k, v in shown.items()]
    rows = ["".join(cells[i : i + columns]) for i in range(0, len(cells), columns)]
    title = f"Parameters: profile <code>{escape(str(profile))}</code>, " if profile is not None else "Parameters: "
    return (
        f'<details class="bl-params"><summary>{title}{len(shown)} values</summary>'
        f'<table class="bl-params">{"".join(f"<tr>{row}</tr>" for row in rows)}</table></details>'
    )


def report_notebook(notebook: Any) -> Any:
    """A copy of the executed ``notebook`` prepared for :func:`report_html` (see the module docstring)."""
    import nbformat

    nb = copy.deepcopy(notebook)
    nb.metadata.pop("widgets", None)
    parameters = nb.metadata.get("papermill", {}).get("parameters")
    order = [
        name
        for cell in nb.cells
        if "parameters" in cell.get("metadata", {}).get("tags", [])
        for name in _ASSIGNED.findall(cell.source)
    ]
    cells = []
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.cell_type == "code" and parameters is not None and set(tags) & set(PARAMETER_TAGS):
            if not any(c.metadata.get("bloodlib") == "parameters" for c in cells):
                block = nbformat.v4.new_raw_cell(parameters_html(parameters, order=order))
                block.metadata["bloodlib"] = "parameters"
                cells.append(block)
            continue
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
        cells.append(cell)
    nb.cells = cells
    return nb


def report_html(notebook: Any) -> str:
    """The report page of an executed notebook (a ``nbformat`` node)."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        extra_loaders=[DictLoader({"bloodlib_report.html.j2": TEMPLATE})],
        template_file="bloodlib_report.html.j2",
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    body, _ = exporter.from_notebook_node(report_notebook(notebook))
    return body


def render_html(executed: Path, html: Path) -> Path:
    """Write the report page of the executed notebook ``executed`` to ``html`` (atomically)."""
    import nbformat

    return atomic_write_text(html, report_html(nbformat.read(executed, as_version=4)))
