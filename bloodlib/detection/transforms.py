"""Box-aware augmentation with ``torchvision.transforms.v2`` (SSD's recipe) and the eval transform.

Training (each step with its own probability, 0 switches it off)::

    zoom out (expand onto an ImageNet-mean canvas, up to ``zoom_out_max`` x)
    -> IoU crop (SSD's min-IoU patch sampling) -> horizontal / vertical flips
    -> resize to 300x300 -> photometric distortion (brightness, contrast, saturation, a small hue
    shift; no channel swaps) -> drop boxes that left the image
    -> float in [0, 1]

Evaluation: float in [0, 1] only; the SSD itself resizes to 300x300, normalises with
ImageNet's mean/std and maps its boxes back to the original pixels, so predictions and
ground truth are compared at the original 640x480.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from bloodlib.detection.model import IMAGE_SIZE, IMAGENET_MEAN


def _check_p(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    return p


def train_transforms(
    *,
    photometric_p: float,
    zoom_out_p: float,
    zoom_out_max: float,
    iou_crop_p: float,
    hflip_p: float,
    vflip_p: float,
    size: int = IMAGE_SIZE,
) -> v2.Compose:
    """SSD-style augmentation of ``(image uint8 (3, H, W), target)``, ending at (3, size, size) float."""
    for name, p in (
        ("photometric_p", photometric_p),
        ("zoom_out_p", zoom_out_p),
        ("iou_crop_p", iou_crop_p),
        ("hflip_p", hflip_p),
        ("vflip_p", vflip_p),
    ):
        _check_p(name, p)
    if zoom_out_max < 1.0:
        raise ValueError(f"zoom_out_max must be >= 1, got {zoom_out_max}")
    fill = [round(255 * m) for m in IMAGENET_MEAN]
    steps: list[v2.Transform] = []
    if zoom_out_p > 0 and zoom_out_max > 1.0:
        steps.append(v2.RandomZoomOut(fill=fill, side_range=(1.0, zoom_out_max), p=zoom_out_p))
    if iou_crop_p > 0:
        steps += [v2.RandomApply([v2.RandomIoUCrop()], p=iou_crop_p)]
    steps += [
        v2.RandomHorizontalFlip(hflip_p),
        v2.RandomVerticalFlip(vflip_p),
        v2.Resize((size, size), antialias=True),
    ]
    if photometric_p > 0:
        # SSD's photometric distortion without its channel permutation: stain colour is what tells a
        # pink RBC from a purple WBC nucleus or platelet, so channels are never swapped and hue moves little.
        jitter = v2.ColorJitter(brightness=0.125, contrast=0.5, saturation=0.5, hue=0.03)
        steps.append(v2.RandomApply([jitter], p=photometric_p))
    steps += [v2.SanitizeBoundingBoxes(min_size=1.0), v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(steps)


def eval_transforms() -> v2.Compose:
    """uint8 -> float in [0, 1]; geometry untouched (the SSD resizes internally)."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True)])
