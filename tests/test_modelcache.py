"""The trained-model cache: keys follow parameters and data, checkpoints round-trip atomically."""

from __future__ import annotations

import json

import pytest
import torch

from bloodlib.modelcache import ModelNotTrainedError, ModelRun, find_run, models_root, run_key


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
    with pytest.raises(ModelNotTrainedError, match="bloodlib train"):
        run.load_final()
    model = torch.nn.Linear(2, 1)
    run.save_checkpoint({"epoch": 1, "model": model.state_dict()})
    assert run.load_checkpoint()["epoch"] == 1
    run.save_final(model.state_dict(), history=[{"epoch": 1, "loss": 0.5}], best_epoch=1, train_seconds=1.5)
    weights, info = run.load_final()
    assert torch.equal(weights["weight"], model.weight.detach())
    assert info["history"] == [{"epoch": 1, "loss": 0.5}] and info["train_seconds"] == 1.5
    assert info["files"]["final.pt"]["size"] == run.final_path.stat().st_size
    assert not run.checkpoint_path.exists() and (run.folder / "run.json").is_file()
    assert [p.name for p in run.folder.iterdir() if p.name.startswith(".")] == []


def test_find_run_by_parameters(tmp_path):
    runs = {}
    for name, params, done in (
        ("a", {"x": 1, "split": {"val_groups": [1]}}, True),
        ("b", {"x": 2}, True),
        ("c", {"x": 1, "split": {"val_groups": [2]}}, False),
    ):
        runs[name] = ModelRun("task", params, {"data": "d"}, tmp_path)
        runs[name].folder.mkdir(parents=True)
        (runs[name].folder / "run.json").write_text(json.dumps({"params": params, "data": {"data": "d"}}))
        if done:
            runs[name].final_path.write_bytes(b"")
    ignore = (("split", "val_groups"),)
    assert find_run(tmp_path, "task", {"x": 1, "split": {"val_groups": []}}, ignore) == runs["a"]
    assert find_run(tmp_path, "task", {"x": 3}) is None


def test_cached_output_reuses_only_the_same_weights_and_inputs(tmp_path):
    import numpy as np

    from bloodlib.modelcache import cached_output

    run = ModelRun("demo/net", {"width": 0.5}, {"data": "x"}, tmp_path)
    calls = []

    def compute(value: float):
        calls.append(value)
        return np.full((3, 2), value, dtype=np.float32)

    with pytest.raises(ModelNotTrainedError):
        cached_output(run, "logits", {"data": "a"}, lambda: compute(1.0))
    model = torch.nn.Linear(2, 1)
    run.save_final(model.state_dict(), history=[], best_epoch=1, train_seconds=1.0)
    first = cached_output(run, "logits", {"data": "a"}, lambda: compute(1.0))
    again = cached_output(run, "logits", {"data": "a"}, lambda: compute(2.0))
    other = cached_output(run, "logits", {"data": "b"}, lambda: compute(3.0))
    assert calls == [1.0, 3.0] and np.array_equal(first, again) and other[0, 0] == 3.0
    stored = sorted((tmp_path / "predictions" / "demo/net" / run.key).glob("logits-*.npy"))
    assert len(stored) == 2
    for path in stored:
        path.write_bytes(b"not an array")  # damaged: computed again, never trusted
    assert cached_output(run, "logits", {"data": "a"}, lambda: compute(4.0))[0, 0] == 4.0
    with torch.no_grad():
        model.weight.add_(1.0)  # trained again under the same key: other weights, no reuse
    run.save_final(model.state_dict(), history=[], best_epoch=1, train_seconds=1.0)
    assert cached_output(run, "logits", {"data": "a"}, lambda: compute(5.0))[0, 0] == 5.0
    assert calls == [1.0, 3.0, 4.0, 5.0]
    assert {p.name for p in run.folder.iterdir()} == {"final.pt", "run.json"}  # what bundles export is unchanged
    with pytest.raises(ValueError, match=r"labels: compute\(\)'s result: only numeric arrays can be kept, got <U1"):
        cached_output(run, "labels", {"data": "a"}, lambda: np.array(["a", "b"]))
