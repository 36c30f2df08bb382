"""Reports checked in a real browser: headless Chromium, driven by Playwright.

``make check-reports`` (``python -m bloodlib.report.browser --profile cpu``) opens
``reports/<profile>/index.html`` and every report page beside it, and checks what a reader would see:

- no console errors, uncaught exceptions or failed requests;
- every image loaded (``naturalWidth > 0``);
- every link resolves: a file next to the page exists, a ``#fragment`` names an element of its page
  (web links are listed, not followed: the machines that render reports may have no network);
- tables rendered: the page has at least one, every table has cells, and every table not folded
  away in a closed ``<details>`` takes up space on the page;

and saves a full-page screenshot of each page as ``screenshots/<page>.png`` in the report folder.

The browser is the system's Chromium (``/usr/bin/chromium``, Debian's ``chromium`` package, or
``BLOODLIB_CHROMIUM``); Playwright never downloads one. It runs headless with a fresh profile and
without background networking, so it contacts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT = {"width": 1280, "height": 900}

_INSPECT = """() => {
  const hidden = (el) => !!el.closest('details:not([open])');
  return {
    images: Array.from(document.images).map((i) => ({src: i.getAttribute('src') || '', ok: i.complete && i.naturalWidth > 0})),
    links: Array.from(document.querySelectorAll('a[href]')).map((a) => ({href: a.getAttribute('href'), url: a.href})),
    tables: Array.from(document.querySelectorAll('table')).map((t) => {
      const box = t.getBoundingClientRect();
      return {cells: t.querySelectorAll('td, th').length, hidden: hidden(t), width: box.width, height: box.height};
    }),
    ids: Array.from(document.querySelectorAll('[id], a[name]')).map((e) => e.id || e.getAttribute('name')),
  };
}"""


class ChromiumNotFoundError(FileNotFoundError):
    """No Chromium to drive; the message says how to install it."""


def chromium_path() -> str:
    """The Chromium executable: ``BLOODLIB_CHROMIUM``, else ``chromium`` on the PATH.

    Raises:
        ChromiumNotFoundError: neither exists.
    """
    value = os.environ.get("BLOODLIB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not value or not Path(value).is_file():
        raise ChromiumNotFoundError(
            "no Chromium found (BLOODLIB_CHROMIUM, or chromium on the PATH); on Debian/Ubuntu: "
            "`sudo apt-get install chromium`"
        )
    return value


@dataclasses.dataclass
class PageCheck:
    """What the browser found on one page."""

    page: Path
    console_errors: list[str] = dataclasses.field(default_factory=list)
    broken_images: list[str] = dataclasses.field(default_factory=list)
    broken_links: list[str] = dataclasses.field(default_factory=list)
    bad_tables: list[str] = dataclasses.field(default_factory=list)
    images: int = 0
    links: int = 0
    web_links: list[str] = dataclasses.field(default_factory=list)
    tables: int = 0
    screenshot: Path | None = None

    @property
    def problems(self) -> list[str]:
        """Every failed check, in words (empty: the page is fine)."""
        return (
            [f"console: {m}" for m in self.console_errors]
            + [f"image not loaded: {s}" for s in self.broken_images]
            + [f"link: {s}" for s in self.broken_links]
            + [f"table: {s}" for s in self.bad_tables]
        )


def _link_problem(link: dict[str, str], page: Path, ids: set[str]) -> str | None:
    """Why a link of ``page`` (``href`` as written, ``url`` as the browser resolved it) does not resolve, or None."""
    parts = urlsplit(link["url"])
    if parts.scheme in ("http", "https", "mailto"):
        return None
    if parts.scheme == "data":
        return None if "," in link["url"] and link["url"].split(",", 1)[1] else f"{link['href']}: empty data URI"
    if parts.scheme != "file":
        return f"{link['href']}: unsupported scheme {parts.scheme!r}"
    target = Path(url2pathname(unquote(parts.path)))
    if not target.is_file():
        return f"{link['href']}: file not found"
    if parts.fragment and target.resolve() == page.resolve() and not {parts.fragment, unquote(parts.fragment)} & ids:
        return f"{link['href']}: no element with that id"
    return None


def _table_problems(tables: list[dict]) -> list[str]:
    if not tables:
        return ["the page has no table"]
    problems = []
    for k, t in enumerate(tables, 1):
        if t["cells"] == 0:
            problems.append(f"table {k} has no cells")
        elif not t["hidden"] and (t["width"] <= 0 or t["height"] <= 0):
            problems.append(f"table {k} takes no space ({t['width']:.0f} x {t['height']:.0f} px)")
    return problems


def check_page(context: object, page_path: Path, *, screenshot: Path | None, timeout_s: float = 120.0) -> PageCheck:
    """Open ``page_path`` in a Playwright browser ``context`` and run every check (see the module docstring)."""
    result = PageCheck(page_path)
    page = context.new_page()
    try:
        page.on("console", lambda m: result.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda err: result.console_errors.append(f"uncaught {err}"))
        page.on("requestfailed", lambda r: result.console_errors.append(f"request failed: {r.url} ({r.failure})"))
        page.goto(page_path.resolve().as_uri(), wait_until="load", timeout=timeout_s * 1000)
        found = page.evaluate(_INSPECT)
        ids = set(found["ids"])
        result.images, result.links, result.tables = len(found["images"]), len(found["links"]), len(found["tables"])
        result.broken_images = [i["src"][:120] for i in found["images"] if not i["ok"]]
        result.web_links = sorted({x["url"] for x in found["links"] if urlsplit(x["url"]).scheme in ("http", "https")})
        result.broken_links = [p for p in (_link_problem(x, page_path, ids) for x in found["links"]) if p]
        result.bad_tables = _table_problems(found["tables"])
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True, timeout=timeout_s * 1000)
            result.screenshot = screenshot
    finally:
        page.close()
    return result


def check_pages(pages: list[Path], *, screenshots: Path | None = None) -> list[PageCheck]:
    """Check every page of ``pages`` in one headless Chromium; screenshots go to ``screenshots/<page>.png``.

    Raises:
        ChromiumNotFoundError: no Chromium (see :func:`chromium_path`).
        ImportError: Playwright is not installed (``pip install -e '.[dev]'``).
    """
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="bloodlib-chromium-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=list(CHROMIUM_FLAGS), viewport=VIEWPORT
        )
        try:
            return [
                check_page(context, page, screenshot=screenshots / f"{page.stem}.png" if screenshots else None)
                for page in pages
            ]
        finally:
            context.close()


def report_pages(folder: Path) -> list[Path]:
    """``index.html`` and every report page (``*.html``) of a report folder, the index first.

    Raises:
        FileNotFoundError: the folder has no ``index.html``.
    """
    index = folder / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"{index} not found: render the reports first (`make reports`)")
    return [index] + sorted(p for p in folder.glob("*.html") if p.name != "index.html")


def check_report_folder(folder: Path) -> list[PageCheck]:
    """Check the index and every report of ``folder``; screenshots in ``folder/screenshots/``."""
    return check_pages(report_pages(folder), screenshots=folder / "screenshots")


def main(argv: list[str] | None = None) -> int:
    """``python -m bloodlib.report.browser [--profile cpu | FOLDER]``: 0 when every page passes, 1 otherwise."""
    from bloodlib.params import DEFAULT_PROFILE, PROFILES
    from bloodlib.paths import reports_dir

    parser = argparse.ArgumentParser(prog="python -m bloodlib.report.browser", description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, help="a report folder (default: reports/<profile>)")
    parser.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE)
    args = parser.parse_args(argv)
    folder = args.folder or reports_dir(args.profile)
    try:
        checks = check_report_folder(folder)
    except (FileNotFoundError, ImportError) as err:
        print(f"check-reports: {err}", file=sys.stderr)
        return 2
    for check in checks:
        status = "ok" if not check.problems else f"{len(check.problems)} problem(s)"
        print(
            f"{check.page.name:28s} {status:14s} {check.images} images, {check.links} links "
            f"({len(check.web_links)} to the web, not followed), {check.tables} tables; screenshot {check.screenshot}"
        )
        for problem in check.problems:
            print(f"    {problem}")
    return 0 if all(not c.problems for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
