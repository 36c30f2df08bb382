"""Notebook 05's measurements: every number is per source, against complete labels.

- :func:`sources_table`: fields and boxes per split and source;
- :func:`scale_check`: the RBC-size estimate against labelled RBC sizes, also after rescaling fields;
- :func:`detection_by_source`: AP@0.5 per class with a bootstrap interval over fields;
- :func:`cross_fitted_counts`: count errors per class and source, with thresholds chosen on the other
  half of the validation fields (two folds), so no field is counted with thresholds fitted on it;
- :func:`rescaled_counts`: the same fields shrunk or enlarged (synthetic magnification change);
- :func:`cross_source_table`: single-source detectors on every source (train on A, test on B);
- :func:`colour_scores`: the out-of-distribution colour score of fields per source and of altered fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from bloodlib.detection.cached import cached_detections
from bloodlib.detection.data import CLASSES, Annotation, read_image
from bloodlib.detection.metrics import (
    Prediction,
    above_threshold,
    average_precision,
    choose_count_thresholds,
    count_errors,
    count_frame,
)
from bloodlib.detection.resampling import map_interval
from bloodlib.detection.scaled import ScaleSpec, label_rbc_diameter, predict_scaled
from bloodlib.imaging.scale import estimate_rbc_diameter
from bloodlib.progress import phase

if TYPE_CHECKING:
    from bloodlib.training import TrainedModel

SOURCE_ORDER = ("BCCD", "PBC", "Raabin")


def _rgb(a: Annotation) -> np.ndarray:
    return read_image(a.image_path).permute(1, 2, 0).numpy()


def sources_table(parts: dict[str, list[Annotation]]) -> pd.DataFrame:
    """Fields, boxes per class and the median labelled RBC diameter per split and source."""
    rows = []
    for part, items in parts.items():
        for source in SOURCE_ORDER:
            chosen = [a for a in items if a.source == source]
            if not chosen:
                continue
            counts = [a.counts() for a in chosen]
            sizes = sorted({(a.width, a.height) for a in chosen})
            rows.append(
                {
                    "split": part,
                    "source": source,
                    "fields": len(chosen),
                    "field sizes": ", ".join(f"{w}x{h}" for w, h in sizes[:3]),
                    **{name: sum(c[name] for c in counts) for name in CLASSES},
                    "RBC diameter (px, median)": float(np.nanmedian([label_rbc_diameter(a) for a in chosen])),
                }
            )
    return pd.DataFrame(rows)


def scale_check(annotations: Sequence[Annotation], factors: Sequence[float]) -> pd.DataFrame:
    """Per field and scale factor: the estimated and the labelled RBC diameter (:func:`bloodlib.imaging.scale.scale_errors`)."""
    from bloodlib.imaging.scale import scale_errors

    usable = [a for a in annotations if np.isfinite(label_rbc_diameter(a))]
    return scale_errors(
        (_rgb(a) for a in usable),
        [label_rbc_diameter(a) for a in usable],
        sources=[a.source for a in usable],
        scales=(1.0, *factors),
    )


def estimated_diameters(annotations: Sequence[Annotation]) -> list[float]:
    """Each field's estimated RBC diameter (pixels); a field without measurable cells gets NaN."""
    return [estimate_rbc_diameter(_rgb(a)).diameter_px for a in annotations]


@phase("evaluation")
def predict(
    model: torch.nn.Module | TrainedModel,
    annotations: Sequence[Annotation],
    diameters: Sequence[float],
    spec: ScaleSpec,
    *,
    progress: bool = False,
    desc: str = "detect",
) -> list[Prediction]:
    """:func:`~bloodlib.detection.scaled.predict_scaled` of every field at its diameter; a field with a NaN
    diameter is fitted into one tile, as the pipeline does. A trained model's detections come from
    the model cache when it holds them (:mod:`~bloodlib.detection.cached`)."""
    from tqdm.auto import tqdm

    def compute(network: torch.nn.Module) -> list[list[Prediction]]:
        out = []
        for a, d in tqdm(list(zip(annotations, diameters)), desc=desc, leave=False, disable=not progress):
            if not np.isfinite(d):
                d = spec.one_tile_diameter(a.width, a.height)
            out.append([predict_scaled(network, read_image(a.image_path), d, spec=spec)])
        return out

    inputs = {"diameters": [float(d) for d in diameters], "spec": dataclasses.asdict(spec)}
    return [v[0] for v in cached_detections(model, "scaled", annotations, inputs, compute)]


