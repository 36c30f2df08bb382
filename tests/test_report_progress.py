"""Progress of a report run: the kernel's events, the runner's lines, the times in runs.json and the index."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import torch

from bloodlib import progress
from bloodlib.report.index import render_index
from bloodlib.report.progress import Console, NotebookWatch, cell_label, clock, epoch_line, summary_table
from bloodlib.report.timing import phase_rows, timing_section
from bloodlib.training import TrainConfig, fit
from tests.paths import ROOT


class _Linear:
    """A one-step task with a validation metric."""

    steps_per_epoch = 1

    def train_loader(self, generator):
        return [(torch.ones(2, 1), torch.zeros(2, 1))]

    def loss(self, model, batch):
        loss = ((model(batch[0]) - batch[1]) ** 2).mean()
        return loss, {"loss": float(loss.detach())}

    def validate(self, model):
        return {"bacc": 0.5}

    def rank(self, metrics):
        return (metrics["bacc"],)


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_emit_writes_nothing_without_the_channel(monkeypatch, tmp_path):
    monkeypatch.delenv(progress.CHANNEL_ENV, raising=False)
    assert progress.emit("epoch", epoch=1) is False
    with progress.phase("training"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_fit_sends_one_line_per_epoch_with_the_time_left(monkeypatch, tmp_path):
    channel = tmp_path / "events.jsonl"
    monkeypatch.setenv(progress.CHANNEL_ENV, str(channel))
    fit(torch.nn.Linear(1, 1), _Linear(), TrainConfig(3, 2, 0.1), progress=False, desc="demo")
    sent = events(channel)
    epochs = [e for e in sent if e["event"] == "epoch"]
    assert [(e["desc"], e["epoch"], e["epochs"]) for e in epochs] == [("demo", 1, 3), ("demo", 2, 3), ("demo", 3, 3)]
    assert epochs[-1]["eta_s"] == 0 and epochs[0]["eta_s"] > 0
    assert set(epochs[0]["metrics"]) == {"train_loss", "val_bacc"}
    (training,) = [e for e in sent if e["event"] == "phase"]  # the validation inside counts as training
    assert training["phase"] == "training" and training["seconds"] >= sum(e["seconds"] for e in epochs) * 0.99


def test_predictions_and_bootstraps_are_timed_as_their_phases(monkeypatch, tmp_path):
    """The library's prediction and resampling entry points report evaluation and bootstrap time."""
    import pandas as pd

    from bloodlib.classification.engine import predict_logits
    from bloodlib.classification.metrics import metrics_table
    from bloodlib.classification.models import build_model
    from bloodlib.detection.metrics import bootstrap_ci

    channel = tmp_path / "events.jsonl"
    monkeypatch.setenv(progress.CHANNEL_ENV, str(channel))
    predict_logits(build_model("arch1"), torch.zeros(2, 3, 40, 40, dtype=torch.uint8), (32, 32), tta=True)
    preds = pd.DataFrame(
        {"model": "m", "set": "s", "y_true": [0, 1, 1, 0], "y_pred": [0, 1, 0, 0], "group": [1, 2, 3, 4]}
    )
    metrics_table(preds, n_classes=2, n_boot=20, seed=0)
    bootstrap_ci(lambda rows: float(len(set(rows.tolist()))), 3, samples=20, seed=0)
    assert [e["phase"] for e in events(channel)] == ["evaluation", "bootstrap", "bootstrap"]


def test_only_the_outermost_phase_counts_and_nan_is_written_as_null(monkeypatch, tmp_path):
    channel = tmp_path / "events.jsonl"
    monkeypatch.setenv(progress.CHANNEL_ENV, str(channel))

    @progress.phase("evaluation")
    def predict():
        with progress.phase("plots"):
            return 1

    with progress.phase("bootstrap"):
        predict()
    predict()
    progress.emit("epoch", metrics={"val_loss": float("nan")})
    sent = events(channel)
    assert [(e.get("phase"), e["event"]) for e in sent] == [
        ("bootstrap", "phase"),
        ("evaluation", "phase"),
        (None, "epoch"),
    ]
    assert sent[2]["metrics"] == {"val_loss": None}
    with pytest.raises(ValueError, match="phase 'drawing' is not one of"):
        progress.phase("drawing")


