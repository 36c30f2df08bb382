"""The trained-model cache: keys follow parameters and data, checkpoints round-trip atomically."""

from __future__ import annotations

import json

import pytest
import torch

from bloodlib.modelcache import ModelRun, find_run, models_root, run_key


def test_key_changes_with_params_and_data_only():
    base = run_key({"lr": 1e-3, "epochs": 2}, {"BCCD": "abc"})
    assert base == run_key({"epochs": 2, "lr": 1e-3}, {"BCCD": "abc"})
    assert base != run_key({"lr": 1e-3, "epochs": 3}, {"BCCD": "abc"})
    assert base != run_key({"lr": 1e-3, "epochs": 2}, {"BCCD": "abd"})


def test_checkpoint_then_final(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOODLIB_MODELS", str(tmp_path))
    run = ModelRun("demo/net", {"width": 0.5}, {"data": "x"})
    assert run.folder.parent == tmp_path / "demo" / "net" and models_root() == tmp_path
    assert run.load_checkpoint() is None and not run.is_complete()
    with pytest.raises(FileNotFoundError, match="bloodlib train"):
        run.load_final()
    model = torch.nn.Linear(2, 1)
    run.save_checkpoint({"epoch": 1, "model": model.state_dict()})
    assert run.load_checkpoint()["epoch"] == 1
    run.save_final(model.state_dict(), [{"epoch": 1, "loss": 0.5}], wall_s=1.5)
    final = run.load_final()
    assert torch.equal(final["model"]["weight"], model.weight.detach())
    assert final["history"] == [{"epoch": 1, "loss": 0.5}] and final["wall_s"] == 1.5
    assert not run.checkpoint_path.exists() and (run.folder / "run.json").is_file()
    assert [p.name for p in run.folder.iterdir() if p.name.startswith(".")] == []


def test_find_run_by_parameters(tmp_path):
    for key, params, done in (
        ("a", {"x": 1, "split": {"val_groups": [1]}}, True),
        ("b", {"x": 2}, True),
        ("c", {"x": 1, "split": {"val_groups": [2]}}, False),
    ):
        folder = tmp_path / "task" / key
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"params": params}))
        if done:
            (folder / "final.pt").write_bytes(b"")
    ignore = (("split", "val_groups"),)
    assert find_run(tmp_path, "task", {"x": 1, "split": {"val_groups": []}}, ignore) == tmp_path / "task" / "a"
    assert find_run(tmp_path, "task", {"x": 3}) is None
