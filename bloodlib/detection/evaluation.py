"""The report's tables: Table 2 beside the paper, mAP with bootstrap CIs, counting, HSV failures,
and the headline values, summary rows and ``metrics.json`` content of ``01_detection``.

Every function takes predictions per model (``{model name: [prediction per image]}``) on
the same images, in the order of ``annotations``; nothing here trains or selects on test:
count thresholds come from the validation images (:func:`count_thresholds`), the best model
is picked by validation mAP (:func:`best_model`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torchvision.ops import box_iou

from bloodlib.detection.baseline import HSVThresholds, detect_wbc
from bloodlib.detection.data import CLASSES, Annotation, float_image
from bloodlib.detection.metrics import (
    Prediction,
    average_precision,
    bootstrap_ci,
    choose_count_thresholds,
    count_errors,
    count_frame,
    count_summary,
    pr_curves,
    precision_recall_at,
)
from bloodlib.detection.paper import paper_hsv_wbc_accuracy, paper_table2
from bloodlib.detection.resampling import map_interval
from bloodlib.detection.train import DISPLAY

if TYPE_CHECKING:
    from bloodlib.training import TrainedModel

Predictions = dict[str, Sequence[Prediction]]

#: The HSV baseline's name in every table.
BASELINE = DISPLAY["hsv"]
#: The classes a model's rows are limited to: the HSV baseline finds WBCs only.
BASELINE_CLASSES: dict[str, list[str]] = {BASELINE: ["WBC"]}


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
    papers = paper_table2()
    for model, p in preds.items():
        ap = average_precision(p, annotations)
        pr = precision_recall_at(p, annotations, score_threshold)
        paper = papers.get(model, {})
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


def map_table(
    preds: Predictions,
    annotations: Sequence[Annotation],
    *,
    samples: int,
    seed: int,
    val_preds: Predictions | None = None,
    val_annotations: Sequence[Annotation] = (),
) -> pd.DataFrame:
    """Per model: mAP@0.5 with a 95 % percentile-bootstrap CI over images (``samples`` resamples,
    :func:`~bloodlib.detection.resampling.map_interval`), and the paper's mAP.

    With ``val_preds`` (same models, on ``val_annotations``) a ``val_mAP50`` column is added:
    :func:`headline` picks the best model by it, so the choice never looks at the test images.
    """
    rows = []
    papers = paper_table2()
    for model, p in preds.items():
        low, high = map_interval(p, annotations, samples=samples, seed=seed)
        row = {
            "model": model,
            "mAP50": average_precision(p, annotations)["mAP"],
            "ci_low": low,
            "ci_high": high,
            "paper_mAP": _or_nan(papers.get(model, {}).get("mAP")),
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
    """Per trained detector (``bloodlib.training.TrainedModel``): size, epochs, the
    selected epoch and its validation mAP, training time and arithmetic, and whether it came from the cache."""
    rows = []
    for d in detectors.values():
        best = d.best_row
        rows.append(
            {
                "model": d.name,
                "parameters": sum(p.numel() for p in d.model.parameters()),
                "epochs": len(d.history),
                "selected_epoch": d.best_epoch,
                "val_mAP50": best.get("val_mAP", math.nan),
                "train_minutes": d.train_seconds / 60,
                "arithmetic": d.precision,
                "from_cache": d.cached,
                "cache_key": d.key,
            }
        )
    return pd.DataFrame(rows)


def headline(
    maps: pd.DataFrame,
    table: pd.DataFrame,
    counts: pd.DataFrame,
    wall_minutes: float,
    models: Sequence[str],
    overlap_maps: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The numbers the targets and the index talk about; the best model is :func:`best_model` among ``models``.

    With ``overlap_maps`` (the ``map`` table of :func:`overlap_free_tables`) the best model's mAP on the
    overlap-free test images is added (``best_mAP50_overlap_free``).
    """
    best = best_model(maps, models)
    ap = table.set_index(["model", "class"])["AP50"]
    c = counts.set_index(["model", "class"])
    extra = {}
    if overlap_maps is not None:
        free = f"mAP50 ({OVERLAP_FREE})"
        extra["best_mAP50_overlap_free"] = float(overlap_maps.set_index("model").loc[best, free])
    return {
        **extra,
        "best_model": best,
        "best_mAP50": float(maps.set_index("model").loc[best, "mAP50"]),
        "best_platelets_AP50": float(ap[(best, "Platelets")]),
        "best_wbc_exact": float(c.loc[(best, "WBC"), "exact"]),
        "best_rbc_mape": float(c.loc[(best, "RBC"), "mape"]),
        "wall_minutes": wall_minutes,
    }


