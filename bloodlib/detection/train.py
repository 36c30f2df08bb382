"""Train the two SSD300s from the notebook's parameters, through the trained-model cache.

A trained detector is stored under ``<models root>/detection/ssd_<backbone>/<key>/`` where
the key hashes everything that defines its weights (architecture, anchors, recipe,
augmentation, split, seed) and BCCD's registry checksums, so re-rendering the report
reuses it and any change trains anew. ``bloodlib train detection --profile cpu`` does the
same outside the notebook.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bloodlib.detection.baseline import HSVThresholds
from bloodlib.detection.data import CLASSES, Annotation, BCCDDetection, load_split
from bloodlib.detection.engine import TrainConfig, fit
from bloodlib.detection.model import build_ssd
from bloodlib.detection.params import DetectionParams
from bloodlib.detection.transforms import train_transforms
from bloodlib.modelcache import ModelRun

BACKBONES = ("vgg16", "alexnet")
DISPLAY = {"vgg16": "VGG16-SSD300", "alexnet": "AlexNet-SSD300", "hsv": "HSV baseline"}


def data_root() -> Path:
    """BCCD's folder (``BLOODLIB_DATA``, the user cache, or a download)."""
    from bloodlib.data import locate

    return locate("BCCD")


def data_checksum() -> dict[str, str]:
    """``{"BCCD": hash of the registry's checksums}`` after verifying the files on disk.

    Raises:
        bloodlib.data.DataMismatchError: BCCD is missing or differs from the registry.
    """
    from bloodlib.data import verified_checksums

    checks = json.dumps(verified_checksums("BCCD"), sort_keys=True)
    return {"BCCD": hashlib.sha256(checks.encode()).hexdigest()}


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
    return TrainConfig(
        epochs=p.vgg16_epochs if backbone == "vgg16" else p.alexnet_epochs,
        batch_size=p.batch_size,
        optimizer=p.optimizer,
        lr=p.lr,
        momentum=p.momentum,
        beta2=p.beta2,
        weight_decay=p.weight_decay,
        schedule=p.schedule,
        warmup_epochs=p.warmup_epochs,
        grad_clip=p.grad_clip,
        eval_every=p.eval_every,
        seed=p.seed,
        num_workers=p.num_workers,
    )


def augmentation_kwargs(p: DetectionParams) -> dict[str, float]:
    return {
        "photometric_p": p.photometric_p,
        "zoom_out_p": p.zoom_out_p,
        "zoom_out_max": p.zoom_out_max,
        "iou_crop_p": p.iou_crop_p,
        "hflip_p": p.hflip_p,
        "vflip_p": p.vflip_p,
    }


def hsv_thresholds(p: DetectionParams) -> HSVThresholds:
    return HSVThresholds(
        hue_low=p.hsv_hue_low,
        hue_high=p.hsv_hue_high,
        sat_low=p.hsv_sat_low,
        val_low=p.hsv_val_low,
        val_high=p.hsv_val_high,
        open_kernel=p.hsv_open_kernel,
        close_kernel=p.hsv_close_kernel,
        min_area=p.hsv_min_area,
        box_scale=p.hsv_box_scale,
    )


def run_params(p: DetectionParams, backbone: str) -> dict[str, Any]:
    """Everything that defines the trained weights (the model-cache key hashes it)."""
    return {
        "model": model_kwargs(p, backbone),
        "train": asdict(train_config(p, backbone)),
        "augmentation": augmentation_kwargs(p),
        "data": {
            "split": p.split,
            "split_seed": p.split_seed,
            "train_images": p.train_images,
            "val_images": p.val_images,
        },
        "torch": torch.__version__.split("+")[0],
    }


@dataclass
class TrainedDetector:
    """A trained SSD300 and how it was obtained."""

    backbone: str
    model: torch.nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    train_seconds: float
    key: str
    from_cache: bool

    @property
    def name(self) -> str:
        return DISPLAY[self.backbone]


def train_detector(
    p: DetectionParams,
    backbone: str,
    parts: dict[str, list[Annotation]],
    *,
    progress: bool = True,
    log: Any = None,
    models_root: Path | None = None,
    checksums: dict[str, str] | None = None,
) -> TrainedDetector:
    """The SSD300 with ``backbone``: from the model cache, or trained (resuming a checkpoint) and cached.

    ``checksums`` defaults to :func:`data_checksum` (verifies BCCD's files).
    """
    run = ModelRun(f"detection/ssd_{backbone}", run_params(p, backbone), checksums or data_checksum(), models_root)
    model = build_ssd(**model_kwargs(p, backbone))
    if run.is_complete():
        final = run.load_final()
        model.load_state_dict(final["model"])
        model.eval()
        return TrainedDetector(
            backbone, model, final["history"], final["best_epoch"], final["train_seconds"], run.key, True
        )
    train_set = BCCDDetection(parts["train"], train_transforms(**augmentation_kwargs(p)))
    result = fit(
        model,
        train_set,
        parts["val"],
        train_config(p, backbone),
        run=run,
        progress=progress,
        name=DISPLAY[backbone],
        log=log,
    )
    model.load_state_dict(result.state)
    model.eval()
    run.save_final(result.state, result.history, best_epoch=result.best_epoch, train_seconds=result.seconds)
    return TrainedDetector(backbone, model, result.history, result.best_epoch, result.seconds, run.key, False)


def train_cli(profile: str, root: Path) -> int:
    """``bloodlib train detection --profile <profile>``: train (or find cached) both SSD300s."""
    from bloodlib.params import load_params

    p = load_params("01_detection", profile, root)
    torch.set_num_threads(2)
    parts = load_parts(p)
    for backbone in BACKBONES:
        trained = train_detector(p, backbone, parts, log=print)
        where = "cached" if trained.from_cache else f"trained in {trained.train_seconds:.0f} s"
        val = trained.history[trained.best_epoch - 1].get("val_mAP", float("nan"))
        print(
            f"{trained.name}: {where}, best epoch {trained.best_epoch}, validation mAP@0.5 {val:.3f} "
            f"(split {p.split}), key {trained.key}"
        )
    return 0
