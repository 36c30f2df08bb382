"""Training loop: resuming from a checkpoint repeats the uninterrupted run; the trained-model cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from bloodlib.detection.data import Annotation, BCCDDetection
from bloodlib.detection.engine import TrainConfig, fit, predict
from bloodlib.detection.model import build_ssd
from bloodlib.detection.params import DetectionParams
from bloodlib.detection.train import train_detector
from bloodlib.detection.transforms import train_transforms
from bloodlib.modelcache import ModelRun
from bloodlib.params import build, read_yaml_mapping

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_annotations(folder: Path, n: int) -> list[Annotation]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        pixels = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        path = folder / f"img{i}.jpg"
        Image.fromarray(pixels).save(path)
        xy = rng.uniform(0, 100, (3, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 50, (3, 2))], axis=1).clip(0, 120).astype(np.float32)
        out.append(Annotation(f"img{i}", path, 160, 120, boxes, np.array([1, 2, 3][: 3 - (i % 2)] + [1] * (i % 2))))
    return out


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_ssd(
        backbone="alexnet",
        num_classes=4,
        width=0.125,
        batch_norm=True,
        scales=(0.06, 0.15, 0.22, 0.33, 0.45, 0.6, 0.75),
        aspect_ratios=(0.7,),
    )


CFG = TrainConfig(
    epochs=2,
    batch_size=2,
    optimizer="adamw",
    lr=1e-3,
    momentum=0.9,
    beta2=0.999,
    weight_decay=1e-2,
    schedule="cosine",
    warmup_epochs=0.5,
    grad_clip=10.0,
    eval_every=1,
    seed=3,
)
AUGMENT = {
    "photometric_p": 0.5,
    "zoom_out_p": 0.5,
    "zoom_out_max": 1.5,
    "iou_crop_p": 0.5,
    "hflip_p": 0.5,
    "vflip_p": 0.5,
}


def test_resume_gives_the_same_next_epoch_as_an_uninterrupted_run(tmp_path):
    annotations = synthetic_annotations(tmp_path, 6)
    train = BCCDDetection(annotations[:4], train_transforms(**AUGMENT))
    val = annotations[4:]

    whole = fit(tiny_model(), train, val, CFG, run=ModelRun("t", {"a": 1}, {}, tmp_path / "A"), progress=False)

    run = ModelRun("t", {"a": 1}, {}, tmp_path / "B")
    first = fit(tiny_model(), train, val, CFG, run=run, progress=False, stop_after=1)
    assert len(first.history) == 1 and run.load_checkpoint()["epoch"] == 1
    resumed_model = tiny_model()  # a fresh process: new model, state from the checkpoint
    resumed = fit(resumed_model, train, val, CFG, run=run, progress=False)

    assert len(resumed.history) == 2
    assert resumed.history[1]["loss"] == pytest.approx(whole.history[1]["loss"], rel=1e-6, abs=1e-7)
    assert resumed.history[0]["loss"] == whole.history[0]["loss"]
    assert resumed.best_epoch == whole.best_epoch
    for key, value in whole.state.items():
        torch.testing.assert_close(resumed.state[key], value, rtol=1e-5, atol=1e-6)
    assert whole.history[1]["loss"] != whole.history[0]["loss"]
    assert "val_mAP" in whole.history[1]


def test_predict_returns_boxes_in_image_pixels(tmp_path):
    annotations = synthetic_annotations(tmp_path, 2)
    model = tiny_model()
    model.score_thresh = 0.0
    out = predict(model, annotations)
    assert len(out) == 2 and all(o["boxes"].shape[1] == 4 for o in out)
    assert max(float(o["boxes"][:, 2].max()) for o in out) <= 160 + 1e-3


def quick_params(**overrides) -> DetectionParams:
    values = read_yaml_mapping(ROOT / "params" / "quick" / "01_detection.yaml")
    return build(DetectionParams, {**values, **overrides}, "quick")


def test_trained_detector_is_cached_and_reused(tmp_path):
    annotations = synthetic_annotations(tmp_path, 6)
    parts = {"train": annotations[:4], "val": annotations[4:], "test": annotations[4:]}
    p = quick_params(alexnet_epochs=1)
    first = train_detector(p, "alexnet", parts, progress=False, models_root=tmp_path / "m", checksums={"BCCD": "x"})
    assert not first.from_cache and first.best_epoch == 1 and len(first.history) == 1
    again = train_detector(p, "alexnet", parts, progress=False, models_root=tmp_path / "m", checksums={"BCCD": "x"})
    assert again.from_cache and again.key == first.key
    for key, value in first.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], value)
    other_data = train_detector(
        p, "alexnet", parts, progress=False, models_root=tmp_path / "m", checksums={"BCCD": "y"}
    )
    assert not other_data.from_cache and other_data.key != first.key
    changed = dataclasses.replace(p, lr=p.lr * 2)
    assert (
        train_detector(
            changed, "alexnet", parts, progress=False, models_root=tmp_path / "m", checksums={"BCCD": "x"}
        ).key
        != first.key
    )


def test_profiles_state_every_key():
    for profile in ("quick", "cpu", "paper"):
        path = ROOT / "params" / profile / "01_detection.yaml"
        build(DetectionParams, yaml.safe_load(path.read_text()), str(path))
