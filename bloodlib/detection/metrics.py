"""Detection metrics (torchmetrics' COCO-style AP at IoU 0.5), counting errors, bootstrap CIs.

Predictions are torchvision's format, one dict per image: ``boxes`` (N, 4) XYXY pixels,
``scores`` (N,), ``labels`` (N,) int64 in ``1..len(CLASSES)``; ground truth comes from
:class:`~bloodlib.detection.data.Annotation`. AP is pycocotools' 101-point interpolated
average precision at IoU >= 0.5 (up to 100 detections per image and class), computed by
torchmetrics' ``MeanAveragePrecision``; mAP is its mean over the three classes. Its backend is
``faster_coco_eval`` (:data:`AP_BACKEND`), which gives pycocotools' numbers (a test compares
them) in about half the time -- the report's bootstrap computes AP hundreds of times.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from bloodlib.detection.data import CLASSES, Annotation
from bloodlib.progress import phase

Prediction = dict[str, torch.Tensor]
AP_BACKEND = "faster_coco_eval"


def _target(a: Annotation) -> dict[str, torch.Tensor]:
    return {"boxes": torch.from_numpy(a.boxes).float(), "labels": torch.from_numpy(a.labels).long()}


def _pred(p: Prediction) -> dict[str, torch.Tensor]:
    return {"boxes": p["boxes"].float(), "scores": p["scores"].float(), "labels": p["labels"].long()}


def _check(preds: Sequence[Prediction], annotations: Sequence[Annotation]) -> None:
    if len(preds) != len(annotations):
        raise ValueError(f"{len(preds)} predictions for {len(annotations)} images")


def _coco(
    preds: Sequence[Prediction], annotations: Sequence[Annotation], extended: bool, backend: str = AP_BACKEND
) -> dict[str, Any]:
    from torchmetrics.detection import MeanAveragePrecision

    _check(preds, annotations)
    metric = MeanAveragePrecision(
        iou_type="bbox",
        iou_thresholds=[0.5],
        class_metrics=True,
        extended_summary=extended,
        backend=backend,
        sync_on_compute=False,  # AP of these images only, also in a distributed run's rank 0
    )
    metric.warn_on_many_detections = False
    metric.update([_pred(p) for p in preds], [_target(a) for a in annotations])
    return metric.compute()


def _class_index(result: dict[str, Any]) -> dict[int, int]:
    """label -> position along the class axis of torchmetrics' result."""
    return {int(c): i for i, c in enumerate(torch.atleast_1d(result["classes"]).tolist())}


def _nan_if_negative(x: float) -> float:
    return math.nan if x < 0 else float(x)


def average_precision(
    preds: Sequence[Prediction],
    annotations: Sequence[Annotation],
    classes: Sequence[str] = CLASSES,
    *,
    backend: str = AP_BACKEND,
) -> dict[str, float]:
    """``{"mAP": ..., "<class>": AP}`` at IoU 0.5; a class without ground truth is NaN (and left out of mAP).

    ``backend``: torchmetrics' COCO implementation, ``"faster_coco_eval"`` or ``"pycocotools"``.
    """
    result = _coco(preds, annotations, extended=False, backend=backend)
    index = _class_index(result)
    per_class = torch.atleast_1d(result["map_per_class"]).tolist()
    aps = {
        name: _nan_if_negative(per_class[index[k + 1]]) if k + 1 in index else math.nan
        for k, name in enumerate(classes)
    }
    has_gt = [name for k, name in enumerate(classes) if any((a.labels == k + 1).any() for a in annotations)]
    aps_gt = [0.0 if math.isnan(aps[n]) else aps[n] for n in has_gt]  # ground truth but no prediction: AP 0
    return {"mAP": float(np.mean(aps_gt)) if aps_gt else math.nan, **aps}


