"""Task 1's epoch body and inference; the detector's load-or-train entry and its cache key."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bloodlib.detection.engine import predict
from bloodlib.detection.params import DetectionParams
from bloodlib.detection.train import train_detector
from bloodlib.params import load_params
from tests.training_helpers import synthetic_annotations, tiny_ssd

pytestmark = pytest.mark.usefixtures("one_thread")


def test_predict_returns_boxes_in_image_pixels(tmp_path):
    annotations = synthetic_annotations(tmp_path, 2)
    model = tiny_ssd()
    model.score_thresh = 0.0
    out = predict(model, annotations)
    assert len(out) == 2 and all(o["boxes"].shape[1] == 4 for o in out)
    assert max(float(o["boxes"][:, 2].max()) for o in out) <= 160 + 1e-3


def quick_params(**overrides) -> DetectionParams:
    return dataclasses.replace(load_params("01_detection", "quick"), **overrides)


@pytest.mark.slow
def test_trained_detector_is_cached_and_reused(tmp_path):
    annotations = synthetic_annotations(tmp_path, 6)
    parts = {"train": annotations[:4], "val": annotations[4:], "test": annotations[4:]}
    p = quick_params(alexnet_epochs=1)

    def train(params, data):
        return train_detector(
            params, "alexnet", parts, progress=False, models_root=tmp_path / "m", fingerprints={"BCCD": data}
        )

    first = train(p, "x")
    assert not first.cached and first.best_epoch == 1 and len(first.history) == 1
    again = train(p, "x")
    assert again.cached and again.key == first.key
    for key, value in first.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], value)
    other_data = train(p, "y")
    assert not other_data.cached and other_data.key != first.key
    assert train(dataclasses.replace(p, lr=p.lr * 2), "x").key != first.key
