"""The trained-model cache: keys follow parameters and data, checkpoints round-trip atomically."""

from __future__ import annotations

import pytest
import torch

from bloodlib.modelcache import ModelRun, models_root, run_key


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
