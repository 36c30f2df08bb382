"""What the report runner shows while notebooks run, and the time each cell and phase took.

For every notebook :class:`NotebookWatch` follows the execution from two sides:

- the cells, through nbclient's hooks (``on_notebook_start``, ``on_cell_start``, ``on_cell_executed``,
  which papermill passes on): a line per code cell as it starts (``cell n/N``, elapsed time, the cell's
  first line) and each cell's seconds;
- the kernel's event file (:mod:`bloodlib.progress`, named by ``BLOODLIB_PROGRESS`` in the kernel's
  environment), read by a thread while the notebook runs: a line per training epoch (epoch n/N, loss,
  validation metrics, seconds per epoch, time left), the seconds of each phase (training,
  evaluation, bootstrap, plots) and the recorded seconds of the work taken from caches instead.

:class:`Console` prints those lines (one lock, so notebooks run in parallel never mix a line);
:func:`summary_table` is the closing table of a run. A sample::

    [02_wbc_subtypes] start (profile cpu, 17 code cells)
    [02_wbc_subtypes] cell 5/17 at 0:09  data = load_data(params)
    [02_wbc_subtypes] cell 9/17 at 1:02  trained = train_models(params, data)
    [02_wbc_subtypes]   arch1 epoch 3/20  loss 1.182  val_loss 1.214  val_bacc 0.512  31 s/epoch  ETA 8:47
    [02_wbc_subtypes] ok in 41.3 min -> reports/cpu/02_wbc_subtypes.html
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from bloodlib.progress import PHASES

#: Epoch metrics shown first (those present, in this order); else the first validation metrics.
SHOWN_METRICS = ("train_loss", "val_loss", "val_bacc", "val_mAP", "val_acc")
#: The longest cell label shown.
LABEL_CHARS = 70


def clock(seconds: float) -> str:
    """``seconds`` as ``m:ss`` or ``h:mm:ss`` (``--:--`` if unknown)."""
    if seconds is None or not seconds >= 0:
        return "--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def cell_label(source: str) -> str:
    """A cell's first non-empty line (a comment without its ``#``), at most :data:`LABEL_CHARS` characters."""
    for line in source.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line if len(line) <= LABEL_CHARS else line[: LABEL_CHARS - 1] + "…"
    return ""


def epoch_line(event: dict[str, Any]) -> str:
    """One training epoch event (:func:`bloodlib.progress.epoch_event`) as a terminal line."""
    metrics = event.get("metrics") or {}
    shown = [k for k in SHOWN_METRICS if k in metrics]
    if not any(k.startswith("val_") for k in shown):
        shown += [k for k in metrics if k.startswith("val_")][:2]
    numbers = "  ".join(
        f"{'loss' if k == 'train_loss' else k} {metrics[k]:.3f}" for k in shown if metrics[k] is not None
    )
    return (
        f"  {event.get('desc', 'train')} epoch {event.get('epoch')}/{event.get('epochs')}  {numbers}  "
        f"{event.get('seconds', 0):.0f} s/epoch  ETA {clock(event.get('eta_s'))}"
    )