def pr_curves(
    preds: Sequence[Prediction], annotations: Sequence[Annotation], classes: Sequence[str] = CLASSES
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per class ``(recall (101,), precision (101,))``: COCO's interpolated PR curve at IoU 0.5
    (precision NaN beyond the highest recall reached)."""
    result = _coco(preds, annotations, extended=True)
    index = _class_index(result)
    recall = np.linspace(0.0, 1.0, 101)
    curves = {}
    for k, name in enumerate(classes):
        if k + 1 not in index:
            continue
        precision = result["precision"][0, :, index[k + 1], 0, -1].numpy().astype(float)
        precision[precision < 0] = np.nan
        curves[name] = (recall, precision)
    return curves


def above_threshold(
    pred: Prediction, threshold: float | dict[str, float], classes: Sequence[str] = CLASSES
) -> Prediction:
    """The detections of one image with ``score >= threshold`` (one number, or one per class name).

    Every tensor of ``pred`` (``boxes`` (N, 4), ``scores`` (N,), ``labels`` (N,) in ``1..len(classes)``)
    is indexed by the same mask; the comparison runs in the scores' dtype.
    """
    if isinstance(threshold, dict):
        cut = torch.tensor([threshold[classes[int(label) - 1]] for label in pred["labels"]], dtype=pred["scores"].dtype)
    else:
        cut = torch.full_like(pred["scores"], float(threshold))
    keep = pred["scores"] >= cut
    return {k: v[keep] for k, v in pred.items()}


def precision_recall_at(
    preds: Sequence[Prediction], annotations: Sequence[Annotation], threshold: float, classes: Sequence[str] = CLASSES
) -> dict[str, dict[str, float]]:
    """Per class: precision and recall at IoU 0.5 of the detections with ``score >= threshold``.

    Matching is COCO's greedy, score-ordered matching (torchmetrics/pycocotools): recall =
    matched ground truth / ground truth, precision = matched detections / detections.
    Returns ``{class: {"precision", "recall", "tp", "detections", "ground_truth"}}``.
    """
    kept = [above_threshold(p, threshold, classes) for p in preds]
    result = _coco(kept, annotations, extended=True)
    index = _class_index(result)
    out = {}
    for k, name in enumerate(classes):
        n_gt = int(sum((a.labels == k + 1).sum() for a in annotations))
        n_det = int(sum((p["labels"] == k + 1).sum() for p in kept))
        recall = float(result["recall"][0, index[k + 1], 0, -1]) if k + 1 in index else math.nan
        recall = math.nan if n_gt == 0 else max(recall, 0.0)
        tp = 0 if n_gt == 0 else round(recall * n_gt)
        out[name] = {
            "precision": tp / n_det if n_det else math.nan,
            "recall": recall,
            "tp": tp,
            "detections": n_det,
            "ground_truth": n_gt,
        }
    return out


# ---- counting -------------------------------------------------------------------------------


def count_frame(
    preds: Sequence[Prediction],
    annotations: Sequence[Annotation],
    thresholds: float | dict[str, float],
    classes: Sequence[str] = CLASSES,
) -> Any:
    """One row per image and class: ``image_id, class, true, predicted`` (detections above threshold)."""
    import pandas as pd

    _check(preds, annotations)
    kept = [above_threshold(p, thresholds, classes) for p in preds]
    rows = []
    for p, a in zip(kept, annotations):
        for k, name in enumerate(classes):
            rows.append(
                {
                    "image_id": a.image_id,
                    "class": name,
                    "true": int((a.labels == k + 1).sum()),
                    "predicted": int((p["labels"] == k + 1).sum()),
                }
            )
    return pd.DataFrame(rows, columns=["image_id", "class", "true", "predicted"])


def count_errors(true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Counting errors of one class over images.

    ``exact``: share of images counted exactly; ``mae``: mean absolute error (cells);
    ``mape``: mean of ``|pred - true| / true`` over images with ``true > 0``, in percent
    (NaN if none); ``bias``: mean ``pred - true``; ``total_pct``: error of the summed count over
    all images, in percent of the true sum (what a count over many fields of one smear sees).
    """
    true, predicted = np.asarray(true, dtype=float), np.asarray(predicted, dtype=float)
    if true.shape != predicted.shape or true.ndim != 1:
        raise ValueError(f"true {true.shape} and predicted {predicted.shape} must be equal 1-D shapes")
    if true.size == 0:
        return {"exact": math.nan, "mae": math.nan, "mape": math.nan, "bias": math.nan, "total_pct": math.nan}
    err = predicted - true
    positive = true > 0
    return {
        "exact": float(np.mean(err == 0)),
        "mae": float(np.mean(np.abs(err))),
        "mape": float(100 * np.mean(np.abs(err[positive]) / true[positive])) if positive.any() else math.nan,
        "bias": float(np.mean(err)),
        "total_pct": float(100 * err.sum() / true.sum()) if true.sum() > 0 else math.nan,
    }


def count_summary(frame: Any) -> Any:
    """Per class: images, mean true and predicted counts, and :func:`count_errors`."""
    import pandas as pd

    rows = []
    for name, group in frame.groupby("class", sort=False):
        rows.append(
            {
                "class": name,
                "images": len(group),
                "mean_true": group["true"].mean(),
                "mean_predicted": group["predicted"].mean(),
                **count_errors(group["true"].to_numpy(), group["predicted"].to_numpy()),
            }
        )
    return pd.DataFrame(rows)


def choose_count_thresholds(
    preds: Sequence[Prediction],
    annotations: Sequence[Annotation],
    grid: Sequence[float] = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2)),
    classes: Sequence[str] = CLASSES,
) -> dict[str, float]:
    """Per class, the score threshold in ``grid`` with the lowest count MAE on these images
    (ties: the higher exact-count rate, then the threshold nearest 0.5). Use validation images only."""
    best: dict[str, tuple] = {}
    for t in grid:
        frame = count_frame(preds, annotations, float(t), classes)
        for name, group in frame.groupby("class", sort=False):
            e = count_errors(group["true"].to_numpy(), group["predicted"].to_numpy())
            key = (e["mae"], -e["exact"], abs(t - 0.5))
            if name not in best or key < best[name][0]:
                best[name] = (key, float(t))
    return {name: best[name][1] for name in classes}


# ---- bootstrap ------------------------------------------------------------------------------


@phase("bootstrap")
def bootstrap_ci(
    statistic: Callable[[np.ndarray], float], n: int, *, samples: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``statistic(indices)`` over ``n`` items resampled with replacement.

    ``statistic`` receives an int array of ``n`` indices (an image resample) and returns a number;
    NaN results are ignored. Returns ``(low, high)``; NaN if ``samples`` is 0.
    """
    if n <= 0:
        raise ValueError(f"bootstrap needs at least one item, got n={n}")
    if samples <= 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    return percentile_interval([statistic(rng.integers(0, n, size=n)) for _ in range(samples)], level)


def percentile_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """``(low, high)`` percentile interval of the finite ``values`` (NaN, NaN without any)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (math.nan, math.nan)
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return (float(low), float(high))
