"""The notebook's evaluation of the whole chain on BCCD's official test split.

- :func:`pseudo_samples` groups the test images into seeded pseudo-samples ("patients");
- :func:`count_frames` / :func:`count_table` compare image-derived counts with the annotation,
  per image and per pseudo-sample (MAPE per class, :func:`bloodlib.detection.metrics.count_errors`);
- :func:`chain_rows` / :func:`chain_confusion` score detection + classification against the
  subtypes of ``blood-cells/dataset-master/labels.csv``: every annotated WBC of an image with a
  single-class label is matched to a detected WBC (IoU >= ``match_iou``, greedy by score) and gets
  the detection's subtype, or ``missed``. The classifier was trained on augmented copies of most
  BCCD images (dataset2 TRAIN), so rows are marked ``seen_in_training`` by source group and the
  unseen ones are reported separately;
- :func:`differential_table` puts each pseudo-sample's detected differential beside the labelled one;
- :func:`precision_check` compares the detector in float32 and bfloat16 (mAP, count errors);
- :func:`summary_rows` / :func:`report_metrics`: the notebook's rows for the report index and its
  ``metrics.json``; the smaller helpers (:func:`models_table`, :func:`analyse_images`, ...) build
  the notebook's other tables and sentences.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torchvision.ops import box_iou

from bloodlib.detection.data import CLASSES, Annotation
from bloodlib.detection.metrics import count_errors
from bloodlib.pipeline.features import SUBTYPES
from bloodlib.pipeline.infer import WBC_LABEL, Classifier, Detector, FieldResult
from bloodlib.pipeline.io import Field
from bloodlib.pipeline.params import PipelineParams
from bloodlib.progress import phase

MISSED = "missed"
#: The ``covid_auc`` keys of ``metrics.json`` -> the feature sets of
#: :func:`bloodlib.pipeline.covid.nested_cv` (its ``features`` column in :func:`~bloodlib.pipeline.covid.cv_table`).
COVID_FEATURE_SETS = {
    "scale_free": "scale-free",
    "scale_free_age_sex": "scale-free + age, sex",
    "task3_table1": "Task 3 table1 (10^9/L, age, sex)",
}


def bccd_parts(p: PipelineParams) -> dict[str, list[Annotation]]:
    """BCCD's validation and test parts of the detector's split: ``val`` as the detection profile
    caps it, ``test`` the first ``p.test_images`` test images (0 = all)."""
    import dataclasses
    import warnings

    from bloodlib.detection.train import load_parts
    from bloodlib.params import load_params

    detection = dataclasses.replace(load_params("01_detection", p.detection_profile), test_images=p.test_images)
    with warnings.catch_warnings():  # BCCD's two zero-size boxes, reported by Task 1
        warnings.simplefilter("ignore", UserWarning)
        return load_parts(detection)


def pseudo_samples(annotations: Sequence[Annotation], size: int, seed: int) -> dict[str, list[Annotation]]:
    """Seeded random groups of ``size`` images (the last may be smaller), named ``pseudo-01``, ..."""
    order = np.random.default_rng(seed).permutation(len(annotations))
    chunks = [order[i : i + size] for i in range(0, len(order), size)]
    return {f"pseudo-{k + 1:02d}": [annotations[i] for i in sorted(chunk)] for k, chunk in enumerate(chunks)}


def as_fields(samples: dict[str, list[Annotation]]) -> dict[str, list[Field]]:
    """The pseudo-samples as :class:`~bloodlib.pipeline.io.Field` lists (what ``aggregate`` takes)."""
    return {name: [Field(name, a.image_path, a.image_id) for a in items] for name, items in samples.items()}


def count_frames(
    samples: dict[str, list[Annotation]], results: dict[str, FieldResult]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(per image, per pseudo-sample)`` frames with columns ``sample, [image_id,] class, true, predicted``."""
    rows = []
    for name, items in samples.items():
        for a in items:
            r = results[a.image_id]
            for k, cls in enumerate(CLASSES):
                rows.append(
                    {
                        "sample": name,
                        "image_id": a.image_id,
                        "class": cls,
                        "true": int((a.labels == k + 1).sum()),
                        "predicted": int((r.labels == k + 1).sum()),
                    }
                )
    images = pd.DataFrame(rows)
    per_sample = images.groupby(["sample", "class"], sort=False)[["true", "predicted"]].sum().reset_index()
    return images, per_sample


