"""SSD300 assembled from torchvision's ``SSD``, ``DefaultBoxGenerator`` and ``SSDHead``.

Box coding, anchor matching, hard-negative mining (3 negatives per positive), the loss
and NMS are torchvision's; this module only chooses the backbone and the default boxes.

Default boxes: feature map ``k`` (of six) gets boxes of relative size ``s_k`` and
``sqrt(s_k * s_{k+1})`` (aspect 1) and ``s_k`` at every ratio ``a`` and ``1/a`` in
``aspect_ratios`` -- so ``scales`` has seven entries. BCCD's 640x480 images are squashed
to 300x300, so a round cell becomes a box of width/height about 0.75.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD, SSDHead

from bloodlib.detection.backbones import build_backbone

IMAGE_SIZE = 300  # SSD300
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_ssd(
    *,
    backbone: str,
    num_classes: int,
    width: float = 1.0,
    batch_norm: bool = False,
    pretrained: bool = False,
    scales: Sequence[float] = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05),
    aspect_ratios: Sequence[float] = (2.0,),
    score_thresh: float = 0.01,
    nms_thresh: float = 0.45,
    detections_per_img: int = 100,
    match_iou: float = 0.5,
) -> SSD:
    """An SSD300 with a library backbone.

    Args:
        backbone: ``"vgg16"`` or ``"alexnet"`` (see :mod:`bloodlib.detection.backbones`).
        num_classes: object classes + 1 for the background (label 0).
        width, batch_norm, pretrained: passed to :func:`~bloodlib.detection.backbones.build_backbone`.
        scales: seven relative box sizes, increasing (six maps + one for the last ``sqrt``).
        aspect_ratios: extra ratios used on every map (each adds ``a`` and ``1/a``).
        score_thresh, nms_thresh, detections_per_img: torchvision's post-processing.
        match_iou: a default box is a positive for the ground-truth box it overlaps with IoU >=
            ``match_iou`` (torchvision's ``iou_thresh``; SSD uses 0.5).

    The model takes a list of ``(3, H, W)`` float images in [0, 1] of any size; it resizes
    them to 300x300, normalises with ImageNet's mean/std, and returns boxes in the input's
    pixel coordinates.

    Raises:
        ValueError: bad ``scales``/``aspect_ratios``/``num_classes`` (and see ``build_backbone``).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    scales = [float(s) for s in scales]
    if len(scales) != 7 or any(b <= a for a, b in pairwise(scales)) or scales[0] <= 0:
        raise ValueError(f"scales must be 7 increasing positive numbers, got {scales}")
    if any(a <= 0 or a == 1 for a in aspect_ratios):
        raise ValueError(f"aspect_ratios must be positive and != 1 (1 is always used), got {list(aspect_ratios)}")
    net = build_backbone(backbone, width=width, batch_norm=batch_norm, pretrained=pretrained)
    anchors = DefaultBoxGenerator([list(map(float, aspect_ratios))] * 6, scales=scales, steps=None, clip=True)
    head = SSDHead(net.out_channels, anchors.num_anchors_per_location(), num_classes)
    return SSD(
        net,
        anchors,
        (IMAGE_SIZE, IMAGE_SIZE),
        num_classes,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        head=head,
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
        topk_candidates=400,
        iou_thresh=match_iou,
    )


def feature_map_sizes(model: SSD) -> list[tuple[int, int]]:
    """``(H, W)`` of each backbone feature map for one 300x300 input."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        maps = model.backbone(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    model.train(was_training)
    return [tuple(m.shape[-2:]) for m in maps.values()]
