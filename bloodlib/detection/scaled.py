"""Detection at a canonical cell scale: any magnification, any field size.

The paper's detectors (Table 2) squeeze every 640x480 BCCD field to 300x300, so they only work at
BCCD's magnification. The general detector instead sees every field rescaled so that its red
cells are ``rbc_diameter`` pixels across, cut into ``tile`` x ``tile`` pieces that overlap by
``overlap`` pixels (at least a WBC's size, so every cell is whole in one tile):

- training: each image is rescaled by ``rbc_diameter / d`` where ``d`` is the median size of its
  labelled RBCs, times a random factor within ``+-scale_jitter`` (so a scale estimate that is off
  by that much does not matter), then a random tile is cut (padded where the field is smaller)
  and flipped and colour-jittered;
- inference (:func:`predict_scaled`): the field is rescaled by ``rbc_diameter / d`` for the
  estimated (or user-given) RBC diameter ``d``, tiled, each tile detected, the tiles' boxes merged
  (:func:`bloodlib.imaging.tiling.merge_tiles`: each tile owns a core region, then class-wise NMS)
  and mapped back to the field's pixels. A field that exceeds one tile by at most ``fit_slack``
  is shrunk into one tile instead (a scale change well inside the jitter trained for).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from bloodlib.detection.data import CLASSES, Annotation, read_image
from bloodlib.detection.engine import DetectionTask
from bloodlib.detection.metrics import Prediction, average_precision
from bloodlib.detection.model import IMAGENET_MEAN
from bloodlib.imaging.tiling import merge_tiles, tile_batch, tile_origins

RBC_LABEL = 1 + CLASSES.index("RBC")
PAD_FILL = [round(255 * m) for m in IMAGENET_MEAN]  # what padding shows, in training and inference alike


@dataclass(frozen=True)
class ScaleSpec:
    """The detector's input geometry.

    Attributes:
        rbc_diameter: red-cell diameter (pixels) the detector is trained and run at.
        tile: side of the square tiles (the SSD's input size).
        overlap: overlap of neighbouring tiles, pixels (>= the largest cell).
        fit_slack: a rescaled field up to ``tile * (1 + fit_slack)`` per side is shrunk into one tile.
    """

    rbc_diameter: float = 45.0
    tile: int = 300
    overlap: int = 112
    fit_slack: float = 0.15

    def __post_init__(self) -> None:
        if not self.rbc_diameter > 0 or self.tile < 32 or not 0 <= self.overlap < self.tile or self.fit_slack < 0:
            raise ValueError(f"need rbc_diameter > 0, tile >= 32, 0 <= overlap < tile, fit_slack >= 0: {self}")

    def one_tile_diameter(self, width: int, height: int) -> float:
        """The RBC diameter that makes a ``width`` x ``height`` field fit one tile: what a field whose
        RBCs cannot be measured is treated as having."""
        return self.rbc_diameter * max(width, height) / self.tile

    def field_scale(self, width: int, height: int, diameter: float) -> float:
        """The factor a ``width`` x ``height`` field with RBCs ``diameter`` pixels across is resized by."""
        if not diameter > 0 or not math.isfinite(diameter):
            raise ValueError(f"RBC diameter must be a positive number of pixels, got {diameter!r}")
        scale = self.rbc_diameter / diameter
        longest = max(width, height) * scale
        if self.tile < longest <= self.tile * (1 + self.fit_slack):
            scale *= self.tile / longest
        return scale


def label_rbc_diameter(annotation: Annotation) -> float:
    """Median size (sqrt of box area) of an image's labelled RBCs, leaving out boxes cut by the image
    border when at least three are whole (:func:`bloodlib.imaging.scale.box_diameter`); NaN without RBCs."""
    from bloodlib.imaging.scale import box_diameter

    rbc = annotation.boxes[annotation.labels == RBC_LABEL]
    return box_diameter(rbc, width=annotation.width, height=annotation.height)


def field_diameter(annotation: Annotation) -> float:
    """The RBC diameter of a labelled field: :func:`label_rbc_diameter`, or the classical estimate
    (:func:`bloodlib.imaging.scale.estimate_rbc_diameter`) where no RBC is labelled."""
    from bloodlib.imaging.scale import estimate_rbc_diameter

    diameter = label_rbc_diameter(annotation)
    if math.isnan(diameter):
        diameter = estimate_rbc_diameter(read_image(annotation.image_path).permute(1, 2, 0).numpy()).diameter_px
    return diameter


class ScaledDetection(Dataset):
    """Training tiles at the canonical scale: ``(image float (3, tile, tile) in [0, 1], target)``.

    Args:
        annotations: images with complete boxes.
        diameters: each image's RBC diameter in pixels (e.g. :func:`label_rbc_diameter`).
        spec: the input geometry.
        scale_jitter: each draw is rescaled by a further random factor in ``[1 - j, 1 + j]`` (log-uniform).
        hflip_p, vflip_p: flip probabilities.
        colour_p: probability of a colour/stain jitter (brightness, contrast, saturation, hue).
        hue: the jitter's hue range (stain colour differs between labs).
    """

    def __init__(
        self,
        annotations: Sequence[Annotation],
        diameters: Sequence[float],
        *,
        spec: ScaleSpec,
        scale_jitter: float,
        hflip_p: float = 0.5,
        vflip_p: float = 0.5,
        colour_p: float = 0.8,
        hue: float = 0.05,
    ) -> None:
        if len(annotations) != len(diameters):
            raise ValueError(f"{len(annotations)} annotations but {len(diameters)} diameters")
        bad = [a.image_id for a, d in zip(annotations, diameters) if not d > 0]
        if bad:
            raise ValueError(f"images without a usable RBC diameter: {bad[:5]}")
        if not 0 <= scale_jitter < 1:
            raise ValueError(f"scale_jitter must be in [0, 1), got {scale_jitter}")
        self.annotations, self.diameters = list(annotations), [float(d) for d in diameters]
        self.spec, self.scale_jitter = spec, scale_jitter
        jitter = v2.ColorJitter(brightness=0.2, contrast=0.3, saturation=0.4, hue=hue)
        self.transforms = v2.Compose(
            [
                v2.RandomCrop(spec.tile, pad_if_needed=True, fill=PAD_FILL),
                v2.RandomHorizontalFlip(hflip_p),
                v2.RandomVerticalFlip(vflip_p),
                v2.RandomApply([jitter], p=colour_p),
                v2.SanitizeBoundingBoxes(min_size=2.0),
                v2.ToDtype(torch.float32, scale=True),
            ]
        )
        self._images: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: int):
        a = self.annotations[index]
        if index not in self._images:
            self._images[index] = read_image(a.image_path)
        low, high = math.log(1 - self.scale_jitter), math.log(1 + self.scale_jitter)
        factor = self.spec.rbc_diameter / self.diameters[index] * math.exp(low + (high - low) * float(torch.rand(())))
        size = [max(1, round(a.height * factor)), max(1, round(a.width * factor))]
        image = TF.resize(tv_tensors.Image(self._images[index]), size, antialias=True)
        boxes = tv_tensors.BoundingBoxes(
            torch.from_numpy(a.boxes.copy()) * factor, format="XYXY", canvas_size=tuple(size)
        )
        target = {"boxes": boxes, "labels": torch.from_numpy(a.labels.copy()), "image_id": a.image_id}
        return self.transforms(image, target)


@dataclass
class FieldTiles:
    """A field rescaled to the canonical scale and cut into tiles.

    Attributes:
        tiles: ``(T, 3, tile, tile)`` float in [0, 1], padded with :data:`PAD_FILL` past the field.
        origins: each tile's top-left corner ``(x, y)`` in the rescaled field.
        size: ``(width, height)`` of the rescaled field.
        factors: ``(x, y)`` rescaled / original pixels.
    """

    tiles: torch.Tensor
    origins: list[tuple[int, int]]
    size: tuple[int, int]
    factors: tuple[float, float]

    def merge(self, per_tile: Sequence[Prediction], spec: ScaleSpec) -> Prediction:
        """One tile's detections each (tile pixels) -> the field's, in the original field's pixels."""
        merged = merge_tiles(per_tile, self.origins, spec.tile, spec.overlap, self.size)
        boxes = merged["boxes"] / torch.tensor([*self.factors, *self.factors], dtype=merged["boxes"].dtype)
        return {"boxes": boxes, "scores": merged["scores"], "labels": merged["labels"]}


def field_tiles(rgb: np.ndarray, diameter: float, spec: ScaleSpec) -> FieldTiles:
    """Rescale an ``(H, W, 3)`` uint8 RGB field whose RBCs are ``diameter`` pixels across to the
    canonical scale (area interpolation when shrinking, bilinear when enlarging) and tile it."""
    import cv2

    height, width = rgb.shape[:2]
    scale = spec.field_scale(width, height, diameter)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    shrinking = size[0] < width
    resized = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    image = torch.from_numpy(resized).permute(2, 0, 1).float().div_(255)
    origins = tile_origins(size[0], size[1], spec.tile, spec.overlap)
    tiles = tile_batch(image, origins, spec.tile, fill=[v / 255 for v in PAD_FILL])
    return FieldTiles(tiles, origins, size, (size[0] / width, size[1] / height))


@torch.no_grad()
def predict_scaled(
    model: torch.nn.Module, image: torch.Tensor, diameter: float, *, spec: ScaleSpec, batch_size: int = 8
) -> Prediction:
    """Detections of one field at the canonical scale, in the field's own pixels.

    Args:
        model: an SSD trained on :class:`ScaledDetection` tiles (eval mode is set here).
        image: ``(3, H, W)`` uint8.
        diameter: the field's RBC diameter in pixels (estimated, labelled or from the magnification).

    Returns:
        ``boxes`` (N, 4) XYXY in the field's pixels, ``scores`` (N,), ``labels`` (N,).
    """
    model.eval()
    field = field_tiles(image.permute(1, 2, 0).numpy(), diameter, spec)
    device = next(model.parameters()).device
    per_tile = []
    for start in range(0, len(field.tiles), batch_size):
        batch = list(field.tiles[start : start + batch_size].to(device))
        per_tile += [{k: v.detach().cpu() for k, v in d.items()} for d in model(batch)]
    return field.merge(per_tile, spec)


class ScaledDetectionTask(DetectionTask):
    """Training on :class:`ScaledDetection` tiles, validated by mAP@0.5 of whole validation fields
    predicted at the canonical scale (their labelled RBC diameter) with :func:`predict_scaled`."""

    def __init__(
        self,
        train_set: ScaledDetection,
        val_annotations: Sequence[Annotation],
        *,
        batch_size: int,
        num_workers: int = 0,
    ) -> None:
        super().__init__(train_set, val_annotations, batch_size=batch_size, num_workers=num_workers)
        self.spec = train_set.spec
        self.val_diameters = [field_diameter(a) for a in self.val_annotations]

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        if not self.val_annotations:
            return {}
        preds = predict_fields(model, self.val_annotations, self.val_diameters, spec=self.spec)
        return average_precision(preds, self.val_annotations)


def predict_fields(
    model: torch.nn.Module,
    annotations: Sequence[Annotation],
    diameters: Sequence[float],
    *,
    spec: ScaleSpec,
    progress: bool = False,
    desc: str = "predict",
) -> list[Prediction]:
    """:func:`predict_scaled` of each annotation's image at its RBC ``diameters`` (pixels)."""
    from tqdm.auto import tqdm

    items = tqdm(list(zip(annotations, diameters)), desc=desc, leave=False, disable=not progress)
    return [predict_scaled(model, read_image(a.image_path), d, spec=spec) for a, d in items]
