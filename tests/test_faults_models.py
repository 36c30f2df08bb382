"""Fault suite, trained-model cache: hostile and damaged model files, damaged checkpoints and caches, two
processes training one key. Each test checks the message, the exit code where a command is involved,
and that nothing was lost (no payload ran, the damaged file is kept aside, nothing half-written left)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bloodlib import cli
from bloodlib.modelcache import CorruptModelError, ModelRun, rebuilding_damaged
from bloodlib.training import TrainConfig, TrainedModel, fit, load_or_train
from tests.fault_helpers import hold_lock, leftovers, malicious_pickle, malicious_torch_file

pytestmark = pytest.mark.usefixtures("one_thread")


class LineTask:
    """Fits ``y = 2x`` with a linear model; each epoch's batches are drawn from the epoch's generator."""

    steps_per_epoch = 2

    def train_loader(self, generator):
        x = torch.rand(8, 1, generator=generator)
        return [(x[:4], 2 * x[:4]), (x[4:], 2 * x[4:])]

    def loss(self, model, batch):
        x, y = batch
        loss = ((model(x) - y) ** 2).mean()
        return loss, {"loss": float(loss.detach())}

    def validate(self, model):
        return {}

    def rank(self, metrics):
        return ()


CONFIG = TrainConfig(epochs=3, batch_size=4, lr=0.1, seed=1)


def train_line(tmp_path: Path, key: str = "a") -> tuple[ModelRun, list[int]]:
    """A finished cache entry of the linear model, and the list that counts trainings."""
    run = ModelRun("t/line", {"key": key}, {"data": "d"}, tmp_path)
    calls: list[int] = []
    load_or_train(run, build, counted(run, calls), name="line", seed=1)
    return run, calls


def build() -> torch.nn.Module:
    return torch.nn.Linear(1, 1)


def counted(run: ModelRun, calls: list[int]):
    def train(model):
        calls.append(1)
        return fit(model, LineTask(), CONFIG, run=run, progress=False)

    return train


def record(run: ModelRun, data: bytes) -> None:
    """Replace ``final.pt`` with ``data`` and make ``run.json`` record it (as an attacker who controls both would)."""
    import hashlib

    run.final_path.write_bytes(data)
    info = json.loads(run.info_path.read_text())
    info["files"]["final.pt"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    run.info_path.write_text(json.dumps(info))


# ---------------------------------------------------------------- no code execution from model files


def test_crafted_final_pt_is_refused_and_its_payload_never_runs(tmp_path):
    run, _ = train_line(tmp_path)
    payload = tmp_path / "payload-ran"
    record(run, malicious_torch_file(payload))
    with pytest.raises(CorruptModelError) as err:
        TrainedModel.from_cache(run, build(), name="line")
    message = str(err.value)
    assert str(run.final_path) in message and "was refused" in message and "io.open" in message
    assert "bloodlib train" in message
    assert not payload.exists()
    assert run.final_path.read_bytes() == malicious_torch_file(payload)  # left for inspection, not deleted


def test_crafted_model_through_bloodlib_analyze_exits_3_without_running_it(tmp_path, monkeypatch, capsys):
    """The real cache-loading path (only the architecture is a stand-in) under the real command."""
    from bloodlib.pipeline import models as pipeline_models
    from tests.pipeline_helpers import bccd_images

    run, _ = train_line(tmp_path / "models")
    payload = tmp_path / "payload-ran"
    record(run, malicious_torch_file(payload))
    monkeypatch.setattr(
        pipeline_models, "load_models", lambda p, **kw: TrainedModel.from_cache(run, build(), name="detector")
    )
    out = tmp_path / "out"
    code = cli.main(["analyze", str(bccd_images(1)[0]), "--out", str(out), "--profile", "quick", "--quiet"])
    err = capsys.readouterr().err
    assert code == 3
    assert str(run.final_path) in err and "was refused" in err
    assert "bloodlib train general --profile" in err  # the command that rebuilds this profile's models
    assert "Traceback" not in err and not payload.exists() and not out.exists()
    assert leftovers(tmp_path) == []


def test_crafted_checkpoint_is_refused_and_training_starts_over(tmp_path):
    run = ModelRun("t/line", {"key": "c"}, {"data": "d"}, tmp_path)
    payload = tmp_path / "payload-ran"
    run.folder.mkdir(parents=True)
    run.checkpoint_path.write_bytes(malicious_torch_file(payload))
    with pytest.warns(UserWarning, match=r"checkpoint.pt was refused.*moved to checkpoint.pt.corrupt-1.*starts over"):
        result = fit(build(), LineTask(), CONFIG, run=run, progress=False)
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert not payload.exists() and (run.folder / "checkpoint.pt.corrupt-1").is_file()


def test_old_pickled_covid_model_is_never_loaded(tmp_path, osr):
    """A ``model.pkl`` (the old format) with a payload sits in the cache: the loader ignores it."""
    import dataclasses

    from bloodlib.pipeline import covid
    from tests.pipeline_helpers import quick_params

    p = dataclasses.replace(quick_params(), covid_grid_size="none")
    folder = tmp_path / "pipeline" / "covid" / covid.cache_key(p)
    folder.mkdir(parents=True)
    payload = tmp_path / "payload-ran"
    (folder / "model.pkl").write_bytes(malicious_pickle(payload))
    model = covid.load_or_fit(p, tmp_path)
    assert model.key == folder.name and (folder / "model.json").is_file() and not payload.exists()
    assert json.loads((folder / "model.json").read_text())["format"] == covid.MODEL_FORMAT


# ---------------------------------------------------------------- damaged files: one message, or rebuilt


def test_truncated_final_pt_names_the_file_and_the_command(tmp_path):
    run, calls = train_line(tmp_path)
    before = run.final_path.read_bytes()
    run.final_path.write_bytes(before[: len(before) // 2])  # an interrupted copy
    with pytest.raises(CorruptModelError) as err:
        load_or_train(run, build, counted(run, calls), name="line", seed=1)  # a notebook or report: no retraining
    assert f"{run.final_path} is damaged" in str(err.value) and "`bloodlib train` moves it aside" in str(err.value)
    assert calls == [1] and run.final_path.stat().st_size == len(before) // 2


def test_bloodlib_train_moves_a_damaged_entry_aside_and_retrains(tmp_path):
    run, calls = train_line(tmp_path)
    good = run.final_path.read_bytes()
    run.final_path.write_bytes(good[:-9])
    with rebuilding_damaged(), pytest.warns(UserWarning, match=r"final.pt is damaged.*moved to .*corrupt-1.*again"):
        trained = load_or_train(run, build, counted(run, calls), name="line", seed=1)
    assert calls == [1, 1] and not trained.cached
    aside = run.folder.with_name(f"{run.key}.corrupt-1")
    assert (aside / "final.pt").read_bytes() == good[:-9] and (aside / "run.json").is_file()  # kept for inspection
    assert run.final_path.read_bytes() == good  # the same seed and data train the same weights
    assert TrainedModel.from_cache(run, build(), name="line").cached


def test_damaged_run_json_is_named(tmp_path):
    run, _ = train_line(tmp_path)
    run.info_path.write_text(run.info_path.read_text()[:40])
    with pytest.raises(CorruptModelError, match=f"{run.info_path} is damaged .not valid JSON"):
        run.load_final()


def test_truncated_checkpoint_warns_and_starts_over_to_the_same_result(tmp_path):
    straight = fit(build_seeded(), LineTask(), CONFIG, run=ModelRun("t", {}, {}, tmp_path / "A"), progress=False)
    run = ModelRun("t", {}, {}, tmp_path / "B")

    def stop(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(build_seeded(), LineTask(), CONFIG, run=run, progress=False, on_epoch=stop)
    data = run.checkpoint_path.read_bytes()
    run.checkpoint_path.write_bytes(data[: len(data) // 3])  # power loss while copying the models folder
    with pytest.warns(UserWarning, match=r"checkpoint.pt is damaged.*starts over"):
        again = fit(build_seeded(), LineTask(), CONFIG, run=run, progress=False)
    assert [row["epoch"] for row in again.history] == [1, 2, 3]
    for key, value in straight.state.items():
        torch.testing.assert_close(again.state[key], value)
    assert (run.folder / "checkpoint.pt.corrupt-1").read_bytes() == data[: len(data) // 3]


def build_seeded() -> torch.nn.Module:
    torch.manual_seed(0)
    return build()


def test_checkpoint_without_training_state_starts_over(tmp_path):
    run = ModelRun("t", {}, {}, tmp_path)
    run.save_checkpoint({"epoch": 2, "model": build().state_dict()})  # e.g. written by an older version
    with pytest.warns(UserWarning, match=r"not a training checkpoint .it lacks optimizer, scheduler, rng, history"):
        result = fit(build(), LineTask(), CONFIG, run=run, progress=False)
    assert len(result.history) == 3


def test_damaged_canvas_cache_is_set_aside_and_rebuilt(tmp_path, monkeypatch):
    import pandas as pd

    from bloodlib.classification.canvases import build_canvases
    from bloodlib.classification.train import crop_policy
    from bloodlib.params import load_params
    from tests.pipeline_helpers import colour_image, write_rgb

    monkeypatch.setenv("BLOODLIB_MODELS", str(tmp_path / "models"))
    paths = [write_rgb(tmp_path / f"{i}.png", colour_image(seed=i)) for i in range(2)]
    frame = pd.DataFrame({"path": [str(p) for p in paths], "x0": 10, "y0": 10, "x1": 60, "y1": 60})
    policy = crop_policy(load_params("02_wbc_subtypes", "quick"))
    first = build_canvases(frame, policy, data_checksums={"d": "1"}, progress=False)
    (cached,) = (tmp_path / "models" / "wbc_subtypes" / "canvases").glob("*.pt")
    cached.write_bytes(cached.read_bytes()[:100])
    with pytest.warns(UserWarning, match=rf"{cached.name} is damaged.*moved to {cached.name}.corrupt-1"):
        again = build_canvases(frame, policy, data_checksums={"d": "1"}, progress=False)
    assert torch.equal(first, again) and cached.is_file() and cached.with_name(f"{cached.name}.corrupt-1").is_file()
    payload = tmp_path / "payload-ran"
    cached.write_bytes(malicious_torch_file(payload))
    with pytest.warns(UserWarning, match="was refused"):
        assert torch.equal(build_canvases(frame, policy, data_checksums={"d": "1"}, progress=False), first)
    assert not payload.exists()


def test_damaged_covid_model_analyze_exits_3_and_train_covid_rebuilds(tmp_path, monkeypatch, capsys, osr):
    from bloodlib.pipeline import covid
    from bloodlib.pipeline import models as pipeline_models
    from tests.pipeline_helpers import bccd_images, quick_params, tiny_models

    monkeypatch.setenv("BLOODLIB_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr(pipeline_models, "load_models", lambda p, **kw: tiny_models())
    image = shutil.copy(bccd_images(1)[0], tmp_path / "one.jpg")
    out = tmp_path / "out"
    assert cli.main(["analyze", str(image), "--out", str(out), "--profile", "quick", "--quiet"]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (path,) = (tmp_path / "models" / "pipeline" / "covid").glob("*/model.json")
    path.write_text('{"format": "grid-index-refit-1", "grid_ind')
    capsys.readouterr()
    assert cli.main(["analyze", str(image), "--out", str(out), "--profile", "quick", "--quiet"]) == 3
    err = capsys.readouterr().err
    assert f"{path} is damaged" in err and "bloodlib train covid" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # the previous result, intact
    with pytest.warns(UserWarning, match="moved to model.json.corrupt-1"):
        assert cli.main(["train", "covid", "--profile", "quick"]) == 0
    assert json.loads(path.read_text())["key"] == covid.cache_key(quick_params())
    assert (path.parent / "model.json.corrupt-1").is_file()
    assert cli.main(["analyze", str(image), "--out", str(out), "--profile", "quick", "--quiet"]) == 0


def test_covid_record_with_a_wrong_grid_index_is_refused(tmp_path, osr):
    from bloodlib.pipeline import covid
    from tests.pipeline_helpers import quick_params

    p = quick_params()
    model = covid.load_or_fit(p, tmp_path)
    (path,) = (tmp_path / "pipeline" / "covid").glob("*/model.json")
    record = json.loads(path.read_text())
    record["grid_index"]["base"] = 10**6
    path.write_text(json.dumps(record))
    with pytest.raises(CorruptModelError, match=r"model.json is damaged or not this model's record \(grid_index"):
        covid.load_or_fit(p, tmp_path)
    assert model.key == path.parent.name


def test_damaged_stain_and_colour_json_name_the_file_and_the_command(tmp_path, monkeypatch):
    from bloodlib.general import detector as general_detector
    from bloodlib.general import models as general_models
    from bloodlib.params import load_params

    run = ModelRun("general/wbc", {}, {}, tmp_path)
    run.folder.mkdir(parents=True)
    (run.folder / "stain.json").write_text('{"method": "reinhard", "mean": [1, 2')
    with pytest.raises(CorruptModelError, match=r"stain.json is damaged .*bloodlib train general"):
        general_models._load_stain(run)
    colour = tmp_path / "general" / "colour" / "k" / "colour.json"
    colour.parent.mkdir(parents=True)
    colour.write_text('{"centre": {"l": 1.0}}')  # no "scale"

    def no_data(p):
        raise FileNotFoundError("no training data here")

    monkeypatch.setattr(general_detector, "load_parts", no_data)
    with pytest.raises(CorruptModelError, match=rf"{colour} is damaged .KeyError.*bloodlib train general"):
        general_models.load_colour_model(load_params("05_generalisation", "quick"), "k", tmp_path)


def test_damaged_count_thresholds_are_chosen_again(tmp_path, monkeypatch):
    from bloodlib.detection import metrics
    from bloodlib.detection.data import CLASSES
    from bloodlib.pipeline import infer
    from bloodlib.pipeline import models as pipeline_models
    from tests.pipeline_helpers import quick_params

    class Val:
        image_path = "x.jpg"

    monkeypatch.setattr(infer, "detect_paths", lambda *a, **k: [])
    monkeypatch.setattr(metrics, "choose_count_thresholds", lambda preds, val: {c: 0.25 for c in CLASSES})
    detector = type("D", (), {"precision": "fp32"})()
    args = (quick_params(), detector, "det/k", tmp_path, lambda: ("val", [Val()], {"d": "1"}))
    first, _ = pipeline_models.count_thresholds(*args)
    (path,) = tmp_path.rglob("thresholds.json")
    path.write_text('{"thresholds": {"RBC": 0.2')
    with pytest.warns(UserWarning, match=rf"{path} is damaged"):
        again, _ = pipeline_models.count_thresholds(*args)
    assert again == first == {c: 0.25 for c in CLASSES}
    assert json.loads(path.read_text())["thresholds"] == first


# ---------------------------------------------------------------- two processes, one cache key


def test_second_process_waits_then_reuses_the_finished_model(tmp_path, capfd):
    """Another process holds the key's lock, finishes training and caches the model: this one waits,
    then loads it -- nothing is trained twice."""
    run = ModelRun("t/line", {"key": "shared"}, {"data": "d"}, tmp_path)
    torch.manual_seed(7)
    made = ModelRun("t/line", {"key": "shared"}, {"data": "d"}, tmp_path / "elsewhere")
    made.save_final(build().state_dict(), history=[{"epoch": 1}], best_epoch=1, train_seconds=1.0)
    finish = f"import shutil; shutil.copytree({str(made.folder)!r}, {str(run.folder)!r})"  # the other one's result
    holder = hold_lock(run.lock_path, what=f"training {run.task} (key {run.key})", seconds=1.0, then=finish)
    calls: list[int] = []
    trained = load_or_train(run, build, counted(run, calls), name="line", seed=1)
    holder.wait(timeout=30)
    assert calls == [] and trained.cached and trained.history == [{"epoch": 1}]
    torch.manual_seed(7)
    assert torch.equal(trained.model.weight, torch.nn.Linear(1, 1).weight)
    err = capfd.readouterr().err
    assert f"waiting for process {holder.pid}" in err and f"training t/line (key {run.key})" in err


def fake_trainer(profile: str, root: Path) -> int:
    """A ``bloodlib train`` task (registered by the test below) training the linear model into the cache."""
    from bloodlib.modelcache import models_root

    run = ModelRun("t/line", {"key": "cli"}, {"data": "d"}, models_root())
    load_or_train(run, build, counted(run, []), name="line", seed=1)
    return 0


def test_lock_timeout_names_the_holder_and_exits_3(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BLOODLIB_MODELS", str(tmp_path))
    monkeypatch.setenv("BLOODLIB_LOCK_TIMEOUT", "0.5")
    monkeypatch.setitem(cli.TRAINERS, "fake", f"{__name__}:fake_trainer")
    run = ModelRun("t/line", {"key": "cli"}, {"data": "d"}, tmp_path)
    holder = hold_lock(run.lock_path, what=f"training {run.task} (key {run.key})", seconds=20)
    try:
        assert cli.main(["train", "fake", "--profile", "quick"]) == 3
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert f"is locked by process {holder.pid}" in err and "BLOODLIB_LOCK_TIMEOUT" in err and "Traceback" not in err
    assert not run.folder.exists()  # nothing trained, nothing half-written
    monkeypatch.setenv("BLOODLIB_LOCK_TIMEOUT", "5")
    assert cli.main(["train", "fake", "--profile", "quick"]) == 0 and run.is_complete()  # the holder is gone
