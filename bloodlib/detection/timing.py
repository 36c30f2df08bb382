"""Inference time per image on this machine (batch 1, after warm-up), and torchvision's reference SSD."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


def seconds_per_image(
    predict_one: Callable[[torch.Tensor], object], images: Sequence[torch.Tensor], *, warmup: int = 1
) -> dict[str, float]:
    """Median and mean wall seconds of ``predict_one(image)`` over ``images`` (after ``warmup`` calls).

    ``images`` are (3, H, W) float tensors; returns ``{"median_s", "mean_s", "images"}``.
    """
    if not images:
        raise ValueError("timing needs at least one image")
    with torch.no_grad():
        for image in list(images)[:warmup]:
            predict_one(image)
        times = []
        for image in images:
            start = time.perf_counter()
            predict_one(image)
            times.append(time.perf_counter() - start)
    return {"median_s": float(np.median(times)), "mean_s": float(np.mean(times)), "images": len(times)}


def time_detector(model: torch.nn.Module, images: Sequence[torch.Tensor], *, warmup: int = 1) -> dict[str, float]:
    """:func:`seconds_per_image` of a torchvision-style detector in eval mode (resize, network, NMS)."""
    model.eval()
    return seconds_per_image(lambda image: model([image]), images, warmup=warmup)


def torchvision_reference(num_classes: int) -> torch.nn.Module:
    """torchvision's own ``ssd300_vgg16`` (full-width VGG16, random weights) as a speed reference."""
    from torchvision.models.detection import ssd300_vgg16

    return ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes).eval()


def timing_table(
    models: dict[str, torch.nn.Module],
    images: Sequence[torch.Tensor],
    *,
    hsv: Callable[[torch.Tensor], object] | None = None,
    num_classes: int = 4,
    tta_views: int = 1,
    tta_iou: float = 0.5,
) -> Any:
    """Seconds per image for each model, torchvision's ``ssd300_vgg16`` (reference) and the HSV baseline.

    ``images``: (3, H, W) float tensors in [0, 1]; ``hsv`` maps one such image to detections.
    With ``tta_views`` > 1 each model gets a second row timing the fused flipped views
    (:func:`bloodlib.detection.tta.predict_tta`), the way the report predicts.
    """
    import pandas as pd

    from bloodlib.detection.tta import predict_tta
    from bloodlib.torchutil import count_parameters

    rows = []
    reference = torchvision_reference(num_classes)
    for name, model in {**models, "torchvision ssd300_vgg16 (reference)": reference}.items():
        rows.append({"model": name, "parameters": count_parameters(model), **time_detector(model, images)})
        if tta_views > 1 and name in models:
            fused = seconds_per_image(
                lambda image, m=model: predict_tta(m, [image], views=tta_views, iou=tta_iou), images
            )
            rows.append({"model": f"{name}, {tta_views} views fused", "parameters": count_parameters(model), **fused})
    if hsv is not None:
        rows.append({"model": "HSV baseline", "parameters": 0, **seconds_per_image(hsv, images)})
    return pd.DataFrame(rows)