def test_the_watch_prints_cells_and_epochs_and_adds_up_phases(tmp_path):
    out = io.StringIO()
    watch = NotebookWatch("02_demo", tmp_path / "events.jsonl", Console(out)).start()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# title"),
        nbformat.v4.new_code_cell("# Parameters\nx = 1"),
        nbformat.v4.new_code_cell(""),
        nbformat.v4.new_code_cell("trained = train_models(params, data)"),
    ]
    watch.on_notebook_start(notebook=nb)
    for index, cell in enumerate(nb.cells):
        watch.on_cell_start(cell=cell, cell_index=index)
        watch.on_cell_executed(cell=cell, cell_index=index, execute_reply={})
    with open(watch.channel, "a") as channel:  # one line and a half, as a reader may find it
        channel.write(json.dumps({"event": "phase", "phase": "training", "seconds": 30.0}) + "\n")
        channel.write('{"event": "epoch", "desc": "arch1", "epoch": 2, ')
    assert [e["event"] for e in watch.read_events()] == ["phase"]
    with open(watch.channel, "a") as channel:
        channel.write(
            '"epochs": 20, "seconds": 31.2, "eta_s": 561.6, "metrics": {"train_loss": 1.18, "val_bacc": 0.5}}\n'
        )
        channel.write("not json\n")
    watch.stop()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[02_demo] cell 1/2 at 0:00  Parameters")
    assert lines[1].startswith("[02_demo] cell 2/2 at 0:00  trained = train_models(params, data)")
    assert lines[2] == "[02_demo]   arch1 epoch 2/20  loss 1.180  val_bacc 0.500  31 s/epoch  ETA 9:22"
    assert [c["cell"] for c in watch.cells] == [1, 2] and watch.cells[1]["label"].startswith("trained")
    assert watch.phases(100.0) == {"training": 30.0, "evaluation": 0.0, "bootstrap": 0.0, "plots": 0.0, "other": 70.0}


def test_formatting_helpers():
    assert [clock(s) for s in (0, 61.4, 3725, None, float("nan"))] == ["0:00", "1:01", "1:02:05", "--:--", "--:--"]
    assert cell_label("\n  # Train every model\nx = 1") == "Train every model"
    assert len(cell_label("y = " + "1" * 200)) == 70
    line = epoch_line({"desc": "ssd", "epoch": 1, "epochs": 2, "seconds": 90, "eta_s": 90, "metrics": {"val_mAP": 0.4}})
    assert line == "  ssd epoch 1/2  val_mAP 0.400  90 s/epoch  ETA 1:30"


def test_summary_table_names_each_report(tmp_path):
    (tmp_path / "b.failed.ipynb").write_text("{}")
    runs = [
        SimpleNamespace(name="a_long_name", status="ok", wall_s=90.0, error=None),
        SimpleNamespace(name="b", status="failed", wall_s=30.0, error="cell 3: ValueError: bad"),
    ]
    lines = summary_table(runs, tmp_path).splitlines()
    assert lines[0].split() == ["notebook", "status", "minutes", "report"]
    assert lines[1].split()[:3] == ["a_long_name", "ok", "1.5"] and lines[1].endswith("a_long_name.html")
    assert lines[2].split()[:3] == ["b", "failed", "0.5"] and lines[2].endswith("(cell 3: ValueError: bad)")
    assert lines[3].split() == ["total", "2.0"] and lines[4].startswith("index: ")


