"""Tiny data and models of both deep tasks, for tests of the shared training scaffold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from bloodlib.classification.canvases import CanvasSet
from bloodlib.classification.data import CLASSES
from bloodlib.classification.engine import ClassifierTask
from bloodlib.classification.models import build_model
from bloodlib.classification.transforms import AugmentConfig
from bloodlib.detection.data import Annotation, BCCDDetection
from bloodlib.detection.engine import DetectionTask
from bloodlib.detection.model import build_ssd
from bloodlib.detection.transforms import train_transforms

AUGMENT_DETECTION = {
    "photometric_p": 0.5,
    "zoom_out_p": 0.5,
    "zoom_out_max": 1.5,
    "iou_crop_p": 0.5,
    "hflip_p": 0.5,
    "vflip_p": 0.5,
}
AUGMENT_CLASSIFIER = AugmentConfig(
    rotation=90, shear=5, translate=0.05, scale=0.1, brightness=0.1, contrast=0.1, saturation=0.1, hue=0.0, blur_p=0.0
)


def synthetic_annotations(folder: Path, n: int) -> list[Annotation]:
    """``n`` random 160x120 JPEG images with three boxes each (WBC, RBC, platelets or RBC)."""
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


def tiny_ssd() -> torch.nn.Module:
    return build_ssd(
        backbone="alexnet",
        num_classes=4,
        width=0.125,
        batch_norm=True,
        scales=(0.06, 0.15, 0.22, 0.33, 0.45, 0.6, 0.75),
        aspect_ratios=(0.7,),
    )


def detection_task(folder: Path) -> DetectionTask:
    """Four training and two validation images."""
    annotations = synthetic_annotations(folder, 6)
    train = BCCDDetection(annotations[:4], train_transforms(**AUGMENT_DETECTION))
    return DetectionTask(train, annotations[4:], batch_size=2)


def colour_set(n: int, seed: int) -> CanvasSet:
    """Canvases whose class is their dominant colour channel pattern (learnable in a few steps)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    tints = torch.tensor([[200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60]], dtype=torch.float32)
    noise = torch.randint(0, 40, (n, 3, 24, 24), generator=g).float()
    canvases = (tints[labels][:, :, None, None] + noise).clamp(0, 255).to(torch.uint8)
    frame = pd.DataFrame({"label": [CLASSES[i] for i in labels], "group": np.arange(n), "source": np.arange(n)})
    return CanvasSet("synthetic", frame, canvases)


def classifier_task(train_size: int = 48, samples_per_epoch: int = 32) -> ClassifierTask:
    return ClassifierTask(
        colour_set(train_size, 0),
        colour_set(16, 1),
        input_size=(16, 16),
        augment=AUGMENT_CLASSIFIER,
        samples_per_epoch=samples_per_epoch,
        batch_size=16,
    )


def tiny_classifier() -> torch.nn.Module:
    return build_model("arch2")
