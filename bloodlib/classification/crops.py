"""From a smear image and a WBC box to the classifier's input: the one crop policy.

Every image the classifiers see -- dataset2 training copies, the official TEST images,
BCCD ground-truth boxes, and (later) the smear pipeline's detected boxes -- goes through
:meth:`CropPolicy.canvas`:

1. *white balance*: each RGB channel is scaled so that its ``white_percentile`` (the
   bright slide background) maps to :data:`WHITE`; this removes the lamp/camera colour
   cast of a microscope before anything else sees the pixels;
2. a window centred on the box, ``context`` times the box's longer side high, with the
   input's aspect ratio (so a cell fills the same fraction of every input, whatever the
   magnification); boxes smaller than ``min_side`` pixels are treated as ``min_side``;
3. parts of the window outside the image are padded with the neutral :data:`WHITE`
   background (never black: black borders are an artefact a network can learn);
4. an area-averaging resize to ``canvas_scale`` times the input size. The canvas is the
   input plus a margin that training augmentation rotates and shifts into view; the
   classifier input is its centre, pixels / 255 (:func:`centre_input`).

Training and evaluation crop whole image sets into canvases (:meth:`CropPolicy.canvas`, one
box per image, cached by :mod:`.canvases`); evaluation and the smear pipeline take the centre
with :func:`centre_input`; the pipeline crops all WBC boxes of one image at once with
:meth:`CropPolicy.classifier_inputs` (one white balance per image). All of them go through
:meth:`CropPolicy.canvases`, so a detected box and an annotated one give the same input.

Images without a box (dataset2 copies, whole-field images of another lab) get one from
:func:`locate_wbc`, a colour rule that finds the largest purple (nucleus) blob.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from bloodlib.imaging.stain import StainReference, normalize

WHITE = 235  # background grey level after white balance (uint8)


def read_rgb(path: str | Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB image from ``path``."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _check_image(image: np.ndarray) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got {getattr(image, 'shape', type(image))}")


def white_balance(image: np.ndarray, percentile: float) -> np.ndarray:
    """Scale each channel so its ``percentile`` maps to :data:`WHITE`; ``(H, W, 3)`` uint8 -> same."""
    _check_image(image)
    if not 50.0 <= percentile <= 100.0:
        raise ValueError(f"white_percentile must be in [50, 100], got {percentile}")
    sample = image[::4, ::4].reshape(-1, 3)
    level = np.percentile(sample, percentile, axis=0).clip(min=32.0)
    lut = np.clip(np.arange(256)[:, None] * (WHITE / level)[None, :], 0, 255).astype(np.uint8)
    return np.stack([lut[image[..., c], c] for c in range(3)], axis=-1)


def locate_wbc(image: np.ndarray, *, nucleus_to_cell: float = 1.3) -> tuple[float, float, float, float] | None:
    """Box ``(x0, y0, x1, y1)`` of the white blood cell in a smear image, or None if none is found.

    The nucleus is where blue exceeds green most (purple/violet stain): Otsu threshold on
    ``B - G`` (at least 40 grey levels), blobs within ~1/24 of the image apart merged (the
    lobes of one nucleus), the largest nucleus area wins. The nucleus box is then grown about
    its centre by ``nucleus_to_cell`` to approximate the cell box (the ratio of BCCD's WBC box
    side to this nucleus box side has median 1.28 on the BCCD images of TRAIN's sources at
    dataset2's 320x240; the notebook recomputes it).
    """
    _check_image(image)
    score = np.clip(image[..., 2].astype(np.int16) - image[..., 1].astype(np.int16), 0, 255).astype(np.uint8)
    score = cv2.GaussianBlur(score, (5, 5), 0)
    otsu, _ = cv2.threshold(score, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = (score > max(otsu, 40.0)).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    reach = max(3, round(min(image.shape[:2]) / 24))
    merged = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (reach, reach)))
    count, labels = cv2.connectedComponents(merged)
    if count <= 1:
        return None
    areas = np.bincount(labels[mask > 0], minlength=count)
    areas[0] = 0
    ys, xs = np.nonzero((labels == int(areas.argmax())) & (mask > 0))
    cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
    half_w = (xs.max() + 1 - xs.min()) * nucleus_to_cell / 2
    half_h = (ys.max() + 1 - ys.min()) * nucleus_to_cell / 2
    return (float(cx - half_w), float(cy - half_h), float(cx + half_w), float(cy + half_h))


def crop_window(
    image: np.ndarray,
    box: tuple[float, float, float, float],
    *,
    out_size: tuple[int, int],
    context: float,
    min_side: float,
) -> np.ndarray:
    """The window of step 2-4 of the module docstring, resized to ``out_size = (h, w)``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB, already white-balanced.
        box: ``(x0, y0, x1, y1)`` in pixels; may extend beyond the image.
        out_size: output ``(h, w)``; the window has this aspect ratio.
        context: window height / box's longer side.
        min_side: boxes whose longer side is below this (pixels) are grown to it.

    Returns:
        ``(h, w, 3)`` uint8.

    Raises:
        ValueError: a degenerate box (x1 <= x0 or y1 <= y0) or one entirely outside the image.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    height, width = image.shape[:2]
    if not (x1 > x0 and y1 > y0) or not all(np.isfinite([x0, y0, x1, y1])):
        raise ValueError(f"box {box!r} is degenerate; expected x0 < x1 and y0 < y1")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise ValueError(f"box {box!r} lies outside the {width}x{height} image")
    out_h, out_w = out_size
    side = max(x1 - x0, y1 - y0, min_side)
    win_h = max(1, round(side * context))
    win_w = max(1, round(win_h * out_w / out_h))
    left = round((x0 + x1) / 2 - win_w / 2)
    top = round((y0 + y1) / 2 - win_h / 2)
    pad = (max(0, -top), max(0, top + win_h - height), max(0, -left), max(0, left + win_w - width))
    if any(pad):
        image = cv2.copyMakeBorder(image, *pad, cv2.BORDER_CONSTANT, value=(WHITE, WHITE, WHITE))
        top, left = top + pad[0], left + pad[2]
    window = image[top : top + win_h, left : left + win_w]
    shrinking = win_h > out_h
    return cv2.resize(window, (out_w, out_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


@dataclass(frozen=True)
class CropPolicy:
    """How a WBC box becomes a classifier input (see the module docstring).

    Attributes:
        input_size: classifier input ``(h, w)``.
        context: window height / box's longer side.
        canvas_scale: canvas side / input side (margin for rotation and shifts), >= 1.
        min_side: smallest box side in pixels (tiny boxes are grown to it).
        white_percentile: per-channel percentile mapped to the background level.
        nucleus_to_cell: cell box / nucleus box, for :func:`locate_wbc`.
        stain: colours every canvas is mapped to (:func:`bloodlib.imaging.stain.normalize`, per
            canvas: a WBC with the red cells around it shows both stains); None = no normalisation.
    """

    input_size: tuple[int, int]
    context: float
    canvas_scale: float
    min_side: float
    white_percentile: float
    nucleus_to_cell: float
    stain: StainReference | None = None

    def __post_init__(self) -> None:
        if len(self.input_size) != 2 or min(self.input_size) < 8:
            raise ValueError(f"input_size must be (h, w) with both >= 8, got {self.input_size!r}")
        if self.context <= 0 or self.canvas_scale < 1 or self.min_side <= 0:
            raise ValueError(
                f"need context > 0, canvas_scale >= 1, min_side > 0; got {self.context}, "
                f"{self.canvas_scale}, {self.min_side}"
            )

    @property
    def canvas_size(self) -> tuple[int, int]:
        h, w = self.input_size
        return round(h * self.canvas_scale), round(w * self.canvas_scale)

    def canvases(self, image: np.ndarray, boxes: np.ndarray | Sequence[Sequence[float]]) -> torch.Tensor:
        """``(N, 3, Hc, Wc)`` uint8 canvases of ``boxes`` ``(N, 4)`` (``x0, y0, x1, y1`` pixels) in ``image``
        (``(H, W, 3)`` uint8 RGB), white-balanced once for all boxes."""
        _check_image(image)
        if len(boxes) == 0:
            return torch.zeros((0, 3, *self.canvas_size), dtype=torch.uint8)
        return self._crop(white_balance(image, self.white_percentile), boxes)

    def canvas(self, image: np.ndarray, box: tuple[float, float, float, float] | None = None) -> torch.Tensor:
        """``(3, Hc, Wc)`` uint8 canvas of one ``box`` in ``image`` (``(H, W, 3)`` uint8 RGB).

        ``box=None`` locates the WBC with :func:`locate_wbc`; if none is found the whole image
        is used (centre, longer side).
        """
        balanced = white_balance(image, self.white_percentile)
        if box is None:
            box = locate_wbc(balanced, nucleus_to_cell=self.nucleus_to_cell)
        if box is None:
            h, w = image.shape[:2]
            box = (0.0, 0.0, float(w), float(h))
        return self._crop(balanced, [box])[0]

    def classifier_inputs(self, image: np.ndarray, boxes: np.ndarray | Sequence[Sequence[float]]) -> torch.Tensor:
        """``(N, 3, h, w)`` float classifier inputs in ``[0, 1]`` of ``boxes`` ``(N, 4)`` in ``image``:
        :func:`centre_input` of :meth:`canvases`. What the smear pipeline calls with its detected WBCs."""
        return centre_input(self.canvases(image, boxes), self.input_size)

    def _crop(self, balanced: np.ndarray, boxes: np.ndarray | Sequence[Sequence[float]]) -> torch.Tensor:
        """``(N, 3, Hc, Wc)`` uint8 windows of ``boxes`` in a white-balanced image."""
        windows = [
            crop_window(
                balanced,
                tuple(float(v) for v in box),
                out_size=self.canvas_size,
                context=self.context * self.canvas_scale,
                min_side=self.min_side,
            )
            for box in boxes
        ]
        canvases = torch.from_numpy(np.stack(windows)).permute(0, 3, 1, 2).contiguous()
        return canvases if self.stain is None else stain_normalized(canvases, self.stain)


def stain_normalized(canvases: torch.Tensor, reference: StainReference) -> torch.Tensor:
    """``(N, 3, Hc, Wc)`` uint8 canvases with each one's colours mapped to ``reference``
    (:func:`bloodlib.imaging.stain.normalize`); what :class:`CropPolicy` with ``stain`` gives."""
    out = [normalize(c.permute(1, 2, 0).numpy(), reference) for c in canvases]
    if not out:
        return canvases.clone()
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def centre_input(canvases: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
    """Canvases -> classifier inputs: the centre ``input_size`` crop, pixels / 255 (no randomness).

    Args:
        canvases: ``(..., 3, Hc, Wc)`` uint8, ``Hc >= h`` and ``Wc >= w``.
        input_size: ``(h, w)``.

    Returns:
        ``(..., 3, h, w)`` float32 in ``[0, 1]``; the crop's offset rounds as torchvision's ``CenterCrop``.
    """
    h, w = input_size
    canvas_h, canvas_w = canvases.shape[-2:]
    if canvases.dtype != torch.uint8 or canvas_h < h or canvas_w < w:
        raise ValueError(f"canvases must be uint8 and at least {h}x{w}, got {canvases.dtype} {canvas_h}x{canvas_w}")
    top, left = round((canvas_h - h) / 2.0), round((canvas_w - w) / 2.0)
    return canvases[..., top : top + h, left : left + w].float().mul_(1.0 / 255)
