"""Report pages that read like reports (parameters once, code folded, nothing from the web) and the index's summary."""

from __future__ import annotations

import re

import pytest

from bloodlib.report.html import parameters_html, report_html
from bloodlib.report.index import compare, confidence_interval
from bloodlib.report.links import broken_links
from tests.report_helpers import STAGING, executed_notebook, report_folder


@pytest.fixture(scope="module")
def page() -> str:
    return report_html(executed_notebook())


def text_of(html: str) -> str:
    """The page's text, tags (e.g. syntax highlighting) removed."""
    return re.sub(r"<[^>]+>", "", html)


def test_parameters_appear_once_as_a_collapsed_table_without_machine_paths(page):
    assert page.count('<details class="bl-params">') == 1
    block = re.search(r'<details class="bl-params">.*?</details>', page, re.S).group(0)
    assert "profile <code>quick</code>, 2 values" in block
    assert re.findall(r'<td class="bl-name">(\w+)</td><td>([^<]*)</td>', block) == [("size", "4"), ("models", "a")]
    assert STAGING not in page and "staging" not in page and "report_dir" not in page
    assert "# Parameters" not in text_of(page) and "size = 3" not in text_of(page)  # neither parameters cell


def test_code_is_folded_and_outputs_stay(page):
    assert page.count('<details class="bl-code"><summary>code</summary>') == 2  # the two code cells left
    assert "report.figure(fig, 'line')" in text_of(page) and "size: 4" in page and 'src="data:image/png;base64,' in page
    assert '<table class="dataframe">' in page
    body = page.split("<body", 1)[1]
    assert "In&nbsp;[" not in body and "Out[" not in body


def test_nothing_is_loaded_from_the_web_and_widgets_are_dropped(page):
    assert re.findall(r"<script[^>]+src=", page) == []
    assert "widget-view+json" not in page and "HBox()" not in page
    assert re.search(r'<link href="data:," rel="icon"/?>', page)


def test_a_notebook_not_run_by_papermill_keeps_its_parameters_cell():
    nb = executed_notebook()
    del nb.metadata["papermill"]
    page = report_html(nb)
    assert "bl-params" not in page.split("</style>")[-1] and "size = 3" in text_of(page)


@pytest.mark.parametrize(
    ("value", "shown"), [("/abs/path/to/run", "…/run"), ("C:\\Users\\x\\data", "…/data"), ("relative/x", "relative/x")]
)
def test_absolute_paths_are_shortened(value, shown):
    assert f"<td>{shown}</td>" in parameters_html({"where": value})


@pytest.mark.parametrize(
    ("row", "cue"),
    [
        ({"metric": "accuracy", "paper": 0.8, "ours": 0.7, "note": "95% CI [0.6, 0.85]"}, "within"),
        ({"metric": "accuracy", "paper": 0.8, "ours": 0.7, "note": "95% CI 0.65-0.75"}, "worse"),
        ({"metric": "accuracy", "paper": 0.8, "ours": 0.9}, "better"),
        ({"metric": "false negatives (% of test set)", "paper": 5.26, "ours": 7.69}, "worse"),
        ({"metric": "RBC count MAPE %", "paper": 20.0, "ours": 10.0}, "better"),
        ({"metric": "loss", "paper": 1.0, "ours": 2.0, "better": "lower"}, "worse"),
        ({"metric": "auc", "paper": 0.8, "ours": 0.7, "ci": [0.75, 0.82]}, "within"),
        ({"metric": "auc", "paper": None, "ours": 0.7}, "none"),
        ({"metric": "auc", "paper": 0.7, "ours": None}, "none"),
        ({"metric": "auc", "paper": 0.7, "ours": 0.7}, "within"),
    ],
)
def test_compare_gives_the_cue(row, cue):
    assert compare(row) == cue


def test_confidence_interval_from_the_note():
    assert confidence_interval({"note": "x; 95% CI [0.415, 1.000] (t)"}) == (0.415, 1.0)
    assert confidence_interval({"note": "profile quick; 95% CI 0.000-0.120"}) == (0.0, 0.12)
    assert confidence_interval({"note": "no interval"}) is None


def test_index_leads_with_the_summary_then_the_reports(tmp_path):
    out = report_folder(tmp_path / "quick")
    index = (out / "index.html").read_text()
    assert index.index("Summary: the paper's numbers beside ours") < index.index("<h2>Reports</h2>")
    cues = re.findall(r'<span class="cue (\w+)"', index)
    assert cues == ["within", "better", "worse", "none"]
    assert "1 better · 1 within CI · 1 worse" in index
    assert '<td class="num">1.5</td>' in index  # 90 s, in minutes
    assert broken_links(out / "index.html") == [] and broken_links(out / "90_demo.html") == []
