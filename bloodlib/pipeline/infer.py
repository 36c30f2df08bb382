"""Batched inference: images decoded in a DataLoader, SSD300 detection, WBC subtype classification.

Speed on a CPU, with results equal to the plain models' up to float rounding:

- images are decoded, normalised and resized to 300x300 in DataLoader worker processes
  (:class:`FieldDataset`), exactly as torchvision's SSD transform does it (normalise, then
  bilinear resize without anti-aliasing), while the main process runs the networks;
- the detector's and the classifier's BatchNorm layers are folded into the preceding
  convolutions (:func:`fuse_conv_bn`) and both run in channels-last memory layout;
- one forward pass per batch of images for the detector and one for all WBCs of the batch
  for the classifier; each image is white-balanced once for all its WBCs
  (:meth:`~bloodlib.classification.crops.CropPolicy.classifier_inputs`, the crop of training and evaluation).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models.detection.image_list import ImageList

from bloodlib import runtime
from bloodlib.classification.classes import CLASSES as SUBTYPE_CLASSES
from bloodlib.classification.crops import CropPolicy
from bloodlib.detection.data import CLASSES
from bloodlib.detection.metrics import above_threshold
from bloodlib.detection.scaled import ScaleSpec, field_tiles
from bloodlib.pipeline.io import ImageInputError, load_image
from bloodlib.torchutil import effective_precision

WBC_LABEL = CLASSES.index("WBC") + 1


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (eval mode) with every ``Conv2d`` directly followed by a ``BatchNorm2d``
    inside an ``nn.Sequential`` replaced by one equivalent convolution (the BatchNorm becomes Identity)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(module).eval()
    for seq in [m for m in fused.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in pairwise(names):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return fused


def ssd_input(
    rgb: np.ndarray, *, size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB -> ``(3, h, w)`` float: what torchvision's SSD transform feeds its backbone
    (pixels / 255, normalised with ``mean``/``std``, bilinear resize to ``size`` without anti-aliasing).

    Resizing is linear, so it is done first, in float32 with OpenCV (half-pixel centres like
    ``F.interpolate(..., align_corners=False)``; equal to torchvision's result within 1e-4, twice as fast).
    """
    import cv2

    h, w = size
    x = cv2.resize(rgb.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    x = (x * np.float32(1 / 255) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


class Detector:
    """A torchvision SSD split into a picklable input transform (run in DataLoader workers) and a fast,
    batched forward on prepared inputs (fused BatchNorm, channels-last).

    ``precision="bfloat16"`` runs the backbone and head under CPU autocast (bfloat16 matrix products,
    float32 accumulation; about twice as fast where the CPU supports bfloat16 natively) and falls back to
    float32 elsewhere (:attr:`precision` says which one runs); box decoding and NMS stay float32.
    """

    def __init__(self, model: nn.Module, precision: str = "float32") -> None:
        self.precision = effective_precision(precision)
        model.eval()
        self.model = model
        transform = model.transform
        self.size = tuple(transform.fixed_size[::-1]) if transform.fixed_size else (300, 300)
        self.mean, self.std = tuple(transform.image_mean), tuple(transform.image_std)
        self.backbone = fuse_conv_bn(model.backbone).to(memory_format=torch.channels_last)
        self.head = copy.deepcopy(model.head).eval().to(memory_format=torch.channels_last)

    @property
    def prepare(self) -> Any:
        """``rgb (H, W, 3) uint8 -> (3, h, w)`` network input (a picklable function)."""
        return partial(ssd_input, size=self.size, mean=self.mean, std=self.std)

    def detect_items(self, items: Sequence[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
        """Detections of decoded items (:class:`FieldDataset`), boxes in the pixels of each item's ``rgb``."""
        return self(torch.stack([item["input"] for item in items]), [item["rgb"].shape[:2] for item in items])

    @torch.inference_mode()
    def __call__(self, inputs: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        """Detections of a batch of prepared inputs ``(B, 3, h, w)``; boxes in the pixels of ``sizes`` ``(H, W)``."""
        x = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
            features = list(self.backbone(x).values())
            head = {k: v.float() for k, v in self.head(features).items()}
        images = ImageList(x, [tuple(self.size)] * len(x))
        anchors = self.model.anchor_generator(images, features)
        detections = self.model.postprocess_detections(head, anchors, images.image_sizes)
        return self.model.transform.postprocess(detections, images.image_sizes, list(sizes))


def scaled_input(
    rgb: np.ndarray,
    *,
    spec: ScaleSpec,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    diameter: float | None,
) -> dict[str, Any]:
    """``(H, W, 3)`` uint8 RGB -> the normalised tiles of :func:`~bloodlib.detection.scaled.field_tiles`, the
    field's colour statistics (:func:`~bloodlib.imaging.stain.field_colour_stats`) and how it was scaled: its RBC ``diameter`` (pixels) if given, else estimated
    (:func:`~bloodlib.imaging.scale.estimate_rbc_diameter`); a field without measurable cells is
    fitted into one tile (``source: "fallback"``)."""
    from bloodlib.imaging.scale import estimate_rbc_diameter
    from bloodlib.imaging.stain import field_colour_stats

    info: dict[str, Any] = {"source": "given", "cells": None, "spread": None}
    if diameter is None:
        estimate = estimate_rbc_diameter(rgb)
        diameter = estimate.diameter_px
        info = {"source": "estimated", "cells": estimate.cells, "spread": estimate.spread}
        if not np.isfinite(diameter) or diameter <= 0:
            diameter = spec.one_tile_diameter(rgb.shape[1], rgb.shape[0])
            info["source"] = "fallback"
    field_ = field_tiles(rgb, diameter, spec)
    tiles = (field_.tiles - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    field_.tiles = field_.tiles[:0]  # only the geometry travels with it
    info.update({"rbc_diameter_px": float(diameter), "factor": field_.factors[0], "tiles": len(tiles)})
    return {"tiles": tiles, "field": field_, "scale": info, "colour": field_colour_stats(rgb)}


class ScaledDetector(Detector):
    """The general detector (:mod:`bloodlib.detection.scaled`): every field rescaled to the canonical
    cell scale and tiled in the DataLoader workers; all tiles of a batch in one forward pass; each
    field's tile detections merged and mapped back to its pixels.

    ``diameter``: every field's RBC diameter in pixels when the user knows it (``--um-per-pixel``),
    None to estimate it per field.
    """

    def __init__(
        self, model: nn.Module, spec: ScaleSpec, precision: str = "float32", *, diameter: float | None = None
    ) -> None:
        super().__init__(model, precision)
        if diameter is not None and not diameter > 0:
            raise ValueError(f"diameter must be a positive number of pixels, got {diameter!r}")
        self.spec, self.diameter = spec, diameter

    @property
    def prepare(self) -> Any:
        return partial(scaled_input, spec=self.spec, mean=self.mean, std=self.std, diameter=self.diameter)

    def detect_items(self, items: Sequence[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
        tiles = torch.cat([item["input"]["tiles"] for item in items])
        size = (self.spec.tile, self.spec.tile)
        per_tile = self(tiles, [size] * len(tiles))
        out, start = [], 0
        for item in items:
            count = len(item["input"]["tiles"])
            out.append(item["input"]["field"].merge(per_tile[start : start + count], self.spec))
            start += count
        return out


class Classifier:
    """The WBC-subtype CNN with fused BatchNorm and the crop policy it was trained with
    (its inputs: :meth:`CropPolicy.classifier_inputs <bloodlib.classification.crops.CropPolicy.classifier_inputs>`)."""

    def __init__(self, model: nn.Module, policy: CropPolicy) -> None:
        self.model = fuse_conv_bn(model).to(memory_format=torch.channels_last)
        self.policy = policy

    @torch.inference_mode()
    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(N, 4)`` (order of :data:`bloodlib.classification.classes.CLASSES`)."""
        if len(inputs) == 0:
            return torch.zeros((0, len(SUBTYPE_CLASSES)))
        return torch.softmax(self.model(inputs.contiguous(memory_format=torch.channels_last)), dim=1)


class FieldDataset(Dataset):
    """Decodes and validates image files for :class:`Detector` (runs in DataLoader workers).

    Item ``i`` is a dict: ``index``, and either ``error`` (a message) or ``rgb`` (H, W, 3) uint8,
    ``input`` (3, h, w) float, ``width``/``height`` (the file's pixels), ``scale``, ``warnings``.
    """

    def __init__(self, paths: Sequence[Path], prepare: Any, *, max_side: int, min_side: int) -> None:
        self.paths, self.prepare = list(paths), prepare
        self.max_side, self.min_side = max_side, min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            image = load_image(self.paths[index], max_side=self.max_side, min_side=self.min_side)
            return {
                "index": index,
                "rgb": image.rgb,
                "input": self.prepare(image.rgb),
                "width": image.width,
                "height": image.height,
                "scale": image.scale,
                "warnings": image.warnings,
            }
        except ImageInputError as err:
            return {"index": index, "error": str(err)}
        except Exception as err:  # noqa: BLE001 -- whatever goes wrong with one file must not stop the batch
            return {"index": index, "error": f"unexpected error reading the image: {type(err).__name__}: {err}"}


def _keep_list(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch


def _worker_init(_: int) -> None:
    runtime.configure(threads=1)


def loader(
    paths: Sequence[Path], prepare: Any, *, batch_size: int, num_workers: int, max_side: int = 4000, min_side: int = 16
) -> DataLoader:
    """A DataLoader of :class:`FieldDataset` batches (lists of item dicts), in order."""
    dataset = FieldDataset(paths, prepare, max_side=max_side, min_side=min_side)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_keep_list,
        worker_init_fn=_worker_init if num_workers else None,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
    )


@dataclass
class FieldResult:
    """What the pipeline found on one image.

    Attributes:
        index: position in the list of paths given.
        error: why the image was not analysed (None if it was).
        warnings: changes made to the image before analysis.
        width, height: the file's size in pixels.
        boxes: ``(N, 4)`` float XYXY in the file's pixels, detections kept for counting.
        scores: ``(N,)`` detection scores.
        labels: ``(N,)`` int, ``1 + CLASSES.index`` (RBC, WBC, Platelets).
        subtype: ``(N,)`` int index into the classifier's classes for WBCs, -1 otherwise.
        subtype_prob: ``(N, 4)`` classifier probabilities for WBCs (zeros otherwise).
        rgb: the image as analysed (resized if it was too large); dropped after writing outputs.
        scale: ``rgb`` side / the file's side.
        cell_scale: how the general detector scaled the field (RBC diameter in ``rgb`` pixels, its
            source, the estimate's cells and spread, the factor, the tiles); None for the BCCD detector.
        colour: the field's colour statistics (general models only).
        flags: out-of-distribution flags (:func:`bloodlib.pipeline.ood.flag_field`), None if not checked.
    """

    index: int
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    width: int = 0
    height: int = 0
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    subtype: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    subtype_prob: np.ndarray = field(default_factory=lambda: np.zeros((0, len(SUBTYPE_CLASSES)), np.float32))
    rgb: np.ndarray | None = None
    scale: float = 1.0
    cell_scale: dict[str, Any] | None = None
    colour: dict[str, float] | None = None
    flags: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _analyse_batch(
    items: list[dict[str, Any]], detector: Detector, classifier: Classifier, thresholds: dict[str, float]
) -> list[FieldResult]:
    """Detection (one pass), count thresholds, and classification of all WBCs (one pass) of decoded items."""
    detections = detector.detect_items(items)
    kept = [{k: v.numpy() for k, v in above_threshold(det, thresholds).items()} for det in detections]
    owners = [np.flatnonzero(det["labels"] == WBC_LABEL) for det in kept]
    wbc_inputs = [
        classifier.policy.classifier_inputs(item["rgb"], det["boxes"][wbc])
        for item, det, wbc in zip(items, kept, owners)
    ]
    probs = classifier(torch.cat(wbc_inputs)).numpy()
    out, start = [], 0
    for item, det, wbc in zip(items, kept, owners):
        n = len(det["labels"])
        prob = np.zeros((n, len(SUBTYPE_CLASSES)), np.float32)
        prob[wbc] = probs[start : start + len(wbc)]
        start += len(wbc)
        subtype = np.full(n, -1, np.int64)
        subtype[wbc] = prob[wbc].argmax(axis=1)
        out.append(
            FieldResult(
                item["index"],
                warnings=item["warnings"],
                width=item["width"],
                height=item["height"],
                boxes=(det["boxes"] / item["scale"]).astype(np.float32),
                scores=det["scores"].astype(np.float32),
                labels=det["labels"].astype(np.int64),
                subtype=subtype,
                subtype_prob=prob,
                rgb=item["rgb"],
                scale=item["scale"],
                cell_scale=item["input"].get("scale") if isinstance(item["input"], dict) else None,
                colour=item["input"].get("colour") if isinstance(item["input"], dict) else None,
            )
        )
    return out


def run_fields(
    paths: Sequence[Path],
    detector: Detector,
    classifier: Classifier,
    thresholds: dict[str, float],
    *,
    batch_size: int,
    num_workers: int,
    max_side: int,
    min_side: int,
    progress: bool = False,
    desc: str = "images",
) -> Iterator[FieldResult]:
    """Detect, count-threshold and classify every image of ``paths``; one :class:`FieldResult` each, in order.

    Images that cannot be read give a result with ``error`` set; the rest of the batch goes on.
    """
    from tqdm.auto import tqdm

    batches = loader(
        paths, detector.prepare, batch_size=batch_size, num_workers=num_workers, max_side=max_side, min_side=min_side
    )
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for batch in batches:
            good = [item for item in batch if "error" not in item]
            results = {
                item["index"]: FieldResult(item["index"], error=item["error"]) for item in batch if "error" in item
            }
            if good:
                results.update((r.index, r) for r in _analyse_batch(good, detector, classifier, thresholds))
            for index in sorted(results):
                bar.update(1)
                yield results[index]


@torch.inference_mode()
def detect_paths(
    detector: Detector, paths: Sequence[Path], *, batch_size: int = 8, num_workers: int = 0, progress: bool = False
) -> list[dict[str, torch.Tensor]]:
    """Raw detections (every score above the SSD's own threshold) of readable images, in order
    (for choosing thresholds). Raises ValueError naming the first unreadable image."""
    out: list[dict[str, torch.Tensor]] = []
    for batch in loader(paths, detector.prepare, batch_size=batch_size, num_workers=num_workers, max_side=10**6):
        bad = [item for item in batch if "error" in item]
        if bad:
            raise ValueError(f"{paths[bad[0]['index']]}: {bad[0]['error']}")
        out += detector.detect_items(batch)
    return out


def run_fields_of(
    p: Any,
    paths: Sequence[Path],
    detector: Detector,
    classifier: Classifier,
    thresholds: dict[str, float],
    *,
    progress: bool = False,
    num_workers: int | None = None,
) -> Iterator[FieldResult]:
    """:func:`run_fields` with the batch size, decoding workers and image-size limits of the
    pipeline parameters ``p`` (:class:`~bloodlib.pipeline.params.PipelineParams`); ``num_workers``
    overrides ``p.num_workers``."""
    return run_fields(
        paths,
        detector,
        classifier,
        thresholds,
        batch_size=p.batch_size,
        num_workers=p.num_workers if num_workers is None else num_workers,
        max_side=p.max_side,
        min_side=p.min_side,
        progress=progress,
    )
