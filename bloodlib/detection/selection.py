"""Selection shown, not typed: the evidence for the choices ``01_detection``'s parameters fix, computed
in the same run -- the HSV baseline's thresholds on a grid over the training images, test-time
augmentation (views and fusion IoU) scored on the validation images, and the validation mAP per
epoch that picks the epoch kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from bloodlib.detection.baseline import HSVThresholds, detect_wbc
from bloodlib.detection.data import Annotation
from bloodlib.detection.evaluation import BASELINE, Predictions
from bloodlib.detection.metrics import Prediction, average_precision
from bloodlib.detection.tta import fused, view_predictions

if TYPE_CHECKING:
    from bloodlib.training import TrainedModel

#: The HSV baseline's grid on the training images: the values tried for each threshold (the others
#: stay at the parameters' values).
HSV_GRID: dict[str, tuple[int, ...]] = {"sat_low": (60, 75, 90, 105), "min_area": (1000, 2000, 3000, 4000)}


def hsv_grid(
    annotations: Sequence[Annotation], hsv: HSVThresholds, grid: dict[str, Sequence[int]] | None = None
) -> pd.DataFrame:
    """The HSV baseline on ``annotations`` (the training images) for every point of ``grid`` (default
    :data:`HSV_GRID`; other thresholds as in ``hsv``): WBC boxes drawn, found (IoU >= 0.5), precision,
    recall and F1, ``params`` (the point equals ``hsv``) and ``best`` (highest F1; ties go to ``hsv``,
    then to the first point)."""
    import dataclasses
    import itertools

    from bloodlib.detection.data import read_image
    from bloodlib.detection.resampling import match_detections

    grid = dict(grid or HSV_GRID)
    unknown = set(grid) - {f.name for f in dataclasses.fields(hsv)}
    if unknown:
        raise ValueError(f"grid names unknown HSV thresholds: {sorted(unknown)}")
    images = [read_image(a.image_path).permute(1, 2, 0).numpy() for a in annotations]
    rows = []
    for values in itertools.product(*grid.values()):
        point = dataclasses.replace(hsv, **dict(zip(grid, values)))
        matched = match_detections([detect_wbc(image, point) for image in images], annotations)["WBC"]
        found, drawn, truth = int(matched.true_positive.sum()), len(matched.score), int(matched.ground_truth.sum())
        precision = found / drawn if drawn else math.nan
        recall = found / truth if truth else math.nan
        f1 = 2 * found / (drawn + truth) if drawn + truth else math.nan
        rows.append(
            {
                **dict(zip(grid, values)),
                "boxes": drawn,
                "found": found,
                "wbc": truth,
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "params": point == hsv,
            }
        )
    table = pd.DataFrame(rows)
    ranked = table.assign(_f1=table["f1"].fillna(-1.0)).sort_values(["_f1", "params"], ascending=False, kind="stable")
    table["best"] = table.index == ranked.index[0]
    return table


def hsv_grid_text(grid: pd.DataFrame) -> str:
    """One line: whether the parameters' thresholds are the best F1 of :func:`hsv_grid`'s table."""
    chosen, best = grid[grid["params"]], grid[grid["best"]].iloc[0]
    if chosen.empty:
        return "The parameters' HSV thresholds are not a point of the grid."
    f1 = chosen.iloc[0]["f1"]
    if bool(chosen.iloc[0]["best"]):
        return f"The parameters' HSV thresholds are the grid's best on the training images (WBC F1 {f1:.3f})."
    names = [
        c for c in grid.columns if c not in ("boxes", "found", "wbc", "precision", "recall", "f1", "params", "best")
    ]
    where = ", ".join(f"{n} {best[n]}" for n in names)
    return (
        f"The parameters' HSV thresholds reach WBC F1 {f1:.3f} on the training images; the grid's best is "
        f"{where} (F1 {best['f1']:.3f})."
    )


#: The test-time augmentation settings :func:`tta_selection` scores on the validation images.
TTA_VIEWS: tuple[int, ...] = (1, 2, 4)
TTA_IOUS: tuple[float, ...] = (0.45, 0.5, 0.55, 0.6)


def tta_selection(
    models: dict[str, torch.nn.Module | TrainedModel],
    annotations: Sequence[Annotation],
    *,
    views: int,
    iou: float,
    baseline: Sequence[Prediction] | None = None,
) -> tuple[pd.DataFrame, Predictions]:
    """Validation mAP@0.5 of every model for each number of fused views in :data:`TTA_VIEWS` and
    fusion IoU in :data:`TTA_IOUS` (one row for a single view, which fuses nothing).

    Returns the table (``model, views, fusion_iou, val_mAP50, params`` -- the setting the parameters
    fix --, ``best`` -- the highest validation mAP of the model) and every model's validation
    predictions at the parameters' ``views`` and ``iou`` (with ``baseline`` added under
    :data:`BASELINE`), which the counting thresholds and the best model are chosen with.
    """
    if views not in TTA_VIEWS:
        raise ValueError(f"views must be one of {TTA_VIEWS}, got {views}")
    rows, chosen = [], {}
    for name, model in models.items():
        per_image = view_predictions(model, annotations, views=max(TTA_VIEWS))
        for n in TTA_VIEWS:
            for fusion_iou in (math.nan,) if n == 1 else sorted({*TTA_IOUS, iou}):
                kept = fused(per_image, views=n, iou=iou if n == 1 else fusion_iou)
                is_params = n == views and (n == 1 or fusion_iou == iou)
                if is_params:
                    chosen[name] = kept
                rows.append(
                    {
                        "model": name,
                        "views": n,
                        "fusion_iou": fusion_iou,
                        "val_mAP50": average_precision(kept, annotations)["mAP"],
                        "params": is_params,
                    }
                )
    table = pd.DataFrame(rows)
    best = table.groupby("model", sort=False)["val_mAP50"].idxmax()
    table["best"] = table.index.isin(best.to_numpy())
    if baseline is not None:
        chosen[BASELINE] = baseline
    return table, chosen


def epoch_table(detectors: dict[str, Any]) -> pd.DataFrame:
    """Per trained detector and evaluated epoch: the validation mAP that picks the epoch kept
    (``kept`` marks it), from the training history."""
    rows = []
    for d in detectors.values():
        for row in d.history:
            if "val_mAP" in row and row["val_mAP"] == row["val_mAP"]:
                rows.append(
                    {
                        "model": d.name,
                        "epoch": row["epoch"],
                        "val_mAP50": row["val_mAP"],
                        "kept": row["epoch"] == d.best_epoch,
                    }
                )
    return pd.DataFrame(rows, columns=["model", "epoch", "val_mAP50", "kept"])
