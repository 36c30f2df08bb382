"""On-the-fly augmentation (torchvision ``transforms.v2``) and the evaluation transform.

Both take a ``(3, Hc, Wc)`` uint8 canvas (:meth:`CropPolicy.canvas`) and return a
``(3, h, w)`` float tensor in ``[0, 1]`` (pixels / 255, as in the paper).

Training reproduces the paper's augmentation -- rotation, mirroring, random crop (here:
random shift and scale), shear -- and adds colour/stain jitter and blur so the classifier
does not learn one microscope's colours or focus: the external test set will come from
another lab.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torchvision.transforms import v2

from bloodlib.classification.crops import WHITE, centre_input


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each training augmentation (0 turns one off).

    Attributes:
        rotation: max rotation, degrees (cells have no orientation: up to 180).
        shear: max shear, degrees.
        translate: max shift as a fraction of the canvas side.
        scale: max relative zoom in or out.
        brightness, contrast, saturation: ColorJitter factors.
        hue: ColorJitter hue shift (fraction of the colour circle; stain differences).
        blur_p: probability of a Gaussian blur (focus differences).
    """

    rotation: float
    shear: float
    translate: float
    scale: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    blur_p: float


def train_transform(input_size: tuple[int, int], aug: AugmentConfig) -> v2.Compose:
    """Canvas -> augmented input: flips, affine (rotation/shear/shift/zoom, background fill),
    centre crop to ``input_size``, colour jitter, optional blur, pixels / 255."""
    steps: list = [
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomAffine(
            degrees=aug.rotation,
            translate=(aug.translate, aug.translate),
            scale=(1 - aug.scale, 1 + aug.scale),
            shear=aug.shear,
            interpolation=v2.InterpolationMode.BILINEAR,
            fill=WHITE,
        ),
        v2.CenterCrop(list(input_size)),
    ]
    if max(aug.brightness, aug.contrast, aug.saturation, aug.hue) > 0:
        steps.append(v2.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue))
    if aug.blur_p > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=aug.blur_p))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)


def eval_transform(input_size: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Canvas(es) -> input(s): :func:`~bloodlib.classification.crops.centre_input` at ``input_size``
    (centre crop, pixels / 255, no randomness), the crop every evaluation and the pipeline use."""
    return partial(centre_input, input_size=tuple(input_size))
