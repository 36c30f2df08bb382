"""Execute notebooks with papermill and render them to HTML reports.

For each notebook ``notebooks/<name>.ipynb`` and a profile, :func:`run_notebook`

1. loads ``params/<profile>/<name>.yaml`` through the notebook's schema;
2. executes the notebook with papermill (kernel pinned, cwd = project root, cell
   timeout from the profile, the kernel started with the environment of
   :mod:`bloodlib.runtime`) into a private staging folder, the notebook writing
   its figures, tables and ``metrics.json`` there through
   :class:`~bloodlib.report.ReportWriter`;
3. on success renders HTML with nbconvert and moves everything into
   ``reports/<profile>/``: ``<name>.html`` and ``<name>/`` (figures, tables,
   metrics, the executed notebook); on failure keeps the executed notebook as
   ``<name>.failed.ipynb`` and leaves the previous good report untouched.

:func:`run_reports` runs several notebooks (optionally in parallel), records
provenance in ``runs.json`` and writes ``index.html``; it updates ``runs.json`` holding a file lock
(``.runs.json.lock``), so two runners on one report folder lose no update.

Progress: given a :class:`~bloodlib.report.progress.Console` (``bloodlib report`` passes one), each
notebook's start, every code cell as it starts (n/N, elapsed) and every training epoch (epoch n/N, loss,
time left) are printed as they happen, then how it ended (:mod:`bloodlib.report.progress`). Every run
records the seconds of each code cell and of each phase (training, evaluation, bootstrap, plots, other)
in ``runs.json``; the index shows them. Kernels talk to the runner over IPC sockets in a private folder
(POSIX), not TCP, so none warns that its transport is unencrypted.

Ctrl-C (or SIGTERM, which ``bloodlib report`` turns into the same) stops every kernel this process
started (they run in their own session, so the terminal's Ctrl-C does not reach them), removes the
staging folders, records the notebooks that were running as ``interrupted`` in ``runs.json`` and the
index, keeps their previous good reports, and raises :class:`ReportInterrupted` (exit code 130).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bloodlib import params as params_mod
from bloodlib import runtime
from bloodlib.fsutil import atomic_write_text, file_lock, lock_timeout, move_aside, replace_dir, staging_dir
from bloodlib.jsonutil import json_text
from bloodlib.paths import project_root, reports_dir
from bloodlib.progress import CHANNEL_ENV
from bloodlib.report import provenance
from bloodlib.report.progress import Console, NotebookWatch, display_path

KERNEL_NAME = "bloodlib"
KERNEL_DISPLAY_NAME = "Python (bloodlib)"
#: Status of a notebook stopped by Ctrl-C or SIGTERM.
INTERRUPTED = "interrupted"


class ReportInterrupted(KeyboardInterrupt):
    """:func:`run_reports` was interrupted; ``runs.json`` and the index say which notebooks were stopped."""


class _Stop:
    """The kernels this process started, and whether the run was interrupted (shared by the worker threads)."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._lock = threading.Lock()
        self._kernels: list = []  # subprocess.Popen of each kernel

    def track(self, process) -> None:
        with self._lock:
            self._kernels.append(process)
        if self.requested.is_set():  # started while stopping
            self.kill_kernels()

    def kill_kernels(self) -> int:
        """SIGKILL every kernel still running, with its process group (DataLoader workers ...); returns how many."""
        with self._lock:
            alive = [k for k in self._kernels if k.poll() is None]
        for process in alive:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the kernel leads its own session
            except (ProcessLookupError, PermissionError):
                process.kill()
        return len(alive)


_STOP = _Stop()


#: Set in every report kernel over the caller's environment: figures go into the notebook (inline)
#: even when the caller exports ``MPLBACKEND=Agg`` (as CI jobs and headless shells often do),
#: which would otherwise leave every report without a figure.
KERNEL_ENV: dict[str, str] = {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}


