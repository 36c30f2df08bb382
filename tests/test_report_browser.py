"""Report pages opened in headless Chromium: console errors, images, links, tables, screenshots.

These tests fail (never skip) without Chromium or Playwright: CI installs Debian's chromium (.ci/run).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bloodlib.report.browser import ChromiumNotFoundError, check_pages, check_report_folder, main
from tests.report_helpers import report_folder

BAD_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>
<img src="missing.png" alt="missing"><img src="90_demo/figures/line.png" alt="line">
<a href="nowhere.html">gone</a><a href="#nope">no anchor</a><a id="here" href="#here">ok</a>
<a href="https://example.org/paper">web</a><a href="90_demo/tables/xs.csv">csv</a>
<table></table>
<details><summary>folded</summary><table><tr><td>1</td></tr></table></details>
<table style="display:none"><tr><td>2</td></tr></table>
<script>console.error("boom")</script><script>throw new Error("uncaught here")</script>
</body></html>"""


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One Chromium over a good report folder (index and page) plus a bad page and a page without tables."""
    out = report_folder(tmp_path_factory.mktemp("reports") / "quick")
    (out / "bad.html").write_text(BAD_PAGE)
    (out / "plain.html").write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>x</body></html>'
    )
    pages = [out / "index.html", out / "90_demo.html", out / "bad.html", out / "plain.html"]
    return {check.page.name: check for check in check_pages(pages, screenshots=out / "screenshots")}


def test_a_good_report_folder_passes_and_gets_screenshots(checked):
    for name in ("index.html", "90_demo.html"):
        check = checked[name]
        assert check.problems == [], name
        assert check.screenshot is not None and check.screenshot.read_bytes()[:4] == b"\x89PNG"
    # three tables on the index: the summary, the reports, where the time goes
    assert checked["index.html"].images == 1 and checked["index.html"].tables == 3
    assert checked["90_demo.html"].images == 1 and checked["90_demo.html"].tables >= 2


def test_console_errors_and_failed_requests_are_caught(checked):
    errors = checked["bad.html"].console_errors
    assert "boom" in errors
    assert any("uncaught" in e and "uncaught here" in e for e in errors)
    assert any(e.startswith("request failed:") and "missing.png" in e for e in errors)


def test_images_that_do_not_load_are_caught(checked):
    assert checked["bad.html"].broken_images == ["missing.png"]
    assert checked["bad.html"].images == 2


def test_links_that_do_not_resolve_are_caught(checked):
    assert checked["bad.html"].broken_links == ["nowhere.html: file not found", "#nope: no element with that id"]
    assert checked["bad.html"].web_links == ["https://example.org/paper"]


def test_tables_without_cells_or_space_are_caught(checked):
    assert checked["bad.html"].bad_tables == ["table 1 has no cells", "table 3 takes no space (0 x 0 px)"]
    assert checked["plain.html"].bad_tables == ["the page has no table"]


def test_missing_chromium_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("BLOODLIB_CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(ChromiumNotFoundError, match="apt-get install chromium"):
        check_pages([tmp_path / "index.html"])


def test_main_exits_2_without_an_index(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "index.html not found" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_profile_report_folder_in_chromium(tmp_path, monkeypatch):
    """A real notebook rendered with the quick profile: its page and the index pass every browser check.
    ``MPLBACKEND=Agg`` in the caller's environment (CI sets it) must not take the figures away."""
    from tests.notebook_helpers import render_quick

    monkeypatch.setenv("MPLBACKEND", "Agg")

    out, _ = render_quick("03_covid_diagnosis", tmp_path)
    checks = check_report_folder(out)
    assert [c.page.name for c in checks] == ["index.html", "03_covid_diagnosis.html"]
    assert {c.page.name: c.problems for c in checks} == {"index.html": [], "03_covid_diagnosis.html": []}
    assert all(Path(c.screenshot).is_file() for c in checks)
    page = (out / "03_covid_diagnosis.html").read_text()
    assert page.count('<details class="bl-params">') == 1 and ".staging-" not in page
    assert checks[1].images >= 4 and checks[1].tables >= 5
