"""Training loop: learns, checkpoints every epoch, resumes to the same result; metrics; the CLI hook."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support

from bloodlib.classification import metrics
from bloodlib.classification.canvases import CanvasSet
from bloodlib.classification.data import CLASSES
from bloodlib.classification.engine import TrainConfig, evaluate, fit
from bloodlib.classification.models import build_model
from bloodlib.classification.transforms import AugmentConfig
from bloodlib.modelcache import ModelRun

AUG = AugmentConfig(
    rotation=90, shear=5, translate=0.05, scale=0.1, brightness=0.1, contrast=0.1, saturation=0.1, hue=0.0, blur_p=0.0
)
CONFIG = TrainConfig(
    epochs=3,
    samples_per_epoch=64,
    batch_size=16,
    lr=3e-3,
    final_lr_fraction=0.1,
    weight_decay=0.0,
    label_smoothing=0.0,
    aux_loss_weight=0.4,
    seed=3,
)


def colour_set(n: int, seed: int) -> CanvasSet:
    """Canvases whose class is their dominant colour channel pattern (learnable in a few steps)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    tints = torch.tensor([[200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60]], dtype=torch.float32)
    noise = torch.randint(0, 40, (n, 3, 24, 24), generator=g).float()
    canvases = (tints[labels][:, :, None, None] + noise).clamp(0, 255).to(torch.uint8)
    frame = pd.DataFrame({"label": [CLASSES[i] for i in labels], "group": np.arange(n), "source": np.arange(n)})
    return CanvasSet("synthetic", frame, canvases)


@pytest.fixture(autouse=True)
def two_threads():
    torch.set_num_threads(2)


def test_fit_learns_and_reports_history():
    torch.manual_seed(0)
    model = build_model("arch1")
    result = fit(
        model, colour_set(64, 0), colour_set(32, 1), config=CONFIG, augment=AUG, input_size=(16, 16), progress=False
    )
    history = pd.DataFrame(result["history"])
    assert list(history["epoch"]) == [1, 2, 3]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "val_bacc"} <= set(history.columns)
    assert result["best_epoch"] == int(
        history.sort_values(["val_bacc", "val_loss"], ascending=[False, True]).iloc[0]["epoch"]
    )
    model.load_state_dict(result["best_state"])
    assert evaluate(model, colour_set(32, 2), (16, 16))["acc"] > 0.6


def test_interrupted_training_resumes_to_the_same_weights(tmp_path):
    def run_fit(run, on_epoch=None):
        torch.manual_seed(0)
        model = build_model("arch2")
        config = TrainConfig(
            epochs=2,
            samples_per_epoch=32,
            batch_size=16,
            lr=3e-3,
            final_lr_fraction=0.1,
            weight_decay=0.0,
            label_smoothing=0.0,
            aux_loss_weight=0.4,
            seed=3,
        )
        return fit(
            model,
            colour_set(48, 0),
            colour_set(16, 1),
            config=config,
            augment=AUG,
            input_size=(16, 16),
            run=run,
            progress=False,
            on_epoch=on_epoch,
        )

    straight = run_fit(ModelRun("t/straight", {"a": 1}, {}, root=tmp_path))

    def stop_after_first(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    run = ModelRun("t/interrupted", {"a": 1}, {}, root=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_fit(run, stop_after_first)
    assert run.load_checkpoint()["state"]["epoch"] == 1
    resumed = run_fit(run)
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    for key, value in straight["best_state"].items():
        assert torch.allclose(value.float(), resumed["best_state"][key].float()), key
    assert [r["val_loss"] for r in straight["history"]] == pytest.approx([r["val_loss"] for r in resumed["history"]])


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(0, 64, 16, 1e-3, 1.0, 0.0, 0.0, 0.4, 0)
    with pytest.raises(ValueError, match="final_lr_fraction"):
        TrainConfig(1, 64, 16, 1e-3, 0.0, 0.0, 0.0, 0.4, 0)


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


def test_classify_boxes_returns_probabilities_per_box():
    from bloodlib.classification.crops import CropPolicy
    from bloodlib.classification.engine import classify_boxes

    policy = CropPolicy((32, 32), 1.5, 1.5, 8.0, 97.0, 1.3)
    image = np.full((120, 160, 3), 230, np.uint8)
    image[30:50, 90:110] = (110, 50, 170)
    probs = classify_boxes(build_model("arch1"), policy, image, [(88, 28, 112, 52), (-5, -5, 10, 10)])
    assert probs.shape == (2, 4) and torch.allclose(probs.sum(1), torch.ones(2))


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
