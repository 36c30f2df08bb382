"""The paper's unsupervised first try: WBC boxes from an HSV colour threshold (OpenCV).

Stained WBC nuclei are the only strongly saturated purple-blue objects in a BCCD smear::

    RGB -> HSV -> inRange(hue, saturation, value) -> opening (drop specks)
    -> closing (merge the lobes of one nucleus) -> external contours -> area filter
    -> bounding box scaled by ``box_scale`` about its centre (nucleus -> whole cell), clipped

Each box's score is its contour area over the largest kept area in the image (1 for the
largest), so AP ranks big nuclei first. Overlapping or touching WBCs merge into one box:
the failure the paper saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from bloodlib.detection.data import CLASSES, Annotation, read_image

WBC_LABEL = CLASSES.index("WBC") + 1


@dataclass(frozen=True)
class HSVThresholds:
    """OpenCV HSV ranges (hue 0..179, saturation and value 0..255) and the morphology."""

    hue_low: int
    hue_high: int
    sat_low: int
    val_low: int
    val_high: int
    open_kernel: int
    close_kernel: int
    min_area: int
    box_scale: float

    def __post_init__(self) -> None:
        if not 0 <= self.hue_low <= self.hue_high <= 179:
            raise ValueError(f"need 0 <= hue_low <= hue_high <= 179, got {self.hue_low}, {self.hue_high}")
        if not 0 <= self.sat_low <= 255 or not 0 <= self.val_low <= self.val_high <= 255:
            raise ValueError(f"saturation/value thresholds out of 0..255: {self}")
        if self.open_kernel < 1 or self.close_kernel < 1 or self.min_area < 0 or self.box_scale <= 0:
            raise ValueError(f"kernels must be >= 1, min_area >= 0, box_scale > 0: {self}")


def wbc_mask(image_rgb: np.ndarray, t: HSVThresholds) -> np.ndarray:
    """``(H, W)`` uint8 mask (0/255) of nucleus-coloured pixels after opening and closing."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image_rgb.shape} {image_rgb.dtype}")
    hsv = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2HSV)
    mask = cv2.inRange(hsv, (t.hue_low, t.sat_low, t.val_low), (t.hue_high, 255, t.val_high))
    opened = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (t.open_kernel,) * 2))
    return cv2.morphologyEx(
        opened, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (t.close_kernel,) * 2)
    )


def detect_wbc(image_rgb: np.ndarray, t: HSVThresholds) -> dict[str, torch.Tensor]:
    """WBC detections in torchvision's format (``boxes`` (N, 4) XYXY pixels, ``scores``, ``labels``)."""
    height, width = image_rgb.shape[:2]
    contours, _ = cv2.findContours(wbc_mask(image_rgb, t), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    found = [(cv2.contourArea(c), cv2.boundingRect(c)) for c in contours]
    found = [(area, rect) for area, rect in found if area >= t.min_area]
    boxes, areas = [], []
    for area, (x, y, w, h) in found:
        cx, cy, half_w, half_h = x + w / 2, y + h / 2, w * t.box_scale / 2, h * t.box_scale / 2
        boxes.append((max(0.0, cx - half_w), max(0.0, cy - half_h), min(width, cx + half_w), min(height, cy + half_h)))
        areas.append(area)
    scores = np.asarray(areas, dtype=np.float32) / max(areas) if areas else np.zeros(0, np.float32)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.from_numpy(scores),
        "labels": torch.full((len(boxes),), WBC_LABEL, dtype=torch.int64),
    }


def detect_all(annotations: list[Annotation], t: HSVThresholds) -> list[dict[str, torch.Tensor]]:
    """:func:`detect_wbc` on each annotation's image."""
    return [detect_wbc(read_image(a.image_path).permute(1, 2, 0).numpy(), t) for a in annotations]