class Console:
    """Prints progress lines, each prefixed with its notebook, to ``stream`` (default stdout), flushed."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def line(self, name: str | None, text: str) -> None:
        out = self.stream or sys.stdout
        with self._lock:
            out.write((f"[{name}] " if name else "") + text + "\n")
            out.flush()


class NotebookWatch:
    """Follows one notebook run (see the module docstring); ``console`` None records times only.

    Args:
        name: the notebook, e.g. ``"02_wbc_subtypes"``.
        channel: the kernel's event file (:data:`bloodlib.progress.CHANNEL_ENV`), created empty here.
        console: where the lines go; None prints nothing.
        poll_s: how often the event file is read while the notebook runs.
    """

    def __init__(self, name: str, channel: Path, console: Console | None = None, *, poll_s: float = 0.5) -> None:
        self.name, self.channel, self.console, self.poll_s = name, Path(channel), console, poll_s
        self.channel.write_text("", encoding="utf-8")
        self.started = time.perf_counter()
        self.cells: list[dict[str, Any]] = []
        self._phases: dict[str, float] = {}
        self._reused: dict[str, float] = {}
        self._reused_unknown = 0
        self._code_cells: list[int] = []  # notebook indices of the code cells that run
        self._cell_started: dict[int, float] = {}
        self._offset, self._partial = 0, ""
        self._read_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- nbclient hooks (papermill passes them to its NotebookClient) --

    def hooks(self) -> dict[str, Any]:
        """The keyword arguments that attach this watch to ``papermill.execute_notebook``."""
        return {
            "on_notebook_start": self.on_notebook_start,
            "on_cell_start": self.on_cell_start,
            "on_cell_executed": self.on_cell_executed,
        }

    def on_notebook_start(self, notebook: Any, **_: Any) -> None:
        self._code_cells = [
            i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code" and cell.source.strip()
        ]

    def on_cell_start(self, cell: Any, cell_index: int, **_: Any) -> None:
        if cell_index not in self._code_cells:
            return
        self._cell_started[cell_index] = time.perf_counter()
        self._say(
            f"cell {self._code_cells.index(cell_index) + 1}/{len(self._code_cells)} at "
            f"{clock(time.perf_counter() - self.started)}  {cell_label(cell.source)}"
        )

    def on_cell_executed(self, cell: Any, cell_index: int, **_: Any) -> None:
        started = self._cell_started.pop(cell_index, None)
        if started is None:
            return
        self.cells.append(
            {
                "cell": self._code_cells.index(cell_index) + 1,
                "label": cell_label(cell.source),
                "seconds": round(time.perf_counter() - started, 2),
            }
        )

    # -- the kernel's event file --

    def start(self) -> NotebookWatch:
        """Start the clock and follow the event file in a thread (only with a console: without one the
        file is read once, by :meth:`stop`)."""
        self.started = time.perf_counter()
        if self.console is not None:
            self._thread = threading.Thread(target=self._follow, name=f"progress {self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following and read what the kernel wrote last."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.read_events()

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.read_events()

    def read_events(self) -> list[dict[str, Any]]:
        """The complete event lines added since the last read, each acted on (epoch lines printed,
        phase seconds added up); a line that is not JSON is skipped."""
        with self._read_lock:
            try:
                with open(self.channel, encoding="utf-8") as channel:
                    channel.seek(self._offset)
                    text = channel.read()
                    self._offset = channel.tell()
            except OSError:
                return []
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            events = []
            for line in lines:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    events.append(event)
                    self._handle(event)
            return events

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "phase" and event.get("phase") in PHASES and isinstance(event.get("seconds"), (int, float)):
            self._phases[event["phase"]] = self._phases.get(event["phase"], 0.0) + float(event["seconds"])
        elif kind == "reused" and event.get("phase") in PHASES:
            seconds = event.get("seconds")
            if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
                self._reused[event["phase"]] = self._reused.get(event["phase"], 0.0) + float(seconds)
            else:
                self._reused_unknown += 1
        elif kind == "epoch":
            self._say(epoch_line(event))

    def phases(self, wall_s: float) -> dict[str, float]:
        """Seconds per phase of :data:`~bloodlib.progress.PHASES` and ``other`` (the rest of ``wall_s``:
        kernel start, data, tables, HTML), rounded to 0.1 s."""
        spent = {p: round(self._phases.get(p, 0.0), 1) for p in PHASES}
        return {**spent, "other": round(max(0.0, wall_s - sum(spent.values())), 1)}

    def reused(self) -> dict[str, float | int]:
        """Recorded seconds per phase of the work this run took from caches (trained models, kept
        predictions and tables) instead of doing it, and ``unrecorded``: how many reused items had no
        record of their seconds (e.g. predictions kept before such records existed)."""
        return {**{p: round(self._reused.get(p, 0.0), 1) for p in PHASES}, "unrecorded": self._reused_unknown}

    def say(self, text: str) -> None:
        """Print ``text`` for this notebook (nothing without a console)."""
        self._say(text)

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.line(self.name, text)


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def summary_table(runs: list[Any], out_dir: Path) -> str:
    """The closing table: notebook, status, minutes and the report (or the failed notebook), then the index."""
    rows = [("notebook", "status", "minutes", "report")]
    for run in runs:
        if run.status == "ok":
            where = display_path(out_dir / f"{run.name}.html")
        elif (out_dir / f"{run.name}.failed.ipynb").is_file():
            where = display_path(out_dir / f"{run.name}.failed.ipynb") + f"  ({run.error})"
        else:
            where = run.error or ""
        rows.append((run.name, run.status, f"{run.wall_s / 60:.1f}", where))
    widths = [max(len(row[k]) for row in rows) for k in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}".rstrip() for a, b, c, d in rows]
    total = sum(run.wall_s for run in runs) / 60
    lines.append(f"{'total':<{widths[0]}}  {'':<{widths[1]}}  {total:>{widths[2]}.1f}")
    lines.append(f"index: {display_path(out_dir / 'index.html')}")
    return "\n".join(lines)