def _kernel_manager_class(*, env: dict[str, str] | None = None, ipc_dir: Path | None = None):
    """An :class:`~jupyter_client.manager.AsyncKernelManager` that registers each kernel it starts with
    :data:`_STOP` (so that an interrupt can stop it), starts it with :data:`KERNEL_ENV` and ``env`` over
    this process's environment and, given ``ipc_dir``, connects to it over IPC sockets in that folder
    instead of TCP."""
    from jupyter_client.manager import AsyncKernelManager

    extra_env = dict(env or {})

    class TrackedKernelManager(AsyncKernelManager):
        def __init__(self, **kw):
            super().__init__(**kw)
            if ipc_dir is not None:
                self.transport = "ipc"
                self.ip = str(ipc_dir / "kernel")

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            kw["env"] = {**kw.get("env", os.environ), **KERNEL_ENV, **extra_env}
            await super()._async_launch_kernel(kernel_cmd, **kw)
            process = getattr(self.provisioner, "process", None)
            if process is not None:
                _STOP.track(process)

    return TrackedKernelManager


def _ipc_folder() -> Path | None:
    """A private folder for a kernel's IPC sockets (short: a socket path holds at most ~100 bytes), or
    None where IPC sockets are not available (Windows: the kernel then uses TCP)."""
    if os.name != "posix":
        return None
    return Path(tempfile.mkdtemp(prefix="bloodlib-kernel-"))


@dataclass
class NotebookRun:
    """The outcome of executing one notebook."""

    name: str
    profile: str
    status: str  # "ok", "failed" or "interrupted"
    wall_s: float
    finished_at: str
    parameters: dict = field(default_factory=dict)
    data: list = field(default_factory=list)
    error: str | None = None
    #: seconds per phase: training, evaluation, bootstrap, plots and other (:meth:`NotebookWatch.phases`)
    phases: dict = field(default_factory=dict)
    #: recorded seconds per phase of the work taken from caches instead of done, and how many reused items
    #: had no record (:meth:`NotebookWatch.reused`); with ``wall_s``, the time of a run with empty caches
    reused: dict = field(default_factory=dict)
    #: one ``{"cell": n, "label": first line, "seconds"}`` per code cell that ran
    cells: list = field(default_factory=list)


def discover_notebooks(root: Path) -> list[str]:
    """Names of ``notebooks/*.ipynb`` in order."""
    return sorted(p.stem for p in (root / "notebooks").glob("*.ipynb"))


def dependency_order(names: list[str]) -> list[str]:
    """``names`` sorted, each after the notebooks whose models it uses (:data:`bloodlib.params.DEPENDS`).

    Raises:
        ValueError: the dependencies form a cycle.
    """
    waiting, placed = sorted(names), []
    while waiting:
        ready = [n for n in waiting if all(d in placed or d not in names for d in params_mod.DEPENDS.get(n, ()))]
        if not ready:
            raise ValueError(f"notebook dependencies form a cycle among {waiting}")
        placed.append(ready[0])
        waiting.remove(ready[0])
    return placed


def select_notebooks(root: Path, only: list[str] | None) -> list[str]:
    """The notebooks to run; ``only`` entries may omit the ``NN_`` prefix (``covid_diagnosis``)."""
    available = discover_notebooks(root)
    if not only:
        return available
    chosen = []
    for wanted in only:
        matches = [n for n in available if n == wanted or n.split("_", 1)[-1] == wanted]
        if not matches:
            raise ValueError(f"no notebook named {wanted!r}; available: {', '.join(available)}")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def install_kernel(
    kernel_name: str = KERNEL_NAME,
    *,
    display_name: str = KERNEL_DISPLAY_NAME,
    prefix: str | Path | None = None,
    user: bool = False,
) -> Path:
    """Register this Python as Jupyter kernel ``kernel_name``, with :data:`bloodlib.runtime.COMPUTE_ENV`
    in its ``kernel.json`` (for JupyterLab; the report runner sets that environment itself).

    Installed for the user with ``user``, else under ``prefix`` (default ``sys.prefix``: the virtual
    environment, as ``ipykernel install --sys-prefix``). Returns the kernel spec's folder.
    """
    from ipykernel.kernelspec import install

    where = install(
        kernel_name=kernel_name,
        display_name=display_name,
        user=user,
        prefix=None if user else str(prefix if prefix is not None else sys.prefix),
        env={**runtime.COMPUTE_ENV, **KERNEL_ENV},
    )
    return Path(where)


def _check_kernel(kernel_name: str) -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise RuntimeError(
            f"Jupyter kernel {kernel_name!r} is not installed; run `make reports` (or "
            f"`bloodlib kernel --name {kernel_name}`) first"
        ) from None