def count_table(images: pd.DataFrame, per_sample: pd.DataFrame) -> pd.DataFrame:
    """Per class and level (image, pseudo-sample): counting errors (exact share, MAE, MAPE %, bias, total %)."""
    rows = []
    for level, frame in (("image", images), ("pseudo-sample", per_sample)):
        for cls in CLASSES:
            part = frame[frame["class"] == cls]
            rows.append(
                {
                    "level": level,
                    "class": cls,
                    "n": len(part),
                    "mean_true": part["true"].mean(),
                    "mean_predicted": part["predicted"].mean(),
                    **count_errors(part["true"].to_numpy(), part["predicted"].to_numpy()),
                }
            )
    return pd.DataFrame(rows)


def wbc_truth(
    bccd_dir: Path, blood_cells_dir: Path, annotations: Sequence[Annotation]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Annotated WBC boxes with their subtype for the images of ``annotations`` (via
    :func:`bloodlib.classification.bccd.bccd_wbc_index`): ``image_id, label, x0..y1, group, seen_in_training``
    (the source group has augmented copies in dataset2 TRAIN), and the images left out per reason."""
    from bloodlib.classification.bccd import bccd_wbc_index
    from bloodlib.classification.data import dataset2_index

    index, skipped = bccd_wbc_index(bccd_dir, Path(blood_cells_dir) / "dataset-master" / "labels.csv")
    index["image_id"] = index["image"].map(lambda i: f"BloodImage_{int(i):05d}")
    d2 = dataset2_index(blood_cells_dir)
    train_groups = set(d2.loc[d2["split"] == "TRAIN", "group"])
    out = index[index["image_id"].isin({a.image_id for a in annotations})].copy()
    out["seen_in_training"] = out["group"].isin(train_groups)
    return out.reset_index(drop=True), skipped


def chain_rows(truth: pd.DataFrame, results: dict[str, FieldResult], match_iou: float) -> tuple[pd.DataFrame, int]:
    """One row per annotated WBC: ``image_id, true, predicted`` (a subtype or ``missed``), ``confidence``,
    ``seen_in_training``; and the number of detected WBCs matching no annotated WBC in those images."""
    rows, spurious = [], 0
    for image_id, gt in truth.groupby("image_id", sort=True):
        r = results[image_id]
        wbc = np.flatnonzero(r.labels == WBC_LABEL)
        wbc = wbc[np.argsort(-r.scores[wbc], kind="stable")]
        gt_boxes = torch.tensor(gt[["x0", "y0", "x1", "y1"]].to_numpy(dtype=np.float32))
        iou = box_iou(torch.from_numpy(r.boxes[wbc]), gt_boxes).numpy() if len(wbc) else np.zeros((0, len(gt)))
        taken: dict[int, int] = {}
        for d in range(len(wbc)):
            candidates = [(iou[d, g], g) for g in range(len(gt)) if g not in taken and iou[d, g] >= match_iou]
            if candidates:
                taken[max(candidates)[1]] = d
            else:
                spurious += 1
        for g, row in enumerate(gt.itertuples()):
            d = taken.get(g)
            sub = int(r.subtype[wbc[d]]) if d is not None else -1
            rows.append(
                {
                    "image_id": image_id,
                    "true": row.label.lower(),
                    "predicted": SUBTYPES[sub] if sub >= 0 else MISSED,
                    "confidence": float(r.subtype_prob[wbc[d]].max()) if d is not None else np.nan,
                    "seen_in_training": bool(row.seen_in_training),
                }
            )
    return pd.DataFrame(rows, columns=["image_id", "true", "predicted", "confidence", "seen_in_training"]), spurious


def chain_confusion(rows: pd.DataFrame) -> pd.DataFrame:
    """Counts: rows the annotated subtype, columns the chain's output (four subtypes and ``missed``)."""
    table = pd.crosstab(
        pd.Categorical(rows["true"], categories=list(SUBTYPES)),
        pd.Categorical(rows["predicted"], categories=[*SUBTYPES, MISSED]),
        dropna=False,
    )
    table.index.name, table.columns.name = "annotated", "pipeline"
    return table


def chain_accuracy(rows: pd.DataFrame, level: float = 0.95) -> dict[str, float]:
    """Share of annotated WBCs found and given their subtype (misses count as wrong) with its exact
    (Clopper-Pearson) ``level`` interval ``ci_low``/``ci_high`` -- the WBCs counted as independent trials,
    nearly one per image --, and the share missed."""
    from scipy.stats import binomtest

    n = len(rows)
    right = int((rows["true"] == rows["predicted"]).sum())
    low, high = (np.nan, np.nan)
    if n:
        interval = binomtest(right, n).proportion_ci(confidence_level=level, method="exact")
        low, high = float(interval.low), float(interval.high)
    return {
        "n": n,
        "accuracy": right / n if n else np.nan,
        "ci_low": low,
        "ci_high": high,
        "missed": float((rows["predicted"] == MISSED).mean()) if n else np.nan,
    }


def differential_table(
    samples: dict[str, list[Annotation]], results: dict[str, FieldResult], truth: pd.DataFrame
) -> pd.DataFrame:
    """Per pseudo-sample: the differential (%) of every detected and classified WBC beside the labelled
    differential of the annotated WBCs of its images that have a single-class label (``labelled_wbc`` of them)."""
    rows = []
    for name, items in samples.items():
        ids = [a.image_id for a in items]
        detected = np.concatenate([results[i].subtype[results[i].labels == WBC_LABEL] for i in ids])
        labelled = truth[truth["image_id"].isin(ids)]["label"].str.lower()
        row: dict[str, Any] = {"sample": name, "detected_wbc": len(detected), "labelled_wbc": len(labelled)}
        for k, s in enumerate(SUBTYPES):
            row[f"{s}_pipeline_pct"] = 100 * float((detected == k).mean()) if len(detected) else np.nan
            row[f"{s}_labels_pct"] = 100 * float((labelled == s).mean()) if len(labelled) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def sample_predictions(
    samples: dict[str, list[Annotation]], results: dict[str, FieldResult], covid_model: Any, min_wbc: int
) -> pd.DataFrame:
    """Per pseudo-sample what ``bloodlib analyze`` reports: counts, differential %, ratios, the model's
    features, the COVID-19 probability, its low-confidence flag and the reasons."""
    from bloodlib.pipeline.aggregate import aggregate, covid_flags
    from bloodlib.pipeline.covid import COUNT_PSEUDO

    rows = []
    for name, fields in as_fields(samples).items():
        agg = aggregate(name, "BCCD test split", fields, [results[f.name] for f in fields], COUNT_PSEUDO)
        covid = covid_flags(agg, covid_model.predict(agg.features), min_wbc)
        rows.append(
            {
                "sample": name,
                "images": agg.fields_ok,
                **{c: agg.totals[c] for c in ("rbc", "wbc", "platelets")},
                **{f"{s}_pct": agg.differential_pct[s] for s in SUBTYPES},
                **agg.ratios,
                **{k: v for k, v in agg.features.items() if k in covid_model.features},
                "covid19_probability": covid["probability"],
                "low_confidence": covid["low_confidence"],
                "reasons": "; ".join(covid["reasons"]),
            }
        )
    return pd.DataFrame(rows)


def precision_check(
    models: Any, val: Sequence[Annotation], test: Sequence[Annotation], *, batch_size: int
) -> pd.DataFrame:
    """The detector through the pipeline in float32 and in bfloat16: test mAP@0.5 and count errors at
    thresholds chosen on ``val`` with the same precision, and detection images/s on ``test``."""
    import time

    from bloodlib.detection.metrics import average_precision, choose_count_thresholds, count_frame, count_summary
    from bloodlib.params import PRECISIONS
    from bloodlib.pipeline.infer import detect_paths

    rows = []
    for precision in PRECISIONS:
        detector = models.fast_detector(precision)
        thresholds = choose_count_thresholds(
            detect_paths(detector, [a.image_path for a in val], batch_size=batch_size), val
        )
        started = time.perf_counter()
        preds = detect_paths(detector, [a.image_path for a in test], batch_size=batch_size)
        seconds = time.perf_counter() - started
        ap = average_precision(preds, test)
        counts = count_summary(count_frame(preds, test, thresholds)).set_index("class")
        rows.append(
            {
                "precision": precision,
                "runs_as": detector.precision,
                "mAP50": ap["mAP"],
                **{f"AP50_{c}": ap[c] for c in CLASSES},
                **{f"count_mae_{c}": counts.loc[c, "mae"] for c in CLASSES},
                "images_per_s": len(test) / seconds,
            }
        )
    return pd.DataFrame(rows)


def models_table(models: Any, detector: Detector) -> pd.DataFrame:
    """The detector and the WBC classifier (``models``: :class:`~bloodlib.pipeline.models.PipelineModels`):
    name, training profile, cache key, and the precision each runs in."""
    rows = []
    for role, key, runs_in in (
        ("detector", "detector", detector.precision),
        ("WBC classifier", "classifier", "float32"),
    ):
        info = models.info[key]
        rows.append(
            {
                "role": role,
                "model": info["name"],
                "profile": info["profile"],
                "cache key": info["key"],
                "runs in": runs_in,
            }
        )
    return pd.DataFrame(rows)


def thresholds_table(thresholds: dict[str, float]) -> pd.DataFrame:
    """The counting score threshold of each class, one row."""
    return pd.DataFrame([thresholds])


def pseudo_sample_table(samples: dict[str, list[Annotation]]) -> pd.DataFrame:
    """Per pseudo-sample: its images and their ids (last five digits)."""
    return pd.DataFrame(
        [
            {"sample": name, "images": len(items), "image ids": ", ".join(a.image_id[-5:] for a in items)}
            for name, items in samples.items()
        ]
    )


@phase("evaluation")
def analyse_images(
    annotations: Sequence[Annotation],
    detector: Detector,
    classifier: Classifier,
    thresholds: dict[str, float],
    p: PipelineParams,
    *,
    progress: bool = False,
) -> tuple[dict[str, FieldResult], float]:
    """Every image of ``annotations`` through the pipeline's batched inference
    (:func:`~bloodlib.pipeline.infer.run_fields_of`): the results by image id and the wall time in seconds.

    Raises:
        RuntimeError: an image could not be analysed (its id and the error named).
    """
    from bloodlib.pipeline.infer import run_fields_of

    started = time.perf_counter()
    stream = run_fields_of(p, [a.image_path for a in annotations], detector, classifier, thresholds, progress=progress)
    results = {a.image_id: r for a, r in zip(annotations, stream)}
    seconds = time.perf_counter() - started
    failed = {image_id: r.error for image_id, r in results.items() if not r.ok}
    if failed:
        raise RuntimeError(f"images not analysed: {failed}")
    return results, seconds


def throughput_text(images: int, seconds: float) -> str:
    """One line: images analysed per second."""
    return (
        f"{images} images in {seconds:.1f} s: {images / seconds:.1f} images/s (decode, detection, WBC classification; "
        "the bench in bench/pipeline_speed.py measures it against torchvision's ssd300_vgg16)"
    )


def annotated_examples(
    annotations: Sequence[Annotation], results: dict[str, FieldResult], n: int
) -> tuple[list[Any], list[str]]:
    """The first ``n`` images drawn as ``bloodlib analyze`` draws them, and their ids."""
    from bloodlib.pipeline.annotate import annotate

    shown = [a.image_id for a in annotations[:n]]
    return [annotate(results[i], title=i) for i in shown], shown


def unseen(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`chain_rows` whose source was never seen in training."""
    return rows[~rows["seen_in_training"]]


def chain_accuracy_table(rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`chain_accuracy` of all labelled WBCs and of those whose source was never seen in training."""
    return pd.DataFrame(
        [
            {"WBCs": "all labelled", **chain_accuracy(rows)},
            {"WBCs": "source never seen in training", **chain_accuracy(unseen(rows))},
        ]
    )


def covid_aucs(cv: pd.DataFrame, classifier: str) -> dict[str, float]:
    """``classifier``'s mean nested-CV AUC on each feature set (keys: :data:`COVID_FEATURE_SETS`);
    ``cv``: :func:`~bloodlib.pipeline.covid.cv_table`."""
    auc = cv.set_index(["features", "classifier"])["auc_mean"]
    return {key: float(auc[(features, classifier)]) for key, features in COVID_FEATURE_SETS.items()}


def covid_model_text(aucs: dict[str, float], classifier: str, covid_model: Any) -> str:
    """One Markdown paragraph: the pipeline's COVID-19 model, its AUCs (:func:`covid_aucs`) and how it was refitted."""
    return (
        f"The pipeline's model is **{classifier}**: nested-CV AUC **{aucs['scale_free']:.3f}** on the scale-free "
        f"features, {aucs['scale_free_age_sex']:.3f} with age and sex, against {aucs['task3_table1']:.3f} for the "
        f"same classifier on Task 3's table1 features. Refitted on all {covid_model.n} OSR patients "
        f"({covid_model.n_positive} positive), tuned: {covid_model.params['base']} "
        f"(with age and sex: {covid_model.params['with_age_sex']})."
    )


def summary_rows(
    *,
    images: int,
    samples: int,
    seconds: float,
    counts: pd.DataFrame,
    accuracy: pd.DataFrame,
    aucs: dict[str, float],
    p: PipelineParams,
    profile: str,
    detector_precision: str,
) -> list[dict[str, Any]]:
    """Rows for the report index (the paper has none of these numbers): throughput, count MAPE per
    class, the chain's accuracy on all and on unseen WBCs, and the COVID-19 model's nested-CV AUC.

    ``counts``: :func:`count_table`; ``accuracy``: :func:`chain_accuracy_table`; ``aucs``: :func:`covid_aucs`.
    """
    image_mape = counts[counts["level"] == "image"].set_index("class")["mape"]
    sample_mape = counts[counts["level"] == "pseudo-sample"].set_index("class")["mape"]
    note = (
        f"BCCD official test split ({images} images, {samples} pseudo-samples of {p.pseudo_sample_size}); "
        f"profile {profile}"
    )
    return [
        {
            "metric": "pipeline throughput, images/s (decode + detection + WBC classification)",
            "paper": None,
            "ours": images / seconds,
            "note": f"{note}; {p.num_threads} threads, detector in {detector_precision}",
        },
        *[
            {
                "metric": f"{c} count MAPE % per image / per pseudo-sample",
                "paper": None,
                "ours": float(image_mape[c]),
                "note": f"{note}; per pseudo-sample {sample_mape[c]:.1f}%",
            }
            for c in image_mape.index
        ],
        {
            "metric": "chain accuracy (detected and right subtype), all labelled WBCs",
            "paper": None,
            "ours": float(accuracy.loc[0, "accuracy"]),
            "note": f"{note}; {int(accuracy.loc[0, 'n'])} WBCs, most from sources the classifier trained on; "
            f"95% CI {accuracy.loc[0, 'ci_low']:.3f}-{accuracy.loc[0, 'ci_high']:.3f} (exact binomial)",
        },
        {
            "metric": "chain accuracy, WBCs from sources never seen in training",
            "paper": None,
            "ours": float(accuracy.loc[1, "accuracy"]),
            "note": f"{note}; {int(accuracy.loc[1, 'n'])} WBCs; "
            f"95% CI {accuracy.loc[1, 'ci_low']:.3f}-{accuracy.loc[1, 'ci_high']:.3f} (exact binomial)",
        },
        {
            "metric": f"COVID-19 nested-CV AUC, scale-free features ({p.covid_classifier})",
            "paper": None,
            "ours": aucs["scale_free"],
            "note": f"OSR; Task 3 table1 features, same splits: {aucs['task3_table1']:.3f}; "
            f"with age and sex: {aucs['scale_free_age_sex']:.3f}",
        },
    ]


def report_metrics(
    *,
    profile: str,
    images: int,
    seconds: float,
    models: Any,
    counts: pd.DataFrame,
    accuracy: pd.DataFrame,
    confusion_all: pd.DataFrame,
    spurious: int,
    cv: pd.DataFrame,
    aucs: dict[str, float],
    predictions: pd.DataFrame,
    precision: pd.DataFrame,
) -> dict[str, Any]:
    """The ``metrics`` of the notebook's ``metrics.json``: sizes, throughput, the models, every table."""
    return {
        "profile": profile,
        "images": images,
        "images_per_second": images / seconds,
        "models": models.info,
        "count_thresholds": models.thresholds,
        "counts": counts.to_dict("records"),
        "chain_accuracy": accuracy.to_dict("records"),
        "chain_confusion_all": confusion_all.to_dict(),
        "spurious_wbc_detections": spurious,
        "covid_nested_cv": cv.to_dict("records"),
        "covid_auc": aucs,
        "pseudo_samples": predictions.to_dict("records"),
        "precision_check": precision.to_dict("records"),
    }


__all__ = [
    "COVID_FEATURE_SETS",
    "MISSED",
    "analyse_images",
    "annotated_examples",
    "as_fields",
    "bccd_parts",
    "chain_accuracy",
    "chain_accuracy_table",
    "chain_confusion",
    "chain_rows",
    "count_frames",
    "count_table",
    "covid_aucs",
    "covid_model_text",
    "differential_table",
    "models_table",
    "precision_check",
    "pseudo_sample_table",
    "pseudo_samples",
    "report_metrics",
    "sample_predictions",
    "summary_rows",
    "thresholds_table",
    "throughput_text",
    "unseen",
    "wbc_truth",
]
