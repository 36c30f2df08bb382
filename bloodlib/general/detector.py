"""The general detector: every source with complete boxes, at a canonical cell scale.

Training data: BCCD's official train images with their complete boxes (``bccd-relabel``) and the
train splits of TXL-PBC's PBC- and Raabin-sourced fields; the epoch kept is the one with the best
mAP@0.5 on the pooled validation splits of the same sources. Paper reproduction (Task 1's
Table 2) keeps BCCD's own boxes and split; this model is what ``bloodlib analyze`` uses.

``sources`` restricts training (and validation) to some sources: the single-source detectors of
notebook 05's source x source table are the same recipe on less data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bloodlib.detection.data import CLASSES, Annotation
from bloodlib.detection.model import build_ssd
from bloodlib.detection.scaled import ScaledDetection, ScaledDetectionTask, ScaleSpec, field_diameter
from bloodlib.general.params import GeneralParams
from bloodlib.modelcache import ModelRun
from bloodlib.params import config_from
from bloodlib.training import TrainConfig, TrainedModel, fit, load_or_train

SOURCES = ("BCCD", "PBC", "Raabin")
TASK = "general/detector"
DATASETS = ("BCCD", "bccd-relabel", "txl-pbc")


def load_parts(p: GeneralParams) -> dict[str, list[Annotation]]:
    """Train and validation fields of every source with complete boxes (capped per source by ``p``)."""
    from bloodlib.data import locate
    from bloodlib.detection.sources import general_detection_parts

    limits = {"train": p.train_images, "val": p.val_images}
    bccd, relabel, txl = (locate(name) for name in DATASETS)
    return general_detection_parts(bccd, relabel, txl, limits=limits)


def data_fingerprints() -> dict[str, str]:
    """Fingerprints of the data sets the detector trains on (the cache key's data part)."""
    from bloodlib.data import fingerprint

    return {name: fingerprint(name) for name in DATASETS}


def scale_spec(p: GeneralParams) -> ScaleSpec:
    return config_from(ScaleSpec, p, overlap=p.tile_overlap)


def model_kwargs(p: GeneralParams) -> dict[str, Any]:
    """Arguments of :func:`~bloodlib.detection.model.build_ssd`."""
    return {
        "backbone": p.backbone,
        "num_classes": len(CLASSES) + 1,
        "width": p.width,
        "batch_norm": p.batch_norm,
        "pretrained": p.pretrained,
        "scales": list(p.anchor_scales),
        "aspect_ratios": list(p.anchor_aspect_ratios),
        "match_iou": p.match_iou,
    }


def train_config(p: GeneralParams, epochs: int | None = None) -> TrainConfig:
    return config_from(TrainConfig, p, epochs=epochs or p.epochs)


def augmentation_kwargs(p: GeneralParams) -> dict[str, float]:
    return {
        "scale_jitter": p.scale_jitter,
        "hflip_p": p.hflip_p,
        "vflip_p": p.vflip_p,
        "colour_p": p.colour_p,
        "hue": p.hue,
    }


def only(annotations: Sequence[Annotation], sources: Sequence[str]) -> list[Annotation]:
    """The annotations of ``sources``."""
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; choose from {', '.join(SOURCES)}")
    return [a for a in annotations if a.source in sources]


def run_params(p: GeneralParams, sources: Sequence[str], epochs: int) -> dict[str, Any]:
    """Everything that defines the trained weights (the model-cache key hashes it)."""
    from dataclasses import asdict

    return {
        "model": model_kwargs(p),
        "scale": asdict(scale_spec(p)),
        "train": {**asdict(train_config(p, epochs)), "num_workers": p.num_workers},
        "augmentation": augmentation_kwargs(p),
        "data": {
            "sources": list(sources),
            "train_images": p.train_images,
            "val_images": p.val_images,
        },
        "torch": torch.__version__.split("+")[0],
    }


def model_run(
    p: GeneralParams,
    fingerprints: dict[str, str],
    *,
    sources: Sequence[str] = SOURCES,
    epochs: int | None = None,
    root: Path | None = None,
) -> ModelRun:
    name = "all" if tuple(sources) == SOURCES else "+".join(sources)
    return ModelRun(f"{TASK}/{name}", run_params(p, sources, epochs or p.epochs), fingerprints, root)


def build(p: GeneralParams) -> torch.nn.Module:
    return build_ssd(**model_kwargs(p))


def train_detector(
    p: GeneralParams,
    parts: dict[str, list[Annotation]],
    *,
    sources: Sequence[str] = SOURCES,
    epochs: int | None = None,
    progress: bool = True,
    models_root: Path | None = None,
    fingerprints: dict[str, str] | None = None,
) -> TrainedModel:
    """The general detector trained on ``sources`` (all by default): from the cache, or trained and cached."""
    run = model_run(p, fingerprints or data_fingerprints(), sources=sources, epochs=epochs, root=models_root)
    config = train_config(p, epochs)
    name = "general SSD300 (" + ("all sources" if tuple(sources) == SOURCES else " + ".join(sources)) + ")"

    def train(model: torch.nn.Module):
        train_fields = only(parts["train"], sources)
        diameters = [field_diameter(a) for a in train_fields]
        train_set = ScaledDetection(train_fields, diameters, spec=scale_spec(p), **augmentation_kwargs(p))
        task = ScaledDetectionTask(
            train_set, only(parts["val"], sources), batch_size=p.batch_size, num_workers=p.num_workers
        )
        return fit(model, task, config, run=run, progress=progress, desc=name)

    return load_or_train(run, lambda: build(p), train, name=name, seed=p.seed)


def train_single_source(
    p: GeneralParams, parts: dict[str, list[Annotation]], *, progress: bool = True
) -> dict[str, TrainedModel]:
    """One detector per source, each trained on that source alone for ``p.cross_source_epochs``
    (notebook 05's source x source table)."""
    return {
        source: train_detector(p, parts, sources=(source,), epochs=p.cross_source_epochs, progress=progress)
        for source in SOURCES
    }
