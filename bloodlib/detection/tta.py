"""Test-time augmentation for the detectors: predict on flipped copies and fuse the views.

A smear field has no up, down, left or right, so a detector should find the same cells in
a mirrored image. :func:`predict_tta` runs the model on up to four flips of each image
(identity, horizontal, vertical, both), maps the boxes back onto the original image and
fuses the views with :func:`fuse_views`: torchvision's class-wise NMS picks one box per cell,
the box becomes the score-weighted mean of the same-class boxes overlapping it (IoU >= ``iou``,
any view; each box joins only the kept box that suppressed it), and its score the mean over
views of each view's best such score -- a cell that only one of four views finds keeps a
quarter of its score. Training is untouched; only the
predictions change (four forward passes per image).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torchvision.ops import batched_nms, box_iou
from tqdm.auto import tqdm

from bloodlib.detection.data import Annotation, float_image
from bloodlib.detection.engine import predict
from bloodlib.detection.metrics import Prediction
from bloodlib.progress import phase

if TYPE_CHECKING:
    from bloodlib.training import TrainedModel

#: ``(horizontal, vertical)`` flips in the order views are added: 1 = none, 2 = + horizontal, 4 = all.
FLIPS: tuple[tuple[bool, bool], ...] = ((False, False), (True, False), (False, True), (True, True))


def flip_image(image: torch.Tensor, horizontal: bool, vertical: bool) -> torch.Tensor:
    """``image`` (..., H, W) mirrored left-right and/or top-bottom."""
    dims = [d for d, on in ((-1, horizontal), (-2, vertical)) if on]
    return image.flip(dims) if dims else image


def unflip_boxes(boxes: torch.Tensor, width: int, height: int, horizontal: bool, vertical: bool) -> torch.Tensor:
    """Boxes (N, 4) ``x1, y1, x2, y2`` found on a flipped ``width`` x ``height`` image, in the original's pixels."""
    out = boxes.clone()
    if horizontal:
        out[:, [0, 2]] = width - boxes[:, [2, 0]]
    if vertical:
        out[:, [1, 3]] = height - boxes[:, [3, 1]]
    return out


def fuse_views(views: Sequence[Prediction], *, iou: float) -> Prediction:
    """One prediction from several views of the same image (boxes already in its pixels).

    Each view is a dict with ``boxes`` (N_v, 4), ``scores`` (N_v,) and ``labels`` (N_v,).
    Returns the same keys with K fused detections, sorted by falling score.

    Raises:
        ValueError: no views, or ``iou`` outside (0, 1].
    """
    if not views:
        raise ValueError("fuse_views needs at least one view")
    if not 0 < iou <= 1:
        raise ValueError(f"iou must be in (0, 1], got {iou}")
    boxes = torch.cat([v["boxes"].float() for v in views])
    scores = torch.cat([v["scores"].float() for v in views])
    labels = torch.cat([v["labels"] for v in views])
    view_of = torch.cat([torch.full((len(v["labels"]),), k, dtype=torch.long) for k, v in enumerate(views)])
    keep = batched_nms(boxes, scores, labels, iou)  # by falling score
    if not len(keep):
        return {"boxes": boxes, "scores": scores, "labels": labels}
    overlaps = (labels[keep, None] == labels[None, :]) & (box_iou(boxes[keep], boxes) >= iou)  # (K, N)
    # each box joins the first (highest-scoring) kept box it overlaps: the one that suppressed it
    first = overlaps.float().argmax(0)
    members = torch.zeros_like(overlaps)
    members[first, torch.arange(len(boxes))] = overlaps.any(0)
    weights = members.float() * scores[None, :]
    box_weights = members.float() * scores.clamp_min(1e-6)[None, :]  # a cluster of zero scores still has a box
    fused = box_weights @ boxes / box_weights.sum(1, keepdim=True)
    per_view = torch.zeros(len(keep), len(views))  # best member score in each view
    for k in range(len(views)):
        in_view = weights[:, view_of == k]
        if in_view.shape[1]:
            per_view[:, k] = in_view.amax(1)
    fused_scores = per_view.mean(1)
    order = fused_scores.argsort(descending=True)
    return {"boxes": fused[order], "scores": fused_scores[order], "labels": labels[keep][order]}


@phase("evaluation")
def flip_views(
    model: torch.nn.Module,
    images: Sequence[torch.Tensor] | Sequence[Annotation],
    *,
    views: int,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "predict",
) -> list[list[Prediction]]:
    """Per image, the detections of each of the first ``views`` of :data:`FLIPS`, boxes mapped back
    onto the image's pixels (what :func:`fuse_views` fuses).

    Raises:
        ValueError: ``views`` is not 1, 2 or 4.
    """
    if views not in (1, 2, 4):
        raise ValueError(f"views must be 1, 2 or 4 (flips of the image), got {views}")
    out: list[list[Prediction]] = []
    for start in tqdm(
        range(0, len(images), batch_size), desc=f"{desc} ({views} views)", leave=False, disable=not progress
    ):
        batch = [float_image(x) for x in images[start : start + batch_size]]
        per_flip = [
            predict(model, [flip_image(x, h, v) for x in batch], batch_size=batch_size) for h, v in FLIPS[:views]
        ]
        for i, image in enumerate(batch):
            height, width = image.shape[-2:]
            out.append(
                [
                    {**p[i], "boxes": unflip_boxes(p[i]["boxes"], width, height, h, v)}
                    for p, (h, v) in zip(per_flip, FLIPS[:views], strict=True)
                ]
            )
    return out


def view_predictions(
    model: torch.nn.Module | TrainedModel,
    annotations: Sequence[Annotation],
    *,
    views: int,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "predict",
) -> list[list[Prediction]]:
    """:func:`flip_views` of the fields ``annotations``; a trained model's come from the model cache when
    it holds them (:mod:`~bloodlib.detection.cached`)."""
    from bloodlib.detection.cached import cached_detections

    def compute(network: torch.nn.Module) -> list[list[Prediction]]:
        return flip_views(network, annotations, views=views, batch_size=batch_size, progress=progress, desc=desc)

    return cached_detections(model, "flip_views", annotations, {"batch_size": batch_size}, compute, views=views)


def fused(per_image: Sequence[Sequence[Prediction]], *, views: int, iou: float) -> list[Prediction]:
    """Each image's first ``views`` views fused at ``iou`` (:func:`fuse_views`); one view is the
    plain prediction."""
    if views == 1:
        return [v[0] for v in per_image]
    return [fuse_views(list(v[:views]), iou=iou) for v in per_image]


def predict_tta(
    model: torch.nn.Module,
    images: Sequence[torch.Tensor] | Sequence[Annotation],
    *,
    views: int,
    iou: float,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "predict",
) -> list[Prediction]:
    """Detections for each image, fused over the first ``views`` of :data:`FLIPS` (1 = plain :func:`predict`).

    ``images`` are float ``(3, H, W)`` tensors in [0, 1] or annotations (read from disk); returns
    torchvision-style dicts with boxes in each image's pixels.

    Raises:
        ValueError: ``views`` is not 1, 2 or 4.
    """
    if views not in (1, 2, 4):
        raise ValueError(f"views must be 1, 2 or 4 (flips of the image), got {views}")
    if views == 1:
        return predict(model, images, batch_size=batch_size, progress=progress, desc=desc)
    per_image = flip_views(model, images, views=views, batch_size=batch_size, progress=progress, desc=desc)
    return fused(per_image, views=views, iou=iou)
