"""AP of image resamples from one matching (bloodlib.detection.resampling) against torchmetrics' COCO AP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bloodlib.detection import resampling
from bloodlib.detection.data import Annotation
from bloodlib.detection.metrics import average_precision, bootstrap_ci


def _scene(seed: int, n_images: int = 12) -> tuple[list[dict], list[Annotation]]:
    """Random ground truth (all three classes) and noisy detections with false positives."""
    g = torch.Generator().manual_seed(seed)
    preds, annotations = [], []
    for i in range(n_images):
        n = int(torch.randint(0, 6, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 500
        boxes = torch.cat([xy, xy + 20 + torch.rand(n, 2, generator=g) * 60], 1)
        labels = torch.randint(1, 4, (n,), generator=g)
        annotations.append(Annotation(f"i{i}", Path(f"i{i}.jpg"), 640, 480, boxes.numpy(), labels.numpy()))
        centre_shift = torch.randn(n, 2, generator=g).repeat(1, 2) * 6
        noisy = boxes + centre_shift + torch.randn(n, 4, generator=g).clamp(-2, 2) * 2  # positive sizes
        extra_xy = torch.rand(4, 2, generator=g) * 500
        extra = torch.cat([extra_xy, extra_xy + 40], 1)
        preds.append(
            {
                "boxes": torch.cat([noisy, extra]),
                "scores": torch.rand(n + 4, generator=g),
                "labels": torch.cat([labels, torch.randint(1, 4, (4,), generator=g)]),
            }
        )
    return preds, annotations


@pytest.mark.parametrize("seed", [0, 1])
def test_resampled_ap_equals_torchmetrics_on_the_images_and_on_a_resample(seed):
    preds, annotations = _scene(seed)
    matched = resampling.match_detections(preds, annotations)
    full = average_precision(preds, annotations)
    once = np.ones((1, len(annotations)))
    for name, m in matched.items():
        assert resampling.resampled_ap(m, once)[0] == pytest.approx(full[name], abs=1e-6)
    assert resampling.resampled_map(matched, once)[0] == pytest.approx(full["mAP"], abs=1e-6)
    idx = np.random.default_rng(seed).integers(0, len(annotations), size=len(annotations))
    weights = np.bincount(idx, minlength=len(annotations))[None, :]
    again = average_precision([preds[i] for i in idx], [annotations[i] for i in idx])["mAP"]
    assert resampling.resampled_map(matched, weights)[0] == pytest.approx(again, abs=1e-5)


def test_bootstrap_weights_are_the_draws_of_bootstrap_ci():
    weights = resampling.bootstrap_weights(7, samples=50, seed=3)
    assert weights.shape == (50, 7) and (weights.sum(1) == 7).all()
    seen = []
    bootstrap_ci(lambda idx: seen.append(np.bincount(idx, minlength=7)) or 0.0, 7, samples=50, seed=3)
    assert (np.stack(seen) == weights).all()


def test_map_interval_brackets_the_point_estimate_and_handles_missing_classes():
    preds, annotations = _scene(2, n_images=20)
    low, high = resampling.map_interval(preds, annotations, samples=1000, seed=0)
    assert low < average_precision(preds, annotations)["mAP"] < high
    assert np.isnan(resampling.map_interval(preds, annotations, samples=0, seed=0)).all()
    empty = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}]
    one = [a for a in annotations if len(a.labels)][:1]  # ground truth, no detection: AP 0, mAP 0
    assert resampling.resampled_map(resampling.match_detections(empty, one), np.ones((1, 1)))[0] == 0.0
    with pytest.raises(ValueError, match="2 predictions for 1 images"):
        resampling.match_detections(preds[:2], one)