def best_model(maps: pd.DataFrame, models: Sequence[str] | None = None) -> str:
    """The model of :func:`map_table` (among ``models``, default all) with the highest validation mAP
    (``val_mAP50``; the test mAP only when ``maps`` has no validation column)."""
    by = "val_mAP50" if "val_mAP50" in maps else "mAP50"
    candidates = maps if models is None else maps[maps["model"].isin(models)]
    return candidates.sort_values(by, ascending=False)["model"].iloc[0]


def summary_note(split: str, profile: str) -> str:
    """The ``note`` of every summary row: which split and profile the numbers come from."""
    return f"BCCD {split} split, test images; profile {profile}"


def summary_rows(
    values: dict[str, Any],
    maps: pd.DataFrame,
    table: pd.DataFrame,
    hsv_accuracy: float,
    note: str,
    score_threshold: float,
    *,
    descriptions: dict[str, dict[str, str]],
    overlap_maps: pd.DataFrame | None = None,
) -> list[dict[str, Any]]:
    """Headline rows for the report index: the paper's number beside ours (``note``: split, profile;
    ``score_threshold``: the one the precision in ``table`` was computed at).

    Every row names the model it is about (``model``: ours, ``paper_model``: the paper's) and what
    ``differs`` from the paper (``descriptions``: :func:`~bloodlib.detection.paper.model_descriptions`).
    ``overlap_maps`` (the ``map`` table of :func:`overlap_free_tables`) adds each SSD's mAP on the
    overlap-free test images.
    """
    rows = []
    papers = paper_table2()

    def described(name: str, row: dict[str, Any]) -> dict[str, Any]:
        d = descriptions[name]
        return {**row, "model": d["ours"], "paper_model": d["paper"], "differs": d["differs"]}

    for _, row in maps.iterrows():
        if row["model"] in papers:
            rows.append(
                described(
                    row["model"],
                    {
                        "metric": f"{row['model']} mAP@0.5",
                        "paper": _none_if_nan(row["paper_mAP"]),
                        "ours": float(row["mAP50"]),
                        "note": f"{note}; 95% CI {row['ci_low']:.3f}-{row['ci_high']:.3f}",
                    },
                )
            )
    if overlap_maps is not None:
        label = OVERLAP_FREE
        for _, row in overlap_maps.iterrows():
            if row["model"] in papers:
                low, high = row[f"ci_low ({label})"], row[f"ci_high ({label})"]
                rows.append(
                    described(
                        row["model"],
                        {
                            "metric": f"{row['model']} mAP@0.5, test images overlapping no train/val image",
                            "paper": _none_if_nan(papers[row["model"]].get("mAP")),
                            "ours": float(row[f"mAP50 ({label})"]),
                            "note": f"{note}; {int(row[f'images ({label})'])} of {int(row[f'images ({OFFICIAL})'])} "
                            f"test images; 95% CI {low:.3f}-{high:.3f}",
                        },
                    )
                )
    best = values["best_model"]
    precision = table.set_index(["model", "class"])["precision"]
    for cls in ("WBC", "Platelets"):
        if (best, cls) in precision.index:
            rows.append(
                described(
                    best,
                    {
                        "metric": f"{best} {cls} precision",
                        "ours": float(precision[(best, cls)]),
                        "paper": _none_if_nan(papers.get(best, {}).get("precision", {}).get(cls)),
                        "note": f"{note}; detections with score >= {score_threshold:g}, IoU 0.5",
                    },
                )
            )
    rows += [
        described(
            best,
            {"metric": f"{best} platelets AP@0.5", "paper": None, "ours": values["best_platelets_AP50"], "note": note},
        ),
        described(
            best,
            {
                "metric": f"{best} WBC count exact (share of images)",
                "paper": None,
                "ours": values["best_wbc_exact"],
                "note": note,
            },
        ),
        described(
            best, {"metric": f"{best} RBC count MAPE %", "paper": None, "ours": values["best_rbc_mape"], "note": note}
        ),
        described(
            BASELINE,
            {
                "metric": "HSV baseline WBC accuracy (share found, IoU 0.5)",
                "paper": paper_hsv_wbc_accuracy(),
                "ours": hsv_accuracy,
                "note": note,
            },
        ),
    ]
    return rows