def _by_source(annotations: Sequence[Annotation]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, a in enumerate(annotations):
        groups.setdefault(a.source, []).append(i)
    return {s: groups[s] for s in SOURCE_ORDER if s in groups}


def detection_by_source(
    preds: Sequence[Prediction], annotations: Sequence[Annotation], *, samples: int, seed: int
) -> pd.DataFrame:
    """Per source (and all together): AP@0.5 per class, mAP and its 95 % bootstrap interval over fields."""
    rows = []
    groups = {**_by_source(annotations), "all": list(range(len(annotations)))}
    for source, idx in groups.items():
        p, a = [preds[i] for i in idx], [annotations[i] for i in idx]
        ap = average_precision(p, a)
        low, high = map_interval(p, a, samples=samples, seed=seed)
        rows.append(
            {
                "source": source,
                "fields": len(a),
                **{f"AP50 {c}": ap[c] for c in CLASSES},
                "mAP50": ap["mAP"],
                "ci_low": low,
                "ci_high": high,
            }
        )
    return pd.DataFrame(rows)


def cross_fitted_counts(
    preds: Sequence[Prediction], annotations: Sequence[Annotation], *, seed: int
) -> tuple[pd.DataFrame, list[dict[str, float]]]:
    """Per-field true and predicted counts, each fold counted with thresholds chosen
    (:func:`~bloodlib.detection.metrics.choose_count_thresholds`) on the other fold; folds split every
    source in half at random. Returns the frame (with ``source``) and the two folds' thresholds."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(annotations), int)
    for idx in _by_source(annotations).values():
        fold[rng.permutation(idx)[: len(idx) // 2]] = 1
    frames, chosen = [], []
    for k in (0, 1):
        fit = [i for i in range(len(annotations)) if fold[i] != k]
        use = [i for i in range(len(annotations)) if fold[i] == k]
        thresholds = choose_count_thresholds([preds[i] for i in fit], [annotations[i] for i in fit])
        frame = count_frame([preds[i] for i in use], [annotations[i] for i in use], thresholds)
        frames.append(frame.assign(source=np.repeat([annotations[i].source for i in use], len(CLASSES))))
        chosen.append(thresholds)
    return pd.concat(frames, ignore_index=True), chosen


def count_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per source and class: :func:`~bloodlib.detection.metrics.count_errors` (``mape`` over fields with
    at least one such cell) of a :func:`cross_fitted_counts` frame."""
    rows = []
    for source in [s for s in SOURCE_ORDER if s in set(frame["source"])]:
        for c in CLASSES:
            part = frame[(frame["source"] == source) & (frame["class"] == c)]
            errors = count_errors(part["true"].to_numpy(), part["predicted"].to_numpy())
            rows.append({"source": source, "class": c, "fields": len(part), "mean_true": part["true"].mean(), **errors})
    return pd.DataFrame(rows)


def _rescaled(a: Annotation, factor: float) -> np.ndarray:
    """The field of ``a`` resized by ``factor`` (1 = as it is), RGB uint8."""
    import cv2

    rgb = _rgb(a)
    if factor == 1.0:
        return rgb
    size = (round(a.width * factor), round(a.height * factor))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


@phase("evaluation")
def rescaled_counts(
    model: torch.nn.Module | TrainedModel,
    annotations: Sequence[Annotation],
    thresholds: dict[str, float],
    spec: ScaleSpec,
    factors: Sequence[float],
    *,
    progress: bool = False,
) -> pd.DataFrame:
    """RBC count errors per source when every field is resized by each factor (1 = as it is): a
    synthetic change of magnification, the scale estimated on the resized field. A trained model's
    detections come from the model cache when it holds them."""
    rows = []
    for factor in (1.0, *factors):

        def compute(network: torch.nn.Module, factor: float = factor) -> list[list[Prediction]]:
            out = []
            for a in annotations:
                rgb = _rescaled(a, factor)
                d = estimate_rbc_diameter(rgb).diameter_px
                if not np.isfinite(d):
                    d = spec.one_tile_diameter(rgb.shape[1], rgb.shape[0])
                out.append([predict_scaled(network, torch.from_numpy(rgb).permute(2, 0, 1), d, spec=spec)])
            return out

        inputs = {"factor": factor, "spec": dataclasses.asdict(spec)}
        preds = [v[0] for v in cached_detections(model, "rescaled", annotations, inputs, compute)]
        true = [a.counts()["RBC"] for a in annotations]
        pred = [int((above_threshold(p, thresholds)["labels"] == 1 + CLASSES.index("RBC")).sum()) for p in preds]
        frame = pd.DataFrame({"source": [a.source for a in annotations], "true": true, "pred": pred})
        for source, part in frame.groupby("source", sort=False):
            errors = count_errors(part["true"].to_numpy(), part["pred"].to_numpy())
            rows.append(
                {
                    "factor": factor,
                    "source": source,
                    "fields": len(part),
                    "RBC mape": errors["mape"],
                    "RBC mae": errors["mae"],
                    "RBC bias": errors["bias"],
                }
            )
    return pd.DataFrame(rows)


@phase("evaluation")
def cross_source_table(
    detectors: dict[str, torch.nn.Module | TrainedModel],
    val: Sequence[Annotation],
    diameters: Sequence[float],
    spec: ScaleSpec,
    *,
    progress: bool = False,
) -> pd.DataFrame:
    """Train on A (``detectors``: name -> model, e.g. ``"BCCD"`` or ``"all"``), test on each source B's
    validation fields: mAP@0.5, AP per class and RBC count MAPE with thresholds chosen on A's own
    validation fields (what deploying a model trained on A alone would do)."""
    rows = []
    groups = _by_source(val)
    for name, model in detectors.items():
        preds = predict(model, val, diameters, spec, progress=progress, desc=f"trained on {name}")
        own = [i for i, a in enumerate(val) if name == "all" or a.source in name.split("+")]
        thresholds = choose_count_thresholds([preds[i] for i in own], [val[i] for i in own])
        for source, idx in groups.items():
            p, a = [preds[i] for i in idx], [val[i] for i in idx]
            ap = average_precision(p, a)
            counts = count_frame(p, a, thresholds)
            counts = counts[counts["class"] == "RBC"]
            rbc = count_errors(counts["true"].to_numpy(), counts["predicted"].to_numpy())
            rows.append(
                {
                    "trained on": name,
                    "tested on": source,
                    "mAP50": ap["mAP"],
                    **{f"AP50 {c}": ap[c] for c in CLASSES},
                    "RBC count mape": rbc["mape"],
                }
            )
    return pd.DataFrame(rows)


def _tinted(rgb: np.ndarray, kind: str) -> np.ndarray:
    if kind == "grayscale":
        grey = rgb.mean(axis=2, keepdims=True)
        return np.repeat(grey, 3, axis=2).astype(np.uint8)
    if kind == "yellow background":
        return np.clip(rgb.astype(float) * [1.0, 0.95, 0.55] + [0, 0, 0], 0, 255).astype(np.uint8)
    raise ValueError(f"unknown alteration {kind!r}")


def colour_scores(
    annotations: Sequence[Annotation], score: Callable[[dict[str, float]], float], alterations: Sequence[str]
) -> pd.DataFrame:
    """The out-of-distribution colour score of every field, as it is and altered (``"grayscale"``,
    ``"yellow background"``): one row per field and version."""
    from bloodlib.imaging.stain import field_colour_stats

    rows = []
    for a in annotations:
        rgb = _rgb(a)
        for kind in ("as is", *alterations):
            image = rgb if kind == "as is" else _tinted(rgb, kind)
            rows.append({"source": a.source, "version": kind, "score": score(field_colour_stats(image))})
    return pd.DataFrame(rows)


def flag_rates(scores: pd.DataFrame, limit: float) -> pd.DataFrame:
    """Share of fields whose colour score exceeds ``limit``, per source and version."""
    table = scores.assign(flagged=scores["score"] > limit)
    return (
        table.groupby(["source", "version"], sort=False)
        .agg(fields=("score", "size"), flagged=("flagged", "mean"))
        .reset_index()
    )


def headline(
    detection: pd.DataFrame,
    counts: pd.DataFrame,
    rescaled: pd.DataFrame,
    test_map: float,
    classifier: pd.DataFrame,
    minutes: dict[str, float],
) -> dict[str, Any]:
    """The numbers the targets speak of (``params/<profile>/targets.yaml``, notebook 05)."""
    by = counts.set_index(["source", "class"])
    sources = [s for s in SOURCE_ORDER if s in set(counts["source"])]
    wbc_exact = {s: float(by.loc[(s, "WBC"), "exact"]) for s in sources}
    out = {
        "worst_source_rbc_mape": max(float(by.loc[(s, "RBC"), "mape"]) for s in sources),
        "worst_source_platelet_mape": max(
            float(by.loc[(s, "Platelets"), "mape"]) for s in sources if np.isfinite(by.loc[(s, "Platelets"), "mape"])
        ),
        "worst_source_wbc_exact": min(wbc_exact.values()),
        "worst_source_map50": float(detection[detection["source"] != "all"]["mAP50"].min()),
        "bccd_test_map50": test_map,
        "worst_rescaled_rbc_mape": float(rescaled[rescaled["factor"] != 1.0]["RBC mape"].max()),
        "worst_source_wbc_accuracy": float(classifier["accuracy"].min()),
        "general_training_minutes": minutes["detector"] + minutes["classifier"],
    }
    return out


def bccd_official_test() -> list[Annotation]:
    """BCCD's 72 official test images with BCCD's own (incomplete) boxes -- never used for training."""
    import warnings

    from bloodlib.data import locate
    from bloodlib.detection.data import load_split

    with warnings.catch_warnings():  # BCCD's zero-size boxes, reported by Task 1
        warnings.simplefilter("ignore", UserWarning)
        return load_split(locate("BCCD"), "official", 0)["test"]


def example_fields(annotations: Sequence[Annotation], per_source: int, seed: int) -> list[int]:
    """``per_source`` seeded random fields of each source (indices into ``annotations``)."""
    rng = np.random.default_rng(seed)
    picks = []
    for idx in _by_source(annotations).values():
        picks += sorted(rng.choice(idx, size=min(per_source, len(idx)), replace=False).tolist())
    return picks


def report_metrics(
    values: dict[str, Any], minutes: dict[str, float], thresholds: dict[str, float], stain: Any
) -> dict[str, Any]:
    """The ``metrics`` of notebook 05's ``metrics.json``: the :func:`headline` ``values``, the training
    ``minutes``, the deployed counting ``thresholds`` and the classifier's stain reference (``stain``:
    its ``to_dict()``, or None without stain normalisation)."""
    return {
        "headline": values,
        "minutes": minutes,
        "thresholds": thresholds,
        "stain": None if stain is None else stain.to_dict(),
    }


def summary_rows(values: dict[str, Any], detection: pd.DataFrame, counts: pd.DataFrame, note: str) -> list[dict]:
    """The report index's rows of notebook 05 (the paper evaluated on BCCD only: its VGG16-SSD300 mAP
    stands beside ours on BCCD's test images)."""
    from bloodlib.detection.paper import paper_table2

    rows = [
        {
            "metric": f"general detector mAP@0.5, {r.source} validation fields",
            "paper": None,
            "ours": r.mAP50,
            "note": f"{note}; 95% CI {r.ci_low:.3f}-{r.ci_high:.3f}",
        }
        for r in detection.itertuples()
        if r.source != "all"
    ]
    rbc = counts[counts["class"] == "RBC"]
    rows += [
        {
            "metric": f"RBC count MAPE %, {r.source} validation fields (complete labels)",
            "paper": None,
            "ours": r.mape,
            "note": f"{note}; thresholds chosen on the other half of the validation fields",
        }
        for r in rbc.itertuples()
    ]
    rows.append(
        {
            "metric": "general detector mAP@0.5, BCCD official test (BCCD's own boxes)",
            "paper": paper_table2()["VGG16-SSD300"]["mAP"],
            "ours": values["bccd_test_map50"],
            "note": f"{note}; paper: its own 75/25 split, pretrained",
        }
    )
    rows.append(
        {
            "metric": "WBC subtype accuracy, worst source's held-out cells",
            "paper": None,
            "ours": values["worst_source_wbc_accuracy"],
            "note": note,
        }
    )
    return rows
