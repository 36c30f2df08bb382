"""Check that every ``<img>`` and link in a report page points at something that exists."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[tuple[str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for key in ("id", "name"):
            if attributes.get(key):
                self.ids.add(attributes[key])
        if tag == "img" and attributes.get("src") is not None:
            self.targets.append((tag, attributes["src"]))
        if tag == "a" and attributes.get("href") is not None:
            self.targets.append((tag, attributes["href"]))


def broken_links(html_path: Path) -> list[str]:
    """Descriptions of every ``<img src>`` / ``<a href>`` in ``html_path`` that does not resolve.

    Relative paths must name an existing file next to the page; ``#fragment`` links must
    name an ``id`` in the page; ``data:`` images must be non-empty; web links
    (http, https, mailto) are not followed.
    """
    collector = _Collector()
    collector.feed(html_path.read_text(encoding="utf-8"))
    broken = []
    for tag, target in collector.targets:
        parts = urlsplit(target)
        if parts.scheme in ("http", "https", "mailto"):
            continue
        if parts.scheme == "data":
            if "," not in target or not target.split(",", 1)[1]:
                broken.append(f"<{tag}> empty data URI")
            continue
        if parts.scheme:
            broken.append(f"<{tag}> {target}: unsupported scheme")
            continue
        if not parts.path:
            # browsers try the fragment as written, then percent-decoded (HTML spec)
            if parts.fragment and not {parts.fragment, unquote(parts.fragment)} & collector.ids:
                broken.append(f"<{tag}> {target}: no element with that id")
            continue
        if not (html_path.parent / unquote(parts.path)).is_file():
            broken.append(f"<{tag}> {target}: file not found")
    return broken
