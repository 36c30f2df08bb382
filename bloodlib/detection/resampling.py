"""COCO AP@0.5 of image resamples without re-running COCO: match once, resample the matches.

COCO's evaluation matches detections to ground truth image by image (greedy, by falling
score, each detection to the unmatched ground-truth box it overlaps most at IoU >= 0.5, at
most 100 detections per image and class), then accumulates all images' matches into one
precision-recall curve. A bootstrap resample of images therefore only changes how often each
image's matches count: :func:`match_detections` matches every image once, and
:func:`resampled_ap` turns image multiplicities (``(B, n_images)``) into ``B`` APs with a few
array operations -- a thousand resamples of 72 images in well under a second, where
torchmetrics takes about a second per resample. On the original images (every multiplicity 1)
it gives torchmetrics' / pycocotools' AP (a test compares them).

A detection repeated ``w`` times adds ``w`` to the cumulative true (or false) positives at once:
the interpolated precision at any recall is the same as adding the copies one by one, because
within a run of true positives precision only rises and within a run of false positives
recall does not move.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou

from bloodlib.detection.data import CLASSES, Annotation
from bloodlib.detection.metrics import Prediction, percentile_interval
from bloodlib.progress import phase

#: COCO's 101 recall thresholds as torchmetrics passes them (``torch.linspace`` in float32: a recall of
#: exactly k/n sits on the same side of each threshold as in :func:`~.metrics.average_precision`).
RECALL_THRESHOLDS = np.array(torch.linspace(0.0, 1.0, 101).tolist())
#: COCO's largest ``maxDets``: detections per image and class that count.
MAX_DETECTIONS = 100


@dataclass(frozen=True)
class ClassMatches:
    """One class's detections over all images, sorted by falling score (stable: image order,
    then each image's own order): ``image`` (n,) int, ``score`` (n,), ``true_positive`` (n,) bool;
    and ``ground_truth`` (n_images,) int, the class's boxes per image."""

    image: np.ndarray
    score: np.ndarray
    true_positive: np.ndarray
    ground_truth: np.ndarray


def _match_image(
    boxes: torch.Tensor, scores: torch.Tensor, truth: torch.Tensor, iou: float
) -> tuple[np.ndarray, np.ndarray]:
    """One image and class: ``(scores, true_positive)`` of its top :data:`MAX_DETECTIONS` detections
    by falling score, matched greedily as COCO does."""
    order = torch.from_numpy(np.argsort(-scores.numpy(), kind="mergesort"))[:MAX_DETECTIONS]
    boxes, scores = boxes[order], scores[order]
    matched = np.zeros(len(boxes), dtype=bool)
    if len(boxes) and len(truth):
        ious = box_iou(boxes.double(), truth.double()).numpy()
        taken = np.zeros(len(truth), dtype=bool)
        threshold = min(iou, 1 - 1e-10)
        for d in range(len(boxes)):
            best, best_iou = -1, threshold
            for g in range(len(truth)):
                if taken[g] or ious[d, g] < best_iou:
                    continue
                best, best_iou = g, ious[d, g]
            if best >= 0:
                taken[best], matched[d] = True, True
    return scores.numpy().astype(np.float64), matched


def match_detections(
    preds: Sequence[Prediction],
    annotations: Sequence[Annotation],
    *,
    iou: float = 0.5,
    classes: Sequence[str] = CLASSES,
) -> dict[str, ClassMatches]:
    """Per class, every image's detections matched to its ground truth (:class:`ClassMatches`).

    ``preds``: torchvision-style dicts (``boxes`` (N, 4) XYXY with x2 > x1 and y2 > y1, as detectors give
    them; COCO would ignore an unmatched box of negative area), ``scores`` (N,), ``labels`` (N,) in
    ``1..len(classes)``), one per annotation, in the same order.

    Raises:
        ValueError: ``preds`` and ``annotations`` differ in length.
    """
    if len(preds) != len(annotations):
        raise ValueError(f"{len(preds)} predictions for {len(annotations)} images")
    out = {}
    for k, name in enumerate(classes):
        label = k + 1
        images, scores, hits, truth_counts = [], [], [], []
        for i, (p, a) in enumerate(zip(preds, annotations)):
            mine = p["labels"] == label
            truth = torch.from_numpy(a.boxes[a.labels == label]).float()
            s, tp = _match_image(p["boxes"][mine].float(), p["scores"][mine].float(), truth, iou)
            images.append(np.full(len(s), i, dtype=np.int64))
            scores.append(s)
            hits.append(tp)
            truth_counts.append(len(truth))
        image, score, hit = np.concatenate(images), np.concatenate(scores), np.concatenate(hits)
        order = np.argsort(-score, kind="mergesort")
        out[name] = ClassMatches(image[order], score[order], hit[order], np.asarray(truth_counts, dtype=np.int64))
    return out


def resampled_ap(matches: ClassMatches, weights: np.ndarray) -> np.ndarray:
    """COCO's 101-point interpolated AP for each row of ``weights`` ``(B, n_images)`` (how often each
    image is drawn); ``(B,)`` floats, NaN where a resample holds no ground truth of the class."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    n_truth = weights @ matches.ground_truth
    w = weights[:, matches.image]  # (B, n)
    tp = np.cumsum(w * matches.true_positive, axis=1)
    fp = np.cumsum(w * ~matches.true_positive, axis=1)
    out = np.full(len(weights), math.nan)
    for b in range(len(weights)):
        if n_truth[b] == 0:
            continue
        keep = w[b] > 0
        if not keep.any():
            out[b] = 0.0
            continue
        recall = tp[b, keep] / n_truth[b]
        precision = tp[b, keep] / (tp[b, keep] + fp[b, keep])
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        index = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
        q = np.where(index < len(recall), envelope[np.minimum(index, len(recall) - 1)], 0.0)
        out[b] = q.mean()
    return out


def resampled_map(matched: dict[str, ClassMatches], weights: np.ndarray) -> np.ndarray:
    """``(B,)`` mAP of each resample: the mean AP over the classes with ground truth in the resample
    (a class with ground truth and no detection scores 0), as :func:`~.metrics.average_precision`."""
    aps = np.stack([resampled_ap(m, weights) for m in matched.values()])  # (C, B), NaN: no ground truth
    present = ~np.isnan(aps)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present, aps, 0.0).sum(0) / present.sum(0)


def bootstrap_weights(n: int, *, samples: int, seed: int) -> np.ndarray:
    """``(samples, n)`` multiplicities of ``samples`` resamples of ``n`` items with replacement
    (the draws of :func:`~.metrics.bootstrap_ci` with the same seed)."""
    if n <= 0:
        raise ValueError(f"bootstrap needs at least one item, got n={n}")
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n, size=n), minlength=n) for _ in range(samples)]).reshape(samples, n)


@phase("bootstrap")
def map_interval(
    preds: Sequence[Prediction], annotations: Sequence[Annotation], *, samples: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap interval of mAP@0.5 over images (``samples`` resamples; NaN, NaN for 0)."""
    if samples <= 0:
        return (math.nan, math.nan)
    matched = match_detections(preds, annotations)
    return percentile_interval(
        resampled_map(matched, bootstrap_weights(len(annotations), samples=samples, seed=seed)), level
    )
