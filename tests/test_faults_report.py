"""Fault suite, ``bloodlib report``: Ctrl-C and SIGTERM stop the kernels, remove the staging folders, keep the
previous good report and record the notebook as interrupted (exit 130); ``runs.json`` updates take a lock and a
damaged ``runs.json`` is set aside. A stand-in for papermill starts a "kernel" the way Jupyter does (its own
session), so these tests take a second; the real-kernel variant is marked slow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bloodlib import cli
from bloodlib import params as params_mod
from bloodlib.fsutil import LockTimeoutError
from bloodlib.report import runner
from tests.fault_helpers import hold_lock, snapshot
from tests.test_report_runner import make_project


@pytest.fixture
def demo(tmp_path, monkeypatch):
    # Ctrl-C as at a terminal: a shell script's background job (`make test &`) starts with SIGINT
    # ignored, and then Python never turns it into KeyboardInterrupt.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.setitem(params_mod.SCHEMAS, "90_demo", "tests.test_report_runner:DemoParams")
    monkeypatch.setenv("BLOODLIB_ROOT", str(tmp_path))
    yield make_project(tmp_path)
    signal.signal(signal.SIGINT, previous)


def previous_report(root: Path) -> Path:
    """A previous good report of 90_demo in ``reports/quick`` (what an interrupted run must keep)."""
    out = root / "reports" / "quick"
    (out / "90_demo" / "figures").mkdir(parents=True)
    (out / "90_demo" / "figures" / "line.png").write_bytes(b"\x89PNG old figure")
    (out / "90_demo.html").write_text("<html>previous good report</html>")
    return out


def fake_papermill(monkeypatch, started: threading.Event, kernels: list):
    """papermill.execute_notebook -> a kernel-like process in its own session that runs until killed."""
    import papermill

    def execute(input_path, output_path, **kwargs):
        assert kwargs["kernel_manager_class"].__name__ == "TrackedKernelManager"
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
        runner._STOP.track(process)  # what TrackedKernelManager does when Jupyter launches a kernel
        kernels.append(process)
        Path(output_path).write_text("{}")  # papermill writes the executed notebook as it goes
        started.set()
        process.wait()
        raise RuntimeError("Kernel died before replying to kernel_info")

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    monkeypatch.setattr(runner, "_check_kernel", lambda name: None)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_report_stops_its_kernels_and_records_it(demo, monkeypatch, capsys, signum):
    out = previous_report(demo)
    before = snapshot(out)
    started, kernels = threading.Event(), []
    fake_papermill(monkeypatch, started, kernels)

    def interrupt():
        started.wait(30)
        os.kill(os.getpid(), signum)

    threading.Thread(target=interrupt, daemon=True).start()
    assert cli.main(["report", "--profile", "quick", "--only", "90_demo"]) == 130
    err = capsys.readouterr().err
    assert "interrupted; kernels stopped, staging folders removed; interrupted: 90_demo" in err
    assert "Traceback" not in err
    (kernel,) = kernels
    assert kernel.wait(timeout=10) == -signal.SIGKILL  # stopped, not left running in its own session
    record = json.loads((out / "runs.json").read_text())
    assert record["notebooks"]["90_demo"]["status"] == "interrupted"
    assert "interrupted" in record["notebooks"]["90_demo"]["error"]
    assert 'class="interrupted"' in (out / "index.html").read_text()
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k in before} == before  # the previous good report is kept
    assert sorted(set(after) - set(before)) == [".runs.json.lock", "index.html", "runs.json"]  # no staging, no .failed
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_runs_json_updates_wait_for_the_lock_and_lose_nothing(demo, monkeypatch):
    out = demo / "reports" / "quick"
    out.mkdir(parents=True)

    def run(name: str) -> runner.NotebookRun:
        return runner.NotebookRun(name, "quick", "ok", 1.0, "2024-01-01T00:00:00+00:00")

    runner._record(out, "quick", demo, [run("first")])
    late = "import json; p = Path(lock).with_name('runs.json'); r = json.loads(p.read_text()); "
    late += "r['notebooks']['other'] = dict(r['notebooks']['first'], name='other'); p.write_text(json.dumps(r))"
    holder = hold_lock(out / ".runs.json.lock", what="runs.json", seconds=0.5, then=late)
    runner._record(out, "quick", demo, [run("mine")])  # waits for the other process's update
    holder.wait(timeout=30)
    assert sorted(json.loads((out / "runs.json").read_text())["notebooks"]) == ["first", "mine", "other"]


def test_runs_json_lock_timeout_names_the_holder(demo, monkeypatch):
    out = demo / "reports" / "quick"
    out.mkdir(parents=True)
    monkeypatch.setenv("BLOODLIB_LOCK_TIMEOUT", "0.3")
    holder = hold_lock(out / ".runs.json.lock", what="runs.json of another report", seconds=20)
    try:
        with pytest.raises(LockTimeoutError, match=f"is locked by process {holder.pid} .*runs.json of another report"):
            runner._record(out, "quick", demo, [])
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "runs.json").exists()


def test_a_damaged_runs_json_is_set_aside(demo):
    out = demo / "reports" / "quick"
    out.mkdir(parents=True)
    (out / "runs.json").write_text('{"notebooks": {"01_detection": {"sta')
    with pytest.warns(UserWarning, match=r"runs.json is damaged .not valid JSON.*moved to runs.json.corrupt-1"):
        runner._record(out, "quick", demo, [runner.NotebookRun("x", "quick", "ok", 1.0, "now")])
    assert list(json.loads((out / "runs.json").read_text())["notebooks"]) == ["x"]
    assert (out / "runs.json.corrupt-1").read_text().startswith('{"notebooks"')


SLEEPY = """\
import os, time
from pathlib import Path
Path(os.environ["FAULT_KERNEL_PID"]).write_text(str(os.getpid()))
time.sleep(120)
"""


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_ctrl_c_stops_a_real_kernel(demo, monkeypatch, capsys):
    """With papermill and a real kernel: Ctrl-C during a cell stops the kernel process."""
    import nbformat

    path = demo / "notebooks" / "90_demo.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[2].source = SLEEPY
    nbformat.write(nb, path)
    pid_file = demo / "kernel.pid"
    monkeypatch.setenv("FAULT_KERNEL_PID", str(pid_file))
    out = previous_report(demo)
    before = snapshot(out)

    def interrupt():
        for _ in range(1200):
            if pid_file.exists() and pid_file.read_text():
                os.kill(os.getpid(), signal.SIGINT)
                return
            threading.Event().wait(0.1)

    threading.Thread(target=interrupt, daemon=True).start()
    assert cli.main(["report", "--profile", "quick", "--only", "90_demo"]) == 130
    assert "interrupted: 90_demo" in capsys.readouterr().err
    assert not alive(int(pid_file.read_text()))
    assert json.loads((out / "runs.json").read_text())["notebooks"]["90_demo"]["status"] == "interrupted"
    assert {k: v for k, v in snapshot(out).items() if k in before} == before
    assert not list(out.glob(".90_demo.staging-*"))
