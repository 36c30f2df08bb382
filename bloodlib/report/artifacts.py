"""What a notebook hands to its report: figures as PNG, tables as CSV, ``metrics.json``.

A notebook makes one :class:`ReportWriter` from its ``report_dir`` parameter (the
report runner injects a staging folder; run by hand in JupyterLab, the default
is ``reports/interactive/<notebook>/``) and passes every figure, table and the
final metrics through it. Each file is written to a temporary name and renamed,
so a reader never sees half a file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bloodlib.fsutil import atomic_write_bytes, atomic_write_text
from bloodlib.jsonutil import json_text
from bloodlib.paths import project_root
from bloodlib.progress import phase

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ReportWriter:
    """Collects a notebook's figures, tables and metrics into its report folder.

    Args:
        notebook: notebook name, e.g. ``"03_covid_diagnosis"``.
        report_dir: the folder to write into; ``""`` means ``reports/interactive/<notebook>``
            under the project root.

    Layout: ``<report_dir>/figures/<name>.png``, ``<report_dir>/tables/<name>.csv``,
    ``<report_dir>/metrics.json``.
    """

    def __init__(self, notebook: str, report_dir: str | Path = "") -> None:
        self.notebook = notebook
        self.dir = Path(report_dir) if str(report_dir) else project_root() / "reports" / "interactive" / notebook
        self.dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _check_name(name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"artifact name {name!r} must be letters, digits, '_', '-' or '.', no folders")
        return name

    def figure(self, fig: Any, name: str, *, dpi: int = 120) -> None:
        """Save a matplotlib figure as ``figures/<name>.png`` (it still shows inline); the drawing counts
        as the ``plots`` phase (:mod:`bloodlib.progress`)."""
        import io

        buffer = io.BytesIO()
        with phase("plots"):
            fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        atomic_write_bytes(self.dir / "figures" / f"{self._check_name(name)}.png", buffer.getvalue())

    def table(self, frame: Any, name: str, *, index: bool = False) -> Any:
        """Save a pandas DataFrame as ``tables/<name>.csv`` and return it for display."""
        text = frame.to_csv(index=index, float_format="%.6g")
        atomic_write_text(self.dir / "tables" / f"{self._check_name(name)}.csv", text)
        return frame

    def figures(self, figures: Mapping[str, Any], *, dpi: int = 120) -> None:
        """Save each of ``figures`` (name -> matplotlib Figure, possibly none) with :meth:`figure`."""
        for name, fig in figures.items():
            self.figure(fig, name, dpi=dpi)

    def tables(
        self,
        frames: Mapping[str, Any],
        *,
        prefix: str,
        captions: Mapping[str, str] | None = None,
        index: bool = False,
        decimals: int | None = None,
    ) -> None:
        """Save each of ``frames`` (key -> DataFrame) as ``tables/<prefix>_<key>.csv`` and display it
        under its Markdown caption (``captions[key]``; the key in bold by default), rounded to
        ``decimals`` on screen only."""
        from IPython.display import Markdown, display

        for key, frame in frames.items():
            self.table(frame, f"{prefix}_{key}", index=index)
            caption = (captions or {}).get(key, f"**{key}**")
            display(Markdown(caption), frame if decimals is None else frame.round(decimals))

    def metrics(self, metrics: dict[str, Any], *, summary: list[dict[str, Any]] | None = None) -> Path:
        """Write ``metrics.json``: ``{"notebook", "summary", "metrics"}``.

        ``summary`` rows (``metric``, ``paper``, ``ours``, ``note``) go into the report index,
        the paper's number beside ours.
        """
        for row in summary or []:
            missing = {"metric", "paper", "ours"} - set(row)
            if missing:
                raise ValueError(f"summary row {row!r} lacks {sorted(missing)}")
        payload = {"notebook": self.notebook, "summary": summary or [], "metrics": metrics}
        return atomic_write_text(self.dir / "metrics.json", json_text(payload))
