"""Progress and timing events that library code in a notebook's kernel sends to the report runner.

The report runner (:mod:`bloodlib.report.runner`) starts each kernel with :data:`CHANNEL_ENV` naming a
file; :func:`emit` appends one JSON object per line to it, and the runner reads the file while the
notebook runs (:mod:`bloodlib.report.progress`): per-epoch training lines for the terminal, and the
seconds spent in each :data:`PHASES` phase for ``runs.json`` and the index. Without :data:`CHANNEL_ENV`
(JupyterLab, ``bloodlib train``, the tests) :func:`emit` does nothing, so the notebook's own output
(tqdm bars in place) is all there is.

Events (every one has ``"event"`` and ``"time"``, seconds since the epoch):

- ``{"event": "epoch", "desc", "epoch", "epochs", "seconds", "eta_s", "metrics": {name: number}}``:
  one finished training epoch of :func:`bloodlib.training.fit` (``eta_s``: the mean epoch time of this
  run times the epochs left);
- ``{"event": "phase", "phase", "seconds"}``: the time spent inside one outermost :class:`phase` block;
- ``{"event": "reused", "phase", "seconds", "what"}``: work of ``phase`` taken from a cache instead of
  done (a trained model, kept predictions or tables), with the seconds it took when it was done (null
  where that was not recorded); the index adds them to this run's minutes, which gives the minutes a
  render with empty caches takes (:func:`reused_event`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from bloodlib.fsutil import atomic_write_bytes

#: The environment variable naming the event file (set by the report runner for its kernels).
CHANNEL_ENV = "BLOODLIB_PROGRESS"
#: The phases a notebook's time is split into (the rest is ``other``: data, set-up, tables, kernel start).
PHASES = ("training", "evaluation", "bootstrap", "plots")

_WRITE = threading.Lock()
_ACTIVE = threading.local()
#: kept items (model folders, kept files) this process computed or reported as reused: each counts once,
#: so a model trained in this notebook and loaded again later is not reported as reused work
_COUNTED: set[str] = set()


def emit(event: str, **fields: Any) -> bool:
    """Append ``{"event": event, "time": now, **fields}`` as one line to the file named by
    :data:`CHANNEL_ENV`; returns whether it was written (False without the variable, or when the file
    cannot be written: progress never stops a notebook). Non-finite floats are written as null."""
    path = os.environ.get(CHANNEL_ENV)
    if not path:
        return False
    record = {"event": event, "time": time.time(), **fields}
    try:
        line = json.dumps(record, allow_nan=False, default=str) + "\n"
    except ValueError:  # a NaN or infinity somewhere
        line = json.dumps(_finite(record), default=str) + "\n"
    try:
        with _WRITE, open(path, "a", encoding="utf-8") as channel:
            channel.write(line)
    except OSError:
        return False
    return True


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


class phase(contextlib.ContextDecorator):
    """Time a block (or, as a decorator, a function) as one of :data:`PHASES` and :func:`emit` it.

    Only the outermost phase of a thread counts: the validation passes inside training are training,
    the predictions inside a bootstrap are bootstrap.

    Raises:
        ValueError: ``name`` is not one of :data:`PHASES`.
    """

    def __init__(self, name: str) -> None:
        if name not in PHASES:
            raise ValueError(f"phase {name!r} is not one of {', '.join(PHASES)}")
        self.name = name
        self._outermost, self._started = False, 0.0

    def _recreate_cm(self) -> phase:  # a decorated function gets a fresh block per call (threads, recursion)
        return type(self)(self.name)

    def __enter__(self) -> phase:
        self._outermost = not getattr(_ACTIVE, "depth", 0)
        _ACTIVE.depth = getattr(_ACTIVE, "depth", 0) + 1
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = time.perf_counter() - self._started
        _ACTIVE.depth -= 1
        if self._outermost:
            emit("phase", phase=self.name, seconds=seconds)


def epoch_event(*, desc: str, epoch: int, epochs: int, seconds: float, mean_seconds: float, metrics: dict) -> bool:
    """:func:`emit` one finished training epoch (see the module docstring); ``mean_seconds`` is the mean
    epoch time so far, which times the epochs left gives the ETA."""
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return emit(
        "epoch",
        desc=desc,
        epoch=int(epoch),
        epochs=int(epochs),
        seconds=float(seconds),
        eta_s=float(mean_seconds) * max(0, int(epochs) - int(epoch)),
        metrics=numbers,
    )


def computed(item: Path | str) -> None:
    """Note that this process computed the kept ``item`` (a model folder, a kept file): taking it from the
    cache later in the same process is not reused work (:func:`reused_event`)."""
    _COUNTED.add(str(item))


def reused_event(*, phase: str, seconds: float | None, what: str, item: Path | str) -> bool:
    """:func:`emit` that ``what``, work of ``phase``, was taken from a cache instead of done; ``seconds``:
    what doing it took (None: not recorded). Sent once per kept ``item`` and process, and not for an
    item this process computed (:func:`computed`); returns whether it was sent.

    Raises:
        ValueError: ``phase`` is not one of :data:`PHASES`.
    """
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r} is not one of {', '.join(PHASES)}")
    if str(item) in _COUNTED:
        return False
    _COUNTED.add(str(item))
    known = isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds)
    return emit("reused", phase=phase, seconds=float(seconds) if known else None, what=what)


def cost_file(path: Path) -> Path:
    """Where the seconds that computing the kept file ``path`` took are recorded (``<stem>.seconds.json``)."""
    return path.with_name(f"{path.stem}.seconds.json")


def record_cost(path: Path, seconds: float) -> None:
    """Record beside the kept file ``path`` that computing it took ``seconds`` (best effort: a cache that
    cannot take the record still works, its reuse is just reported without seconds); :func:`computed`."""
    computed(path)
    try:
        atomic_write_bytes(cost_file(path), json.dumps({"seconds": round(float(seconds), 3)}).encode())
    except OSError:
        pass


def reused_file(path: Path, *, phase: str, what: str) -> bool:
    """:func:`reused_event` for the kept file ``path``, with the seconds :func:`record_cost` recorded."""
    try:
        seconds = json.loads(cost_file(path).read_text(encoding="utf-8")).get("seconds")
    except (OSError, ValueError, AttributeError):
        seconds = None
    return reused_event(phase=phase, seconds=seconds, what=what, item=path)  # a non-number is sent as null
