"""Report runner: success, a failing notebook, and every link/image of the rendered pages."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import nbformat
import pytest

from bloodlib import cli, runtime
from bloodlib import params as params_mod
from bloodlib.report.links import broken_links
from bloodlib.report.runner import KERNEL_ENV, run_reports
from tests.paths import ROOT


@dataclasses.dataclass(frozen=True)
class DemoParams:
    size: int
    fail: bool


BODY = """\
import os
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from bloodlib.report import ReportWriter
report = ReportWriter("90_demo", report_dir)
if fail:
    raise RuntimeError("demo failure requested")
fig, ax = plt.subplots()
ax.plot(range(size))
report.figure(fig, "line")
report.table(pd.DataFrame({"x": range(size)}), "xs")
report.metrics({"n": size, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}, summary=[{"metric": "n", "paper": None, "ours": size, "note": "demo"}])
"""


def make_project(root: Path, *, fail: bool = False) -> Path:
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "cpu"\nreport_dir = ""\nsize = 3\nfail = False')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Demo report\n\nSee [the section](#Section)."),
        params,
        nbformat.v4.new_code_cell(BODY),
        nbformat.v4.new_markdown_cell("## Section"),
    ]
    nbformat.write(nb, root / "notebooks" / "90_demo.ipynb")
    for profile in params_mod.PROFILES:
        shutil.copytree(
            ROOT / "params" / profile,
            root / "params" / profile,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("0*.yaml"),
        )
        (root / "params" / profile / "90_demo.yaml").write_text(f"size: 4\nfail: {str(fail).lower()}\n")
    return root


@pytest.fixture
def demo(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "unset below; restored after the test")
    monkeypatch.delenv("OMP_WAIT_POLICY")  # the runner itself gives the kernel bloodlib.runtime's environment
    monkeypatch.setitem(params_mod.SCHEMAS, "90_demo", f"{__name__}:DemoParams")
    monkeypatch.setenv("BLOODLIB_ROOT", str(tmp_path))
    return make_project(tmp_path)


def all_broken(out: Path) -> list[str]:
    return [f"{page.name}: {problem}" for page in sorted(out.glob("*.html")) for problem in broken_links(page)]


@pytest.mark.slow
def test_success_writes_report_files_and_index(demo):
    (run,) = run_reports("quick", root=demo)
    assert run.status == "ok", run.error
    out = demo / "reports" / "quick"
    assert (out / "90_demo.html").is_file() and (out / "index.html").is_file()
    assert (out / "90_demo" / "figures" / "line.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "90_demo" / "tables" / "xs.csv").read_text().splitlines() == ["x", "0", "1", "2", "3"]
    metrics = json.loads((out / "90_demo" / "metrics.json").read_text())
    assert metrics["metrics"] == {"n": 4, "omp_wait_policy": "PASSIVE"} and metrics["summary"][0]["ours"] == 4
    runs = json.loads((out / "runs.json").read_text())
    assert runs["notebooks"]["90_demo"]["parameters"] == {"size": 4, "fail": False}
    assert runs["provenance"]["profile"] == "quick" and runs["provenance"]["packages"]["bloodlib"]
    index = (out / "index.html").read_text()
    assert 'href="90_demo.html"' in index and 'src="90_demo/figures/line.png"' in index
    assert not [p for p in out.iterdir() if "staging" in p.name]
    assert all_broken(out) == []


@pytest.mark.slow
def test_failing_notebook_keeps_previous_report(demo, capsys):
    assert run_reports("quick", root=demo)[0].status == "ok"
    out = demo / "reports" / "quick"
    good_html = (out / "90_demo.html").read_bytes()
    good_png = (out / "90_demo" / "figures" / "line.png").read_bytes()
    make_project(demo, fail=True)
    assert cli.main(["report", "--profile", "quick", "--only", "demo"]) == 1
    assert "demo failure requested" in capsys.readouterr().out
    assert (out / "90_demo.html").read_bytes() == good_html
    assert (out / "90_demo" / "figures" / "line.png").read_bytes() == good_png
    failed = nbformat.read(out / "90_demo.failed.ipynb", as_version=4)
    errors = [o for c in failed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors and errors[0].evalue == "demo failure requested"
    index = (out / "index.html").read_text()
    assert 'class="failed"' in index and 'href="90_demo.failed.ipynb"' in index and "previous good report" in index
    assert all_broken(out) == []
    make_project(demo, fail=False)
    assert cli.main(["report", "--profile", "quick", "--only", "90_demo"]) == 0
    assert not (out / "90_demo.failed.ipynb").exists()


def test_bad_requests_are_clear_errors(demo, capsys):
    assert cli.main(["report", "--profile", "quick", "--only", "nope"]) == 2
    assert "no notebook named 'nope'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        run_reports("quick", root=demo, jobs=0)
    with pytest.raises(RuntimeError, match="kernel 'no-such-kernel' is not installed"):
        run_reports("quick", root=demo, kernel_name="no-such-kernel")


def test_link_checker_finds_broken_targets(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    page = tmp_path / "p.html"
    page.write_text(
        '<h1 id="top">t</h1><h2 id="A-%E2%80%94-b">s</h2><a href="#A-%E2%80%94-b">raw</a><img src="a.png"><img src="missing.png"><a href="#top">ok</a>'
        '<a href="#nowhere">bad</a><a href="https://example.org">web</a><img src="data:image/png;base64,">'
    )
    assert broken_links(page) == [
        "<img> missing.png: file not found",
        "<a> #nowhere: no element with that id",
        "<img> empty data URI",
    ]


def test_a_notebook_starts_only_after_the_notebooks_whose_models_it_uses(tmp_path, monkeypatch):
    """With two jobs, 04 (which needs the models of 01 and 02) waits for both; 03 need not."""
    import threading

    from bloodlib.report import runner

    events, lock = [], threading.Lock()
    slow = {"01_detection": 0.3, "02_wbc_subtypes": 0.2, "03_covid_diagnosis": 0.0, "04_pipeline": 0.0}

    def fake_run(name, *, profile, root, kernel_name, console=None):
        with lock:
            events.append(("start", name))
        time.sleep(slow[name])
        with lock:
            events.append(("end", name))
        return runner.NotebookRun(name=name, profile=profile, status="ok", wall_s=0.0, finished_at="", parameters={})

    monkeypatch.setattr(
        runner,
        "select_notebooks",
        lambda root, only: ["04_pipeline", "03_covid_diagnosis", "02_wbc_subtypes", "01_detection"],
    )
    monkeypatch.setattr(runner, "run_notebook", fake_run)
    monkeypatch.setattr(runner, "_check_kernel", lambda name: None)
    runs = runner.run_reports("quick", jobs=2, root=tmp_path)
    assert [r.name for r in runs] == ["01_detection", "02_wbc_subtypes", "03_covid_diagnosis", "04_pipeline"]
    start_04 = events.index(("start", "04_pipeline"))
    assert events.index(("end", "01_detection")) < start_04 and events.index(("end", "02_wbc_subtypes")) < start_04
    assert events.index(("start", "03_covid_diagnosis")) < events.index(("end", "01_detection"))


def test_kernel_command_registers_the_compute_environment(tmp_path, capsys):
    assert cli.main(["kernel", "--name", "bloodlib-test", "--prefix", str(tmp_path)]) == 0
    spec = json.loads((tmp_path / "share" / "jupyter" / "kernels" / "bloodlib-test" / "kernel.json").read_text())
    assert spec["env"] == {**runtime.COMPUTE_ENV, **KERNEL_ENV} and spec["display_name"] == "Python (bloodlib)"
    assert "bloodlib-test" in capsys.readouterr().out


def test_notebooks_run_after_the_notebooks_whose_models_they_use():
    from bloodlib.report.runner import dependency_order

    names = ["01_detection", "02_wbc_subtypes", "03_covid_diagnosis", "04_pipeline", "05_generalisation"]
    order = dependency_order(names)
    assert sorted(order) == names and order.index("04_pipeline") > order.index("05_generalisation")
    assert dependency_order(["04_pipeline", "03_covid_diagnosis"]) == ["03_covid_diagnosis", "04_pipeline"]
