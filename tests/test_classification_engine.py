"""Task 2's epoch body learns; metrics; test-time augmentation; the CLI hook."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support

from bloodlib.classification import metrics
from bloodlib.classification.engine import evaluate
from bloodlib.classification.models import build_model
from bloodlib.training import TrainConfig, fit
from tests.training_helpers import classifier_task, colour_set


def test_fit_learns_and_reports_history():
    torch.manual_seed(0)
    model = build_model("arch1")
    config = TrainConfig(epochs=3, batch_size=16, lr=3e-3, final_lr_fraction=0.1, seed=3)
    result = fit(model, classifier_task(train_size=64, samples_per_epoch=64), config, progress=False)
    history = pd.DataFrame(result.history)
    assert list(history["epoch"]) == [1, 2, 3]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "val_bacc"} <= set(history.columns)
    assert result.best_epoch == int(
        history.sort_values(["val_bacc", "val_loss"], ascending=[False, True]).iloc[0]["epoch"]
    )
    model.load_state_dict(result.state)
    assert evaluate(model, colour_set(32, 2), (16, 16))["acc"] > 0.6


def test_scores_match_scikit_learn():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    y_pred[:150] = y_true[:150]
    ours = metrics.scores(metrics.confusion(y_true, y_pred, 4))
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    assert ours["accuracy"] == pytest.approx(np.mean(y_true == y_pred))
    assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx((p, r, f))


def test_grouped_bootstrap_is_wider_than_the_copies_suggest():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(20), 30)  # 20 sources, 30 copies each
    y_true = np.repeat(rng.integers(0, 4, 20), 30)
    right = np.repeat(rng.random(20) < 0.7, 30)  # a source is right or wrong as a whole
    y_pred = np.where(right, y_true, (y_true + 1) % 4)
    point = metrics.scores(metrics.confusion(y_true, y_pred, 4))["accuracy"]
    by_group = metrics.grouped_bootstrap(y_true, y_pred, groups, n_classes=4, n_boot=400, seed=0)["accuracy"]
    by_copy = metrics.grouped_bootstrap(y_true, y_pred, np.arange(600), n_classes=4, n_boot=400, seed=0)["accuracy"]
    assert by_group[0] <= point <= by_group[1]
    assert (by_group[1] - by_group[0]) > 3 * (by_copy[1] - by_copy[0])


def test_metrics_table_rows():
    frame = pd.DataFrame(
        {
            "model": ["a"] * 8 + ["b"] * 8,
            "set": "TEST",
            "y_true": [0, 1, 2, 3] * 4,
            "y_pred": [0, 1, 2, 3] * 2 + [0] * 8,
            "group": [0, 0, 1, 1, 2, 2, 3, 3] * 2,
        }
    )
    table = metrics.metrics_table(frame, n_classes=4, n_boot=50, seed=0)
    assert list(table["model"]) == ["a", "b"] and list(table["groups"]) == [4, 4]
    assert table.loc[0, "accuracy"] == 1.0 and table.loc[1, "accuracy"] == 0.25


def test_cli_knows_the_wbc_trainer():
    import importlib

    from bloodlib.cli import TRAINERS

    module, function = TRAINERS["wbc"].split(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_test_time_augmentation_is_orientation_free():
    from bloodlib.classification.engine import predict_logits, symmetry_views

    square, wide = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 24)
    assert len(symmetry_views(square)) == 8 and len(symmetry_views(wide)) == 4
    assert all(v.shape == wide.shape for v in symmetry_views(wide))
    torch.manual_seed(0)
    model = build_model("arch1")  # not rotation-invariant: plain predictions change when the cell turns
    canvases = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    turned = torch.rot90(canvases, 1, dims=(2, 3))
    plain, plain_turned = predict_logits(model, canvases, (32, 32)), predict_logits(model, turned, (32, 32))
    assert not torch.allclose(plain, plain_turned, atol=1e-4)
    tta = predict_logits(model, canvases, (32, 32), tta=True)
    assert torch.allclose(tta, predict_logits(model, turned, (32, 32), tta=True), atol=1e-5)
    assert torch.allclose(tta.exp().sum(1), torch.ones(4), atol=1e-5)


def test_prediction_runs_channels_last_and_leaves_the_weights_as_they_were():
    from bloodlib.classification.engine import eval_transform, predict_logits

    torch.manual_seed(0)
    model = build_model("arch2").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    canvases = torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8)
    with torch.no_grad():
        reference = model(eval_transform((32, 32))(canvases))  # default (contiguous) layout
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    layouts = []
    hook = conv.register_forward_pre_hook(
        lambda module, args: layouts.append(
            (args[0].is_contiguous(memory_format=torch.channels_last), module.weight.is_contiguous())
        )
    )
    logits = predict_logits(model, canvases, (32, 32), batch_size=4)
    hook.remove()
    assert layouts == [(True, False)] * 2  # two batches, input and weights channels_last
    assert torch.allclose(logits, reference, atol=1e-4) and torch.equal(logits.argmax(1), reference.argmax(1))
    assert logits.is_contiguous()
    for name, value in model.state_dict().items():
        assert value.is_contiguous(), f"{name} left in channels_last"
        assert torch.equal(value, before[name]), f"{name} changed"


def test_trained_models_predict_once_per_weights_and_canvases(tmp_path, monkeypatch):
    from bloodlib.classification import evaluation
    from bloodlib.modelcache import ModelRun
    from bloodlib.training import TrainedModel

    torch.manual_seed(0)
    model = build_model("arch1").eval()
    run = ModelRun("wbc_subtypes/arch1", {"seed": 0}, {"data": "d"}, tmp_path)
    run.save_final(model.state_dict(), history=[{"epoch": 1}], best_epoch=1, train_seconds=1.0)
    trained = TrainedModel("arch1", model, [{"epoch": 1}], 1, 1.0, True, run)
    canvases = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    calls = []
    real = evaluation.predict_logits
    monkeypatch.setattr(evaluation, "predict_logits", lambda *a, **k: calls.append(k["tta"]) or real(*a, **k))
    direct = evaluation.logits(model, canvases, (32, 32), batch_size=2, tta=True)
    first = evaluation.logits(trained, canvases, (32, 32), batch_size=2, tta=True)
    again = evaluation.logits(trained, canvases, (32, 32), batch_size=3, tta=True)
    assert torch.equal(first, direct) and torch.equal(again, direct) and calls == [True, True]
    evaluation.logits(trained, canvases, (32, 32), batch_size=2, tta=False)  # another view count: predicted
    evaluation.logits(trained, canvases.flip(-1), (32, 32), batch_size=2, tta=True)  # other canvases: predicted
    assert calls == [True, True, False, True]