def test_the_index_shows_minutes_per_notebook_and_phase(tmp_path):
    runs = {
        "01_x": {
            "status": "ok",
            "wall_s": 600.0,
            "finished_at": "2025-01-01T00:00:00+00:00",
            "phases": {"training": 420.0, "evaluation": 60.0, "bootstrap": 30.0, "plots": 12.0, "other": 78.0},
            "cells": [
                {"cell": 1, "label": "fast", "seconds": 1.0},
                {"cell": 2, "label": "train <all>", "seconds": 500.0},
            ],
        },
        "02_old": {"status": "ok", "wall_s": 120.0, "finished_at": "2025-01-01T00:00:00+00:00"},  # before phases
    }
    assert phase_rows(runs)[1]["training"] is None
    section = timing_section(runs)
    assert '<td>01_x</td><td class="num"><b>10.0</b></td><td class="num">7.0</td>' in section
    assert "train &lt;all&gt;" in section and section.index("train &lt;all&gt;") < section.index("fast")
    assert '<th>all</th><th class="num">12.0</th><th class="num">7.0</th>' in section
    assert timing_section({}) == ""
    assert 'id="time"' in render_index(tmp_path, {"provenance": {}, "notebooks": runs})


def test_work_taken_from_caches_is_reported_with_the_seconds_it_took(monkeypatch, tmp_path):
    """A cached model, kept predictions and kept tables each send a "reused" event with the seconds
    doing the work took; the first (computing) call sends none."""
    import numpy as np

    from bloodlib import modelcache, resultcache
    from bloodlib.training import load_or_train

    channel = tmp_path / "events.jsonl"
    monkeypatch.setenv(progress.CHANNEL_ENV, str(channel))
    monkeypatch.setenv("BLOODLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(progress, "_COUNTED", set())  # a fresh kernel
    run = modelcache.ModelRun("demo/linear", {"epochs": 2}, {"data": "d"}, tmp_path / "models")

    def train(model):
        return fit(model, _Linear(), TrainConfig(2, 2, 0.1), run=run, progress=False, desc="demo")

    def make():
        return torch.nn.Linear(1, 1)

    def work():
        trained = load_or_train(run, make, train, name="linear", seed=0)
        modelcache.cached_output(run, "logits", {"x": 1}, compute)
        resultcache.cached_tables("demo", {"x": 1}, lambda: {"a": np.arange(2)})
        return trained

    compute = lambda: np.arange(3.0)  # noqa: E731
    trained = work()
    work()  # again in the same kernel: what it computed itself is not reused work
    assert [e["event"] for e in events(channel) if e["event"] == "reused"] == []
    monkeypatch.setattr(progress, "_COUNTED", set())  # the next render's kernel
    channel.write_text("")
    load_or_train(run, make, train, name="linear", seed=0)
    modelcache.cached_output(run, "logits", {"x": 1}, compute)
    resultcache.cached_tables("demo", {"x": 1}, lambda: {"a": np.arange(2)})
    reused = [e for e in events(channel) if e["event"] == "reused"]
    assert [(e["phase"], e["what"]) for e in reused] == [
        ("training", "linear"),
        ("evaluation", "demo/linear logits"),
        ("training", "demo"),
    ]
    work()  # each kept item counts once per kernel
    assert len([e for e in events(channel) if e["event"] == "reused"]) == 3
    assert reused[0]["seconds"] == pytest.approx(trained.train_seconds)
    assert all(isinstance(e["seconds"], float) and e["seconds"] >= 0 for e in reused)
    for record in (tmp_path / "models" / "predictions").rglob("*.seconds.json"):  # e.g. imported without it
        record.unlink()
    monkeypatch.setattr(progress, "_COUNTED", set())
    channel.write_text("")
    modelcache.cached_output(run, "logits", {"x": 1}, compute)
    assert [e["seconds"] for e in events(channel)] == [None]
    with pytest.raises(ValueError, match="phase 'waiting' is not one of"):
        progress.reused_event(phase="waiting", seconds=1.0, what="x", item="x")


def test_the_index_adds_reused_work_to_the_minutes_of_a_render_with_empty_caches(tmp_path):
    watch = NotebookWatch("05_demo", tmp_path / "events.jsonl")
    with open(watch.channel, "a") as channel:
        for seconds in (1200.0, 300.0, None):
            phase = "evaluation" if seconds == 300.0 else "training"
            channel.write(json.dumps({"event": "reused", "phase": phase, "seconds": seconds, "what": "m"}) + "\n")
    watch.read_events()
    assert watch.reused() == {"training": 1200.0, "evaluation": 300.0, "bootstrap": 0.0, "plots": 0.0, "unrecorded": 1}
    runs = {
        "01_x": {"wall_s": 60.0, "phases": {"training": 0.0}, "reused": {"training": 540.0, "unrecorded": 0}},
        "05_demo": {"wall_s": 120.0, "phases": {"training": 0.0}, "reused": watch.reused()},
    }
    rows = phase_rows(runs)
    assert [(r["reused"], r["empty_cache"], r["unrecorded"]) for r in rows] == [(540.0, 600.0, 0), (1500.0, 1620.0, 1)]
    section = timing_section(runs)
    assert '<td class="num">9.0</td><td class="num">10.0</td></tr>' in section  # 01_x: reused, empty caches
    assert '<td class="num">25.0</td><td class="num">&ge; 27.0</td></tr>' in section  # one item unrecorded
    assert '<th class="num">34.0</th><th class="num">&ge; 37.0</th></tr>' in section  # all notebooks
    assert timing_section({"02_old": {"wall_s": 60.0}}).count('<td class="num">–</td>') >= 2  # no record


@pytest.mark.slow
def test_bloodlib_report_prints_cells_epochs_and_a_final_table(tmp_path):
    """A notebook that trains through ``fit``, rendered by ``bloodlib report`` in a subprocess: what
    the terminal shows (and the kernel's transport warning it does not), and the times in runs.json."""
    script = tmp_path / "run.py"
    script.write_text(
        f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
import nbformat
from bloodlib import cli, params
from tests.test_report_runner import make_project
root = make_project(Path({str(tmp_path / "project")!r}))
nb = nbformat.read(root / "notebooks" / "90_demo.ipynb", as_version=4)
nb.cells.insert(2, nbformat.v4.new_code_cell('''# Train a tiny model
import torch
from bloodlib.training import TrainConfig, fit
from tests.test_report_progress import _Linear
fit(torch.nn.Linear(1, 1), _Linear(), TrainConfig(2, 2, 0.1), desc="tiny")'''))
nbformat.write(nb, root / "notebooks" / "90_demo.ipynb")
params.SCHEMAS["90_demo"] = "tests.test_report_runner:DemoParams"
sys.exit(cli.main(["report", "--profile", "quick"]))
"""
    )
    env = {**os.environ, "BLOODLIB_ROOT": str(tmp_path / "project"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "[90_demo] start (profile quick)" in out and "[90_demo] cell 3/4 at " in out and "Train a tiny model" in out
    assert "[90_demo]   tiny epoch 2/2  loss " in out and "val_bacc 0.500" in out and "ETA 0:00" in out
    assert "[90_demo] ok in " in out and out.splitlines()[-4].split()[:2] == ["notebook", "status"]
    assert "without encryption" not in done.stderr and "without encryption" not in out
    record = json.loads((tmp_path / "project" / "reports" / "quick" / "runs.json").read_text())["notebooks"]["90_demo"]
    assert record["phases"]["training"] > 0 and record["phases"]["plots"] > 0
    assert [c["label"] for c in record["cells"]][2] == "Train a tiny model"
    index = (tmp_path / "project" / "reports" / "quick" / "index.html").read_text()
    assert "Where the time goes" in index