def _render_html(executed: Path, html: Path) -> None:
    from bloodlib.report.html import render_html

    render_html(executed, html)


def run_notebook(
    name: str,
    *,
    profile: str = params_mod.DEFAULT_PROFILE,
    root: Path | None = None,
    kernel_name: str = KERNEL_NAME,
    console: Console | None = None,
) -> NotebookRun:
    """Execute and render one notebook; see the module docstring for the files it writes.

    The kernel inherits this process's environment, with :func:`bloodlib.runtime.configure` applied.
    ``console``: where its progress is printed (None: nowhere; the times are recorded either way).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    runtime.configure()  # the kernel starts with this process's environment
    root = root or project_root()
    out_dir = reports_dir(profile, root)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = params_mod.load_profile_settings(profile, root)
    values = params_mod.as_dict(params_mod.load_params(name, profile, root))
    started = time.perf_counter()
    staging = staging_dir(out_dir, f".{name}.staging-")
    artifacts = staging / name
    executed = staging / f"{name}.ipynb"
    watch = NotebookWatch(name, staging / "progress.jsonl", console)
    ipc = _ipc_folder()
    error = None
    watch.say(f"start (profile {profile})")
    try:
        watch.start()
        try:
            papermill.execute_notebook(
                str(root / "notebooks" / f"{name}.ipynb"),
                str(executed),
                parameters={**values, "profile": profile, "report_dir": str(artifacts)},
                kernel_name=kernel_name,
                language="python",
                cwd=str(root),
                execution_timeout=settings.timeout_s,
                progress_bar=False,
                kernel_manager_class=_kernel_manager_class(env={CHANNEL_ENV: str(watch.channel)}, ipc_dir=ipc),
                **watch.hooks(),
            )
        except PapermillExecutionError as err:
            error = f"cell {err.exec_count}: {err.ename}: {err.evalue}"
        except Exception as err:  # kernel died, timeout, unreadable notebook ...
            error = f"{type(err).__name__}: {err}"
        finally:
            watch.stop()
        if _STOP.requested.is_set():
            error = f"{INTERRUPTED} (Ctrl-C or SIGTERM); the previous report, if any, is kept"
        elif error is None:
            _render_html(executed, staging / f"{name}.html")
            artifacts.mkdir(exist_ok=True)
            executed.replace(artifacts / f"{name}.ipynb")
            replace_dir(artifacts, out_dir / name)
            (staging / f"{name}.html").replace(out_dir / f"{name}.html")
            (out_dir / f"{name}.failed.ipynb").unlink(missing_ok=True)
        elif executed.exists():
            executed.replace(out_dir / f"{name}.failed.ipynb")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if ipc is not None:
            shutil.rmtree(ipc, ignore_errors=True)
    wall_s = round(time.perf_counter() - started, 1)
    status = "ok" if error is None else INTERRUPTED if _STOP.requested.is_set() else "failed"
    if status == "ok":
        watch.say(f"ok in {wall_s / 60:.1f} min -> {display_path(out_dir / f'{name}.html')}")
    else:
        watch.say(f"{status} after {wall_s / 60:.1f} min: {error}")
    return NotebookRun(
        name=name,
        profile=profile,
        status=status,
        wall_s=wall_s,
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        parameters=values,
        data=provenance.data_checksums(params_mod.DATASETS.get(name, ())),
        error=error,
        phases=watch.phases(wall_s),
        reused=watch.reused(),
        cells=watch.cells,
    )


def _run_after(
    before: list[Future], name: str, profile: str, root: Path, kernel_name: str, console: Console | None
) -> NotebookRun | None:
    """:func:`run_notebook` once the notebooks in ``before`` are done (it uses their cached models);
    None if the run was interrupted before it started."""
    wait(before)
    if _STOP.requested.is_set():
        return None
    return run_notebook(name, profile=profile, root=root, kernel_name=kernel_name, console=console)


def run_reports(
    profile: str = params_mod.DEFAULT_PROFILE,
    *,
    only: list[str] | None = None,
    jobs: int = 1,
    root: Path | None = None,
    kernel_name: str = KERNEL_NAME,
    console: Console | None = None,
) -> list[NotebookRun]:
    """Run the selected notebooks, then update ``runs.json`` and ``index.html``.

    Returns the runs in notebook order; callers exit non-zero if any failed. ``console``: where the
    progress goes (:mod:`bloodlib.report.progress`; None: nowhere).

    Raises:
        ReportInterrupted: Ctrl-C (or SIGTERM turned into it), after stopping the kernels and recording
            the interrupted notebooks (see the module docstring).
    """
    root = root or project_root()
    params_mod.check_profile(profile)
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    names = dependency_order(select_notebooks(root, only))
    _check_kernel(kernel_name)
    out_dir = reports_dir(profile, root)
    out_dir.mkdir(parents=True, exist_ok=True)
    if console is not None:
        console.line(
            None,
            f"bloodlib report: {len(names)} notebook(s), profile {profile}, {jobs} at a time -> {display_path(out_dir)}",
        )
    _STOP.requested.clear()
    pool = ThreadPoolExecutor(max_workers=jobs)
    futures: dict[str, Future] = {}
    try:
        for name in names:  # FIFO: a notebook waits only on dependencies submitted before it
            before = [futures[d] for d in params_mod.DEPENDS.get(name, ()) if d in futures]
            futures[name] = pool.submit(_run_after, before, name, profile, root, kernel_name, console)
        pending = set(futures.values())
        while pending:  # wake up often: a signal handler (Ctrl-C, SIGTERM) runs only in this thread
            _, pending = wait(pending, timeout=0.25)
        runs = [futures[name].result() for name in names]
    except KeyboardInterrupt:
        stopped = _stop_all(pool, futures)
        runs = [run for run in stopped if run is not None]
        _record(out_dir, profile, root, runs)
        names_stopped = [run.name for run in runs if run.status == INTERRUPTED] or ["none was running"]
        raise ReportInterrupted(
            f"interrupted; kernels stopped, staging folders removed; interrupted: {', '.join(names_stopped)} "
            f"(recorded in {out_dir / 'runs.json'}; their previous reports are kept)"
        ) from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    _record(out_dir, profile, root, runs)
    return runs


def _stop_all(pool: ThreadPoolExecutor, futures: dict[str, Future]) -> list[NotebookRun | None]:
    """After Ctrl-C: cancel the notebooks not started, kill the running kernels and wait for their threads
    (which remove their staging folders); the runs that returned, in order."""
    _STOP.requested.set()
    pool.shutdown(wait=False, cancel_futures=True)
    started = [f for f in futures.values() if not f.cancelled()]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        _STOP.kill_kernels()
        done, pending = wait(started, timeout=0.5)
        if not pending:
            break
    runs = []
    for future in started:
        if future.done() and future.exception() is None:
            runs.append(future.result())
    return runs


def _record(out_dir: Path, profile: str, root: Path, runs: list[NotebookRun]) -> None:
    """Add ``runs`` and the provenance to ``runs.json`` and rewrite ``index.html``, holding the folder's lock."""
    from bloodlib.report.index import write_index

    lock = out_dir / ".runs.json.lock"
    with file_lock(lock, what=f"{out_dir / 'runs.json'}", timeout=lock_timeout(600.0)):
        record = load_runs(out_dir)
        record["provenance"] = {
            "git_commit": provenance.git_commit(root),
            "packages": provenance.package_versions(),
            "machine": provenance.machine(),
            "profile": profile,
        }
        record["notebooks"].update({run.name: asdict(run) for run in runs})
        atomic_write_text(out_dir / "runs.json", json_text(record))
        write_index(out_dir, record, root)


def load_runs(out_dir: Path) -> dict:
    """The ``runs.json`` of a report folder (empty record if none yet; a damaged one is moved aside
    as ``runs.json.corrupt-<n>`` with a warning, and the record starts empty)."""
    path = out_dir / "runs.json"
    if path.is_file():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(record, dict) and isinstance(record.get("notebooks"), dict):
                return record
            problem = "not a runs record"
        except (UnicodeDecodeError, ValueError) as err:
            problem = f"not valid JSON: {err}"
        aside = move_aside(path, "corrupt")
        warnings.warn(f"{path} is damaged ({problem}); moved to {aside.name}, starting a new record", stacklevel=2)
    return {"provenance": {}, "notebooks": {}}
