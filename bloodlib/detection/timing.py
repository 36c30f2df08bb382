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


def time_fast_detector(
    model: torch.nn.Module, images: Sequence[torch.Tensor], *, precision: str
) -> tuple[dict[str, float], str]:
    """:func:`seconds_per_image` of ``model`` as the pipeline runs it (:class:`bloodlib.pipeline.infer.Detector`:
    BatchNorm fused into the convolutions, channels-last, ``precision``), from a uint8 image, and the
    precision it ran in (bfloat16 falls back to float32 on CPUs without native support)."""
    from bloodlib.pipeline.infer import Detector

    detector = Detector(model, precision)
    prepare = detector.prepare

    def predict(image: torch.Tensor) -> object:
        rgb = image.mul(255).round().byte().permute(1, 2, 0).numpy()
        return detector(prepare(rgb)[None], [rgb.shape[:2]])

    return seconds_per_image(predict, images), detector.precision


#: What each ratio of :func:`timing_table` measures, by row kind.
RATIO_MEANING = {
    "reference": "the reference: torchvision's full-width ssd300_vgg16, float32, BatchNorm-free, unfused",
    "ours": "smaller network only: the same torchvision SSD code (resize, head, box coding, NMS) in float32, "
    "unfused, with our narrower backbone",
    "fused": "smaller network and faster engineering: BatchNorm folded into the convolutions, channels-last",
    "fused_bf16": "smaller network, faster engineering and bfloat16 arithmetic",
    "views": "our network predicting each image in several flipped views (the report's own predictions)",
    "hsv": "no network: the HSV colour threshold",
}


def _row(model: str, kind: str, network: str, module: torch.nn.Module | None, precision: str) -> dict[str, Any]:
    from bloodlib.torchutil import count_parameters

    size = count_parameters(module) if module is not None else 0
    return {"model": model, "kind": kind, "network": network, "parameters": size, "precision": precision}


def timing_table(
    models: dict[str, torch.nn.Module],
    images: Sequence[torch.Tensor],
    *,
    hsv: Callable[[torch.Tensor], object] | None = None,
    num_classes: int = 4,
    tta_views: int = 1,
    tta_iou: float = 0.5,
) -> Any:
    """Seconds per image (batch 1, this machine) of torchvision's ``ssd300_vgg16`` and, per model, the
    like-for-like rows that separate a smaller network from faster engineering.

    ``images``: (3, H, W) float tensors in [0, 1]; ``hsv`` maps one such image to detections. Rows
    (``kind``, meaning in :data:`RATIO_MEANING`): the reference; each model as trained (``ours``: the
    same torchvision SSD parts, float32, unfused); the pipeline's fast detector in float32 (``fused``)
    and bfloat16 (``fused_bf16``, where the CPU has it); with ``tta_views`` > 1 the fused flipped views
    of the report (``views``, :func:`bloodlib.detection.tta.predict_tta`); the HSV baseline.
    Ratios: ``speedup_vs_reference`` = reference median / row median; ``speedup_vs_unfused`` = the
    ``ours`` median of the row's ``network`` / row median (engineering alone); ``ratio_measures`` says
    what the first one measures.
    """
    import pandas as pd

    from bloodlib.detection.tta import predict_tta
    from bloodlib.torchutil import bf16_supported

    reference = torchvision_reference(num_classes)
    rows = [_row("torchvision ssd300_vgg16 (full width, reference)", "reference", "", reference, "float32")]
    rows[0].update(time_detector(reference, images))
    for name, model in models.items():
        rows.append({**_row(name, "ours", name, model, "float32"), **time_detector(model, images)})
        for kind, precision in (("fused", "float32"), ("fused_bf16", "bfloat16")):
            if precision == "bfloat16" and not bf16_supported():
                continue
            timed, ran_as = time_fast_detector(model, images, precision=precision)
            rows.append({**_row(f"{name}, fused BatchNorm, channels-last", kind, name, model, ran_as), **timed})
        if tta_views > 1:
            fused = seconds_per_image(
                lambda image, m=model: predict_tta(m, [image], views=tta_views, iou=tta_iou), images
            )
            rows.append({**_row(f"{name}, {tta_views} views fused", "views", name, model, "float32"), **fused})
    if hsv is not None:
        rows.append({**_row("HSV baseline", "hsv", "", None, "-"), **seconds_per_image(hsv, images)})
    table = pd.DataFrame(rows)
    table["speedup_vs_reference"] = table.loc[0, "median_s"] / table["median_s"]
    unfused = table[table["kind"] == "ours"].set_index("network")["median_s"]
    table["speedup_vs_unfused"] = table["network"].map(unfused) / table["median_s"]
    table["ratio_measures"] = table["kind"].map(RATIO_MEANING)
    return table
