"""The report's tables: Table 2 beside the paper, mAP with bootstrap CIs, counting, HSV failures.

Every function takes predictions per model (``{model name: [prediction per image]}``) on
the same images, in the order of ``annotations``; nothing here trains or selects on test:
count thresholds come from the validation images (:func:`count_thresholds`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchvision.ops import box_iou

from bloodlib.detection.data import CLASSES, Annotation
from bloodlib.detection.metrics import (
    Prediction,
    average_precision,
    bootstrap_ci,
    choose_count_thresholds,
    count_errors,
    count_frame,
    count_summary,
    precision_recall_at,
)
from bloodlib.detection.paper import PAPER_HSV_WBC_ACCURACY, PAPER_TABLE2

Predictions = dict[str, Sequence[Prediction]]


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def table2(
    preds: Predictions,
    annotations: Sequence[Annotation],
    *,
    score_threshold: float,
    classes_of: dict[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """One row per model and class: AP@0.5, precision and recall at ``score_threshold`` (IoU 0.5),
    detections, ground truth, and the paper's precision/recall where it reports them.

    ``classes_of`` limits a model's rows (e.g. ``{"HSV baseline": ["WBC"]}``).
    """
    rows = []
    for model, p in preds.items():
        ap = average_precision(p, annotations)
        pr = precision_recall_at(p, annotations, score_threshold)
        paper = PAPER_TABLE2.get(model, {})
        for cls in (classes_of or {}).get(model, CLASSES):
            rows.append(
                {
                    "model": model,
                    "class": cls,
                    "AP50": ap[cls],
                    "precision": pr[cls]["precision"],
                    "recall": pr[cls]["recall"],
                    "detections": pr[cls]["detections"],
                    "ground_truth": pr[cls]["ground_truth"],
                    "paper_precision": _or_nan((paper.get("precision") or {}).get(cls)),
                    "paper_recall": _or_nan((paper.get("recall") or {}).get(cls)),
                }
            )
    return pd.DataFrame(rows).astype({"paper_precision": float, "paper_recall": float})


def _resampled(items: Sequence[Any], idx: np.ndarray) -> list[Any]:
    return [items[i] for i in idx]


def map_table(
    preds: Predictions,
    annotations: Sequence[Annotation],
    *,
    samples: int,
    seed: int,
    val_preds: Predictions | None = None,
    val_annotations: Sequence[Annotation] = (),
) -> pd.DataFrame:
    """Per model: mAP@0.5 with a 95 % percentile-bootstrap CI over images, and the paper's mAP.

    With ``val_preds`` (same models, on ``val_annotations``) a ``val_mAP50`` column is added:
    :func:`headline` picks the best model by it, so the choice never looks at the test images.
    """
    rows = []
    for model, p in preds.items():
        low, high = bootstrap_ci(
            lambda idx, p=p: average_precision(_resampled(p, idx), _resampled(annotations, idx))["mAP"],
            len(annotations),
            samples=samples,
            seed=seed,
        )
        row = {
            "model": model,
            "mAP50": average_precision(p, annotations)["mAP"],
            "ci_low": low,
            "ci_high": high,
            "paper_mAP": _or_nan(PAPER_TABLE2.get(model, {}).get("mAP")),
        }
        if val_preds is not None:
            row["val_mAP50"] = average_precision(val_preds[model], val_annotations)["mAP"]
        rows.append(row)
    return pd.DataFrame(rows)


def count_thresholds(val_preds: Predictions, val_annotations: Sequence[Annotation]) -> dict[str, dict[str, float]]:
    """Per model and class, the counting score threshold chosen on the validation images."""
    return {model: choose_count_thresholds(p, val_annotations) for model, p in val_preds.items()}


def count_frames(
    preds: Predictions, annotations: Sequence[Annotation], thresholds: dict[str, dict[str, float]]
) -> dict[str, pd.DataFrame]:
    """Per model, :func:`~bloodlib.detection.metrics.count_frame` at its thresholds."""
    return {model: count_frame(p, annotations, thresholds[model]) for model, p in preds.items()}


def count_table(
    frames: dict[str, pd.DataFrame], *, samples: int, seed: int, classes_of: dict[str, Sequence[str]] | None = None
) -> pd.DataFrame:
    """Per model and class: counting errors with 95 % bootstrap CIs (resampling test images).

    Columns: ``model, class, images, mean_true, mean_predicted, exact, mae, mape, bias, total_pct`` and
    ``<metric>_low`` / ``<metric>_high`` for exact, mae and mape.
    """
    rows = []
    for model, frame in frames.items():
        summary = count_summary(frame).set_index("class")
        for cls in (classes_of or {}).get(model, CLASSES):
            group = frame[frame["class"] == cls]
            true, pred = group["true"].to_numpy(), group["predicted"].to_numpy()
            row = {"model": model, "class": cls, **summary.loc[cls].to_dict()}
            for metric in ("exact", "mae", "mape"):
                row[f"{metric}_low"], row[f"{metric}_high"] = bootstrap_ci(
                    lambda idx, t=true, q=pred, m=metric: count_errors(t[idx], q[idx])[m],
                    len(true),
                    samples=samples,
                    seed=seed,
                )
            rows.append(row)
    return pd.DataFrame(rows)


def wbc_misses(
    preds: Sequence[Prediction], annotations: Sequence[Annotation], *, threshold: float, iou: float = 0.5
) -> pd.DataFrame:
    """Per image: true WBCs, detected WBC boxes (score >= threshold), WBCs found (a box with
    IoU >= ``iou``) and spurious boxes (IoU < ``iou`` with every true WBC). For the HSV failures."""
    label = CLASSES.index("WBC") + 1
    rows = []
    for p, a in zip(preds, annotations):
        keep = (p["labels"] == label) & (p["scores"] >= threshold)
        boxes = p["boxes"][keep]
        truth = a.boxes[a.labels == label]
        ious = box_iou(torch.from_numpy(truth), boxes) if len(truth) and len(boxes) else None
        found = int((ious.max(dim=1).values >= iou).sum()) if ious is not None else 0
        spurious = int((ious.max(dim=0).values < iou).sum()) if ious is not None else len(boxes)
        rows.append(
            {"image_id": a.image_id, "true": len(truth), "detected": len(boxes), "found": found, "spurious": spurious}
        )
    return pd.DataFrame(rows)


def pick_images(annotations: Sequence[Annotation], n: int, seed: int) -> list[int]:
    """``n`` image indices drawn with ``seed`` (sorted), for Figure 5."""
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(len(annotations), size=min(n, len(annotations)), replace=False).tolist())


def training_table(detectors: dict[str, Any]) -> pd.DataFrame:
    """Per trained detector (``bloodlib.detection.train.TrainedDetector``): size, epochs, the
    selected epoch and its validation mAP, training time, and whether it came from the cache."""
    rows = []
    for d in detectors.values():
        best = d.history[d.best_epoch - 1] if d.history else {}
        rows.append(
            {
                "model": d.name,
                "parameters": sum(p.numel() for p in d.model.parameters()),
                "epochs": len(d.history),
                "selected_epoch": d.best_epoch,
                "val_mAP50": best.get("val_mAP", math.nan),
                "train_minutes": d.train_seconds / 60,
                "from_cache": d.from_cache,
                "cache_key": d.key,
            }
        )
    return pd.DataFrame(rows)


#: The cpu profile's targets (issue 4): (description, metric key, comparison, value).
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("best mAP@0.5", "best_mAP50", ">=", 0.90),
    ("platelets AP@0.5 (best model)", "best_platelets_AP50", ">=", 0.70),
    ("WBC count exact (best model)", "best_wbc_exact", ">=", 0.97),
    ("RBC count MAPE % (best model)", "best_rbc_mape", "<=", 8.0),
    ("notebook wall time incl. training, minutes", "wall_minutes", "<=", 20.0),
)


def headline(
    maps: pd.DataFrame, table: pd.DataFrame, counts: pd.DataFrame, wall_minutes: float, models: Sequence[str]
) -> dict[str, Any]:
    """The numbers the targets and the index talk about.

    The best model is the SSD with the highest validation mAP (``maps["val_mAP50"]``; the test
    mAP only when ``maps`` has no validation column).
    """
    by = "val_mAP50" if "val_mAP50" in maps else "mAP50"
    ssd = maps[maps["model"].isin(models)].sort_values(by, ascending=False)
    best = ssd.iloc[0]["model"]
    ap = table.set_index(["model", "class"])["AP50"]
    c = counts.set_index(["model", "class"])
    return {
        "best_model": best,
        "best_mAP50": float(ssd.iloc[0]["mAP50"]),
        "best_platelets_AP50": float(ap[(best, "Platelets")]),
        "best_wbc_exact": float(c.loc[(best, "WBC"), "exact"]),
        "best_rbc_mape": float(c.loc[(best, "RBC"), "mape"]),
        "wall_minutes": wall_minutes,
    }


def targets_table(values: dict[str, Any]) -> pd.DataFrame:
    """Each target of :data:`TARGETS` with the value reached and whether it is met."""
    rows = []
    for text, key, op, goal in TARGETS:
        value = float(values[key])
        met = value >= goal if op == ">=" else value <= goal
        rows.append({"target": f"{text} {op} {goal:g}", "reached": value, "met": bool(met)})
    return pd.DataFrame(rows)


def summary_rows(
    values: dict[str, Any],
    maps: pd.DataFrame,
    table: pd.DataFrame,
    hsv_accuracy: float,
    note: str,
    score_threshold: float,
) -> list[dict[str, Any]]:
    """Headline rows for the report index: the paper's number beside ours (``note``: split, profile;
    ``score_threshold``: the one the precision in ``table`` was computed at)."""
    rows = []
    for _, row in maps.iterrows():
        if row["model"] in PAPER_TABLE2:
            rows.append(
                {
                    "metric": f"{row['model']} mAP@0.5",
                    "paper": _none_if_nan(row["paper_mAP"]),
                    "ours": float(row["mAP50"]),
                    "note": f"{note}; 95% CI {row['ci_low']:.3f}-{row['ci_high']:.3f}",
                }
            )
    best = values["best_model"]
    precision = table.set_index(["model", "class"])["precision"]
    for cls in ("WBC", "Platelets"):
        if (best, cls) in precision.index:
            rows.append(
                {
                    "metric": f"{best} {cls} precision",
                    "ours": float(precision[(best, cls)]),
                    "paper": _none_if_nan(PAPER_TABLE2.get(best, {}).get("precision", {}).get(cls)),
                    "note": f"{note}; detections with score >= {score_threshold:g}, IoU 0.5",
                }
            )
    rows += [
        {"metric": f"{best} platelets AP@0.5", "paper": None, "ours": values["best_platelets_AP50"], "note": note},
        {
            "metric": f"{best} WBC count exact (share of images)",
            "paper": None,
            "ours": values["best_wbc_exact"],
            "note": note,
        },
        {"metric": f"{best} RBC count MAPE %", "paper": None, "ours": values["best_rbc_mape"], "note": note},
        {
            "metric": "HSV baseline WBC accuracy (share found, IoU 0.5)",
            "paper": PAPER_HSV_WBC_ACCURACY,
            "ours": hsv_accuracy,
            "note": note,
        },
    ]
    return rows


def _none_if_nan(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def worst_counts(frame: pd.DataFrame, cls: str, n: int) -> list[str]:
    """Image ids with the ``n`` largest absolute count errors for class ``cls`` (ties: image order)."""
    rows = frame[frame["class"] == cls].assign(error=lambda f: (f["predicted"] - f["true"]).abs())
    return rows.sort_values("error", ascending=False, kind="stable")["image_id"].head(n).tolist()