def _none_if_nan(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def worst_counts(frame: pd.DataFrame, cls: str, n: int) -> list[str]:
    """Image ids with the ``n`` largest absolute count errors for class ``cls`` (ties: image order)."""
    rows = frame[frame["class"] == cls].assign(error=lambda f: (f["predicted"] - f["true"]).abs())
    return rows.sort_values("error", ascending=False, kind="stable")["image_id"].head(n).tolist()


def hsv_found_text(found: dict[str, Any]) -> str:
    """One line on the HSV baseline's test WBCs (``found``: the ``WBC`` entry of
    :func:`~bloodlib.detection.metrics.precision_recall_at`) beside the paper's accuracy."""
    return (
        f"HSV baseline: {found['tp']} of {found['ground_truth']} test WBCs found at IoU >= 0.5 "
        f"(accuracy {found['recall']:.2f}; paper: about {paper_hsv_wbc_accuracy():.2f}), "
        f"{found['detections']} boxes drawn"
    )


def tta_predictions(
    models: dict[str, torch.nn.Module | TrainedModel],
    annotations: Sequence[Annotation],
    *,
    views: int,
    iou: float,
    baseline: Sequence[Prediction] | None = None,
    progress: bool = False,
) -> Predictions:
    """Each model's detections fused over ``views`` flipped views
    (:func:`~bloodlib.detection.tta.predict_tta`; a trained model's views come from the model cache
    when it holds them), in the order of ``models``; ``baseline`` (the HSV baseline's detections on
    the same images) is added last under :data:`BASELINE`."""
    from bloodlib.detection.tta import fused, view_predictions

    preds: Predictions = {
        name: fused(
            view_predictions(model, annotations, views=views, progress=progress, desc=name), views=views, iou=iou
        )
        for name, model in models.items()
    }
    if baseline is not None:
        preds[BASELINE] = baseline
    return preds


def pr_curves_by_model(preds: Predictions, annotations: Sequence[Annotation]) -> dict[str, dict]:
    """Per model, :func:`~bloodlib.detection.metrics.pr_curves` (``{class: (recall, precision)}``)."""
    return {name: pr_curves(p, annotations) for name, p in preds.items()}


def thresholds_table(thresholds: dict[str, dict[str, float]]) -> pd.DataFrame:
    """The counting thresholds of :func:`count_thresholds` as a table: one row per model, one column per class."""
    return pd.DataFrame(thresholds).T.rename_axis("model").reset_index()


def image_indices(annotations: Sequence[Annotation], image_ids: Sequence[str]) -> list[int]:
    """Positions in ``annotations`` of ``image_ids``, in the order given."""
    index = {a.image_id: i for i, a in enumerate(annotations)}
    return [index[i] for i in image_ids]


def worst_count_images(frame: pd.DataFrame, annotations: Sequence[Annotation], cls: str, n: int) -> list[int]:
    """Positions in ``annotations`` of the ``n`` images with the largest count errors for ``cls``
    (:func:`worst_counts` of a :func:`count_frames` frame)."""
    return image_indices(annotations, worst_counts(frame, cls, n))


def select_images(
    annotations: Sequence[Annotation], preds: Predictions, indices: Sequence[int]
) -> tuple[list[Annotation], dict[str, list[Prediction]]]:
    """The annotations at ``indices`` and each model's predictions for them (what the figures draw)."""
    return [annotations[i] for i in indices], {name: [p[i] for i in indices] for name, p in preds.items()}


def hsv_failures(preds: Sequence[Prediction], annotations: Sequence[Annotation], *, threshold: float) -> pd.DataFrame:
    """The rows of :func:`wbc_misses` where the HSV baseline misses an annotated WBC
    (``found < true``) or draws a box on no annotated WBC (``spurious > 0``)."""
    misses = wbc_misses(preds, annotations, threshold=threshold)
    return misses[(misses["found"] < misses["true"]) | (misses["spurious"] > 0)]


def inference_time(
    models: dict[str, torch.nn.Module],
    annotations: Sequence[Annotation],
    hsv: HSVThresholds,
    *,
    tta_views: int,
    tta_iou: float,
) -> pd.DataFrame:
    """:func:`~bloodlib.detection.timing.timing_table` on the images of ``annotations`` (read once),
    the HSV baseline with thresholds ``hsv`` timed beside the SSDs."""
    from bloodlib.detection.timing import timing_table

    images = [float_image(a) for a in annotations]
    return timing_table(
        models,
        images,
        hsv=lambda x: detect_wbc(x.mul(255).byte().permute(1, 2, 0).numpy(), hsv),
        tta_views=tta_views,
        tta_iou=tta_iou,
    )


def wall_minutes(started: float, detectors: dict[str, Any]) -> float:
    """Minutes since ``started`` (a :func:`time.perf_counter` value) plus the recorded training time of
    every detector that came from the model cache: the wall time of a run with an empty cache."""
    cached_training_s = sum(d.train_seconds for d in detectors.values() if d.cached)
    return (time.perf_counter() - started + cached_training_s) / 60


def report_metrics(
    *,
    split: str,
    profile: str,
    values: dict[str, Any],
    hsv_accuracy: float,
    table: pd.DataFrame,
    maps: pd.DataFrame,
    counts: pd.DataFrame,
    thresholds: dict[str, dict[str, float]],
    timing: pd.DataFrame,
    detectors: dict[str, Any],
    evidence: dict[str, pd.DataFrame] | None = None,
    overlap_free: dict[str, pd.DataFrame] | None = None,
) -> dict[str, Any]:
    """The ``metrics`` of the notebook's ``metrics.json``: the headline ``values``, every table as records.

    ``evidence``: further tables by name (the selection tables, the models compared), stored as records
    under ``evidence``, followed by the tables of :func:`overlap_free_tables` (``overlap_free``) as
    ``overlap_free_<name>``.
    """
    tables = dict(evidence or {}) | {f"overlap_free_{name}": frame for name, frame in (overlap_free or {}).items()}
    return {
        "evidence": {name: frame.to_dict("records") for name, frame in tables.items()},
        "split": split,
        "profile": profile,
        "headline": values,
        "hsv_wbc_accuracy": hsv_accuracy,
        "table2": table.to_dict("records"),
        "map": maps.to_dict("records"),
        "counts": counts.to_dict("records"),
        "count_thresholds": thresholds,
        "inference_time": timing.to_dict("records"),
        "training": training_table(detectors).to_dict("records"),
    }


# ---- the official test split beside its overlap-free part --------------------------------------------


def subset(preds: Predictions, indices: Sequence[int]) -> Predictions:
    """Each model's predictions at ``indices`` (positions in the images they were made on)."""
    return {name: [p[i] for i in indices] for name, p in preds.items()}


def side_by_side(frames: dict[str, pd.DataFrame], on: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """``frames`` (one per image set) joined on ``on`` in the rows of the first: ``<column> (<set>)`` for each
    column and set (NaN where a later set lacks a row)."""
    out = None
    for label, frame in frames.items():
        part = frame[list(on) + list(columns)].rename(columns={c: f"{c} ({label})" for c in columns})
        out = part if out is None else out.merge(part, on=list(on), how="left")
    return out[list(on) + [f"{c} ({label})" for c in columns for label in frames]]


#: The two image sets of :func:`overlap_free_tables`.
OFFICIAL = "official"
OVERLAP_FREE = "overlap-free"
#: What each table of :func:`overlap_free_tables` shows (the report's captions).
OVERLAP_FREE_CAPTIONS = {
    "table2": "**Table 2**: AP, precision and recall per class",
    "map": "**mAP@0.5** with 95% bootstrap intervals",
    "counts": "**Counting errors** per image",
}


def overlap_free_tables(
    preds: Predictions,
    annotations: Sequence[Annotation],
    keep: Sequence[int],
    thresholds: dict[str, dict[str, float]],
    p: Any,
) -> dict[str, pd.DataFrame]:
    """Table 2, mAP (with bootstrap CIs) and counting errors on all test images (``official``) and on
    the ``keep`` ones (``overlap-free``: no overlap with a training or validation image), side by side,
    at the counting ``thresholds`` and the notebook parameters' (``p``) score threshold, bootstrap
    samples and seed.

    Returns ``{"table2", "map", "counts"}``; every column ``<metric> (<set>)``, the sets :data:`OFFICIAL`
    and :data:`OVERLAP_FREE` (``images (<set>)`` in ``map`` counts their images).
    """
    score_threshold, samples, seed = p.score_threshold, p.bootstrap_samples, p.seed
    sets = {
        OFFICIAL: (preds, list(annotations)),
        OVERLAP_FREE: (subset(preds, keep), [annotations[i] for i in keep]),
    }
    models = {name: p for name, p in preds.items() if name != BASELINE}
    t2, maps, counts = {}, {}, {}
    for label, (p, a) in sets.items():
        t2[label] = table2(p, a, score_threshold=score_threshold, classes_of=BASELINE_CLASSES)
        maps[label] = map_table({n: p[n] for n in models}, a, samples=samples, seed=seed).assign(images=len(a))
        counts[label] = count_table(
            count_frames(p, a, thresholds), samples=samples, seed=seed, classes_of=BASELINE_CLASSES
        )
    return {
        "table2": side_by_side(t2, ["model", "class"], ["AP50", "precision", "recall"]),
        "map": side_by_side(maps, ["model"], ["images", "mAP50", "ci_low", "ci_high"]),
        "counts": side_by_side(counts, ["model", "class"], ["exact", "mae", "mape"]),
    }


def test_tables(
    test_preds: Predictions,
    val_preds: Predictions,
    parts: dict[str, Sequence[Annotation]],
    p: Any,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(table2, map)`` of the test predictions: :func:`table2` at ``p.score_threshold`` and
    :func:`map_table` of the SSDs with ``p.bootstrap_samples`` resamples and their validation mAP
    (``p``: the notebook's parameters)."""
    t2 = table2(test_preds, parts["test"], score_threshold=p.score_threshold, classes_of=BASELINE_CLASSES)
    ssds = [name for name in test_preds if name != BASELINE]
    maps = map_table(
        {name: test_preds[name] for name in ssds},
        parts["test"],
        samples=p.bootstrap_samples,
        seed=p.seed,
        val_preds=val_preds,
        val_annotations=parts["val"],
    )
    return t2, maps


def models_table(descriptions: dict[str, dict[str, str]]) -> pd.DataFrame:
    """:func:`~bloodlib.detection.paper.model_descriptions` as a table: ``model, ours, paper, differs``."""
    return pd.DataFrame([{"model": name, **d} for name, d in descriptions.items()])
