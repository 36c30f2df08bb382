"""Train the two SSD300s from the notebook's parameters, through the trained-model cache.

A trained detector is stored under ``<models root>/detection/ssd_<backbone>/<key>/`` where
the key hashes everything that defines its weights (architecture, anchors, recipe,
augmentation, split, seed) and BCCD's fingerprint, so re-rendering the report reuses it and
any change trains anew. Training is :func:`bloodlib.training.fit` with Task 1's epoch body,
:class:`~bloodlib.detection.engine.DetectionTask`. ``bloodlib train detection --profile cpu``
does the same outside the notebook.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bloodlib import runtime
from bloodlib.detection.backbones import BACKBONES
from bloodlib.detection.baseline import HSVThresholds
from bloodlib.detection.data import CLASSES, Annotation, BCCDDetection, load_split
from bloodlib.detection.engine import DetectionTask
from bloodlib.detection.model import build_ssd
from bloodlib.detection.params import DetectionParams
from bloodlib.detection.transforms import train_transforms
from bloodlib.modelcache import ModelRun
from bloodlib.params import config_from, values_for
from bloodlib.training import TrainConfig, TrainedModel, fit, load_or_train

DISPLAY = {"vgg16": "VGG16-SSD300", "alexnet": "AlexNet-SSD300", "hsv": "HSV baseline"}
TASK = "detection"


def data_root() -> Path:
    """BCCD's folder (``BLOODLIB_DATA``, the user cache, or a download)."""
    from bloodlib.data import locate

    return locate("BCCD")


def data_fingerprints() -> dict[str, str]:
    """``{"BCCD": fingerprint}`` after verifying the files on disk (the cache keys' data part).

    Raises:
        bloodlib.data.DataMismatchError: BCCD is missing or differs from the registry.
    """
    from bloodlib.data import fingerprint

    return {"BCCD": fingerprint("BCCD")}


def load_parts(p: DetectionParams, root: Path | None = None) -> dict[str, list[Annotation]]:
    """The train/val/test annotations of ``p.split`` (capped by ``p.*_images``)."""
    limits = {"train": p.train_images, "val": p.val_images, "test": p.test_images}
    return load_split(root or data_root(), p.split, p.split_seed, limits)


def model_kwargs(p: DetectionParams, backbone: str) -> dict[str, Any]:
    """Arguments of :func:`~bloodlib.detection.model.build_ssd` for ``backbone``."""
    if backbone not in BACKBONES:
        raise ValueError(f"backbone {backbone!r} is not one of {', '.join(BACKBONES)}")
    return {
        "backbone": backbone,
        "num_classes": len(CLASSES) + 1,
        "width": p.vgg16_width if backbone == "vgg16" else p.alexnet_width,
        "batch_norm": p.batch_norm,
        "pretrained": p.pretrained,
        "scales": list(p.anchor_scales),
        "aspect_ratios": list(p.anchor_aspect_ratios),
        "match_iou": p.match_iou,
    }


def train_config(p: DetectionParams, backbone: str) -> TrainConfig:
    return config_from(TrainConfig, p, epochs=p.vgg16_epochs if backbone == "vgg16" else p.alexnet_epochs)


def augmentation_kwargs(p: DetectionParams) -> dict[str, float]:
    return values_for(train_transforms, p)


def hsv_thresholds(p: DetectionParams) -> HSVThresholds:
    return config_from(HSVThresholds, p, prefix="hsv_")


def run_params(p: DetectionParams, backbone: str) -> dict[str, Any]:
    """Everything that defines the trained weights (the model-cache key hashes it)."""
    from dataclasses import asdict

    return {
        "model": model_kwargs(p, backbone),
        "train": {**asdict(train_config(p, backbone)), "num_workers": p.num_workers},
        "augmentation": augmentation_kwargs(p),
        "data": {
            "split": p.split,
            "split_seed": p.split_seed,
            "train_images": p.train_images,
            "val_images": p.val_images,
        },
        "torch": torch.__version__.split("+")[0],
    }


def model_run(p: DetectionParams, backbone: str, data: dict[str, str], root: Path | None = None) -> ModelRun:
    """The cache entry of the SSD300 with ``backbone`` trained on data with fingerprints ``data``."""
    return ModelRun(f"{TASK}/ssd_{backbone}", run_params(p, backbone), data, root)


def train_detector(
    p: DetectionParams,
    backbone: str,
    parts: dict[str, list[Annotation]],
    *,
    progress: bool = True,
    models_root: Path | None = None,
    fingerprints: dict[str, str] | None = None,
) -> TrainedModel:
    """The SSD300 with ``backbone``: from the model cache, or trained (resuming a checkpoint) and cached.

    ``fingerprints`` defaults to :func:`data_fingerprints` (verifies BCCD's files).
    """
    run = model_run(p, backbone, fingerprints or data_fingerprints(), models_root)
    config = train_config(p, backbone)

    def train(model: torch.nn.Module):
        train_set = BCCDDetection(parts["train"], train_transforms(**augmentation_kwargs(p)))
        task = DetectionTask(train_set, parts["val"], batch_size=p.batch_size, num_workers=p.num_workers)
        return fit(model, task, config, run=run, progress=progress, desc=DISPLAY[backbone])

    return load_or_train(
        run, lambda: build_ssd(**model_kwargs(p, backbone)), train, name=DISPLAY[backbone], seed=config.seed
    )


def train_detectors(p: DetectionParams, parts: dict[str, list[Annotation]]) -> dict[str, TrainedModel]:
    """Display name -> :func:`train_detector` of each of :data:`BACKBONES`, in that order."""
    trained = [train_detector(p, backbone, parts) for backbone in BACKBONES]
    return {t.name: t for t in trained}


def train_cli(profile: str, root: Path) -> int:
    """``bloodlib train detection --profile <profile>``: train (or find cached) both SSD300s."""
    from bloodlib.params import load_params

    p = load_params("01_detection", profile, root)
    runtime.configure(threads=p.num_threads)
    parts = load_parts(p)
    for backbone in BACKBONES:
        trained = train_detector(p, backbone, parts)
        where = "cached" if trained.cached else f"trained in {trained.train_seconds:.0f} s"
        val = trained.best_row.get("val_mAP", float("nan"))
        print(
            f"{trained.name}: {where}, best epoch {trained.best_epoch}, validation mAP@0.5 {val:.3f} "
            f"(split {p.split}), key {trained.key}"
        )
    return 0
