"""Detection and counting metrics on hand-made cases, bootstrap CIs, and the HSV baseline on a drawn cell."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from bloodlib.detection.baseline import HSVThresholds, detect_wbc
from bloodlib.detection.data import Annotation
from bloodlib.detection.metrics import (
    above_threshold,
    average_precision,
    bootstrap_ci,
    choose_count_thresholds,
    count_errors,
    count_frame,
    precision_recall_at,
)


def ann(boxes, labels, image_id="x") -> Annotation:
    return Annotation(
        image_id,
        Path(f"{image_id}.jpg"),
        640,
        480,
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(labels, np.int64),
    )


def pred(boxes, labels, scores=None) -> dict:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    scores = torch.ones(len(boxes)) if scores is None else torch.tensor(scores, dtype=torch.float32)
    return {"boxes": boxes, "labels": torch.tensor(labels, dtype=torch.int64), "scores": scores}


IMAGES = [
    ann([[10, 10, 60, 60], [100, 100, 160, 170], [300, 300, 320, 320]], [1, 2, 3], "a"),
    ann([[200, 50, 260, 110], [400, 300, 500, 420]], [1, 1], "b"),
]


def test_perfect_predictions_give_ap_1():
    perfect = [pred(a.boxes.tolist(), a.labels.tolist()) for a in IMAGES]
    ap = average_precision(perfect, IMAGES)
    assert ap == {"mAP": 1.0, "RBC": 1.0, "WBC": 1.0, "Platelets": 1.0}
    pr = precision_recall_at(perfect, IMAGES, 0.5)
    assert all(pr[c]["precision"] == 1.0 and pr[c]["recall"] == 1.0 for c in pr)


def test_the_fast_ap_backend_gives_pycocotools_numbers():
    """AP_BACKEND (faster_coco_eval) against pycocotools on jittered, partly wrong predictions."""
    from bloodlib.detection.metrics import AP_BACKEND, _coco

    rng = np.random.default_rng(0)
    images, preds = [], []
    for i in range(12):
        n = int(rng.integers(1, 9))
        xy = rng.uniform(0, 560, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(15, 80, (n, 2))], 1)
        labels = rng.integers(1, 4, n)
        images.append(ann(boxes.tolist(), labels.tolist(), f"r{i}"))
        keep = rng.random(n) < 0.8  # some cells missed, some boxes jittered, some spurious boxes and labels
        jittered = boxes[keep] + rng.normal(0, 8, (int(keep.sum()), 4))
        spurious = np.concatenate([xy[:2] + 200, xy[:2] + 240], 1)
        preds.append(
            pred(
                np.concatenate([jittered, spurious]).tolist(),
                np.concatenate([labels[keep], rng.integers(1, 4, len(spurious))]).tolist(),
                rng.uniform(0.01, 1, int(keep.sum()) + len(spurious)).tolist(),
            )
        )
    fast, reference = average_precision(preds, images), average_precision(preds, images, backend="pycocotools")
    assert AP_BACKEND == "faster_coco_eval" and 0 < fast["mAP"] < 1
    assert fast == pytest.approx(reference, abs=1e-6)
    curves = {b: _coco(preds, images, True, b)["precision"] for b in ("faster_coco_eval", "pycocotools")}
    assert torch.allclose(curves["faster_coco_eval"], curves["pycocotools"], atol=1e-6)


def test_boxes_shifted_past_iou_half_give_ap_0():
    # shifting a w-wide box by 0.5 w gives IoU (0.5 w)/(1.5 w) = 1/3 < 0.5
    shifted = []
    for a in IMAGES:
        w = a.boxes[:, 2] - a.boxes[:, 0]
        b = a.boxes.copy()
        b[:, [0, 2]] += 0.5 * w[:, None]
        shifted.append(pred(b.tolist(), a.labels.tolist()))
    ap = average_precision(shifted, IMAGES)
    assert ap["mAP"] == 0.0 and ap["RBC"] == ap["WBC"] == ap["Platelets"] == 0.0
    pr = precision_recall_at(shifted, IMAGES, 0.0)
    assert pr["RBC"] == {"precision": 0.0, "recall": 0.0, "tp": 0, "detections": 3, "ground_truth": 3}


def test_wrong_class_and_ranking_matter():
    # image b: one correct RBC ranked below a false positive -> AP = 0.5 for the two RBCs found at rank 2, 3
    preds = [
        pred(IMAGES[0].boxes.tolist(), [1, 2, 2]),  # the platelet predicted as WBC
        pred([[0, 0, 30, 30], [200, 50, 260, 110], [400, 300, 500, 420]], [1, 1, 1], [0.9, 0.8, 0.7]),
    ]
    ap = average_precision(preds, IMAGES)
    assert ap["Platelets"] == 0.0
    assert 0.5 < ap["RBC"] < 1.0
    assert math.isclose(ap["mAP"], (ap["RBC"] + ap["WBC"] + ap["Platelets"]) / 3)
    pr = precision_recall_at(preds, IMAGES, 0.75)  # keeps the 0.9 false positive and the 0.8 hit on image b
    assert pr["RBC"]["detections"] == 3 and pr["RBC"]["tp"] == 2
    assert math.isclose(pr["RBC"]["precision"], 2 / 3) and math.isclose(pr["RBC"]["recall"], 2 / 3)


def test_class_without_ground_truth_is_nan_and_left_out():
    only_rbc = [ann([[10, 10, 60, 60]], [1])]
    ap = average_precision([pred([[10, 10, 60, 60], [100, 100, 130, 130]], [1, 3])], only_rbc)
    assert ap["RBC"] == 1.0 and math.isnan(ap["Platelets"]) and math.isnan(ap["WBC"]) and ap["mAP"] == 1.0


def test_count_errors_by_hand():
    e = count_errors(np.array([10, 20, 0, 5]), np.array([11, 18, 1, 5]))
    assert e["exact"] == 0.25
    assert e["mae"] == (1 + 2 + 1 + 0) / 4
    assert math.isclose(e["mape"], 100 * (0.1 + 0.1 + 0.0) / 3)  # the image with 0 true cells is left out
    assert e["bias"] == 0.0 and e["total_pct"] == 0.0
    assert count_errors(np.array([10, 10]), np.array([12, 10]))["total_pct"] == 10.0
    with pytest.raises(ValueError):
        count_errors(np.array([1, 2]), np.array([1]))


def test_count_frame_and_threshold_choice():
    preds = [pred([[0, 0, 9, 9]] * 4, [1, 1, 1, 2], [0.9, 0.6, 0.2, 0.7]), pred([[0, 0, 9, 9]] * 2, [1, 3], [0.3, 0.8])]
    truth = [ann([[0, 0, 9, 9]] * 3, [1, 1, 2]), ann([[0, 0, 9, 9]] * 2, [1, 3])]
    frame = count_frame(preds, truth, 0.5)
    rbc = frame[frame["class"] == "RBC"]
    assert rbc["true"].tolist() == [2, 1] and rbc["predicted"].tolist() == [2, 0]
    frame = count_frame(preds, truth, {"RBC": 0.25, "WBC": 0.5, "Platelets": 0.5})
    assert frame[frame["class"] == "RBC"]["predicted"].tolist() == [2, 1]
    chosen = choose_count_thresholds(preds, truth, grid=[0.1, 0.25, 0.5, 0.65])
    assert chosen["RBC"] == 0.25  # counts 2 and 1 exactly


def test_above_threshold_keeps_scores_at_or_above_the_cut_of_each_class():
    p = pred([[0, 0, 9, 9], [1, 1, 8, 8], [2, 2, 7, 7], [3, 3, 6, 6]], [1, 2, 1, 3], [0.5, 0.5, 0.49, 0.9])
    kept = above_threshold(p, 0.5)
    assert kept["labels"].tolist() == [1, 2, 3] and kept["boxes"][:, 0].tolist() == [0, 1, 3]
    kept = above_threshold(p, {"RBC": 0.4, "WBC": 0.6, "Platelets": 0.95})
    assert kept["labels"].tolist() == [1, 1] and kept["scores"].tolist() == pytest.approx([0.5, 0.49])
    empty = above_threshold(pred([], []), {"RBC": 0.1, "WBC": 0.1, "Platelets": 0.1})
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    with pytest.raises(KeyError):
        above_threshold(p, {"RBC": 0.1})  # every class present needs a threshold


def test_bootstrap_ci_brackets_the_mean():
    values = np.random.default_rng(0).normal(10, 1, 200)
    low, high = bootstrap_ci(lambda idx: values[idx].mean(), len(values), samples=300, seed=0)
    assert low < values.mean() < high and high - low < 0.5
    assert bootstrap_ci(lambda idx: 1.0, 5, samples=50, seed=0) == (1.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_ci(lambda idx: 1.0, 5, samples=0, seed=0))


def test_hsv_baseline_finds_a_drawn_nucleus():
    image = np.full((480, 640, 3), (230, 200, 200), np.uint8)  # pinkish background (RGB)
    cv2.circle(image, (300, 200), 40, (110, 70, 200), -1)  # purple nucleus
    cv2.circle(image, (500, 400), 3, (110, 70, 200), -1)  # a speck, removed by the area filter
    t = HSVThresholds(
        hue_low=120,
        hue_high=150,
        sat_low=90,
        val_low=0,
        val_high=255,
        open_kernel=5,
        close_kernel=15,
        min_area=500,
        box_scale=1.0,
    )
    out = detect_wbc(image, t)
    assert out["boxes"].shape == (1, 4) and out["labels"].tolist() == [2] and out["scores"].tolist() == [1.0]
    torch.testing.assert_close(out["boxes"][0], torch.tensor([260.0, 160, 341, 241]), atol=2, rtol=0)
    with pytest.raises(ValueError, match="hue_low"):
        HSVThresholds(
            hue_low=150,
            hue_high=120,
            sat_low=0,
            val_low=0,
            val_high=255,
            open_kernel=1,
            close_kernel=1,
            min_area=0,
            box_scale=1,
        )


def test_report_tables_and_figures_on_hand_made_images(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from PIL import Image

    from bloodlib.detection import evaluation, plots
    from bloodlib.detection.paper import model_descriptions
    from bloodlib.params import load_params
    from bloodlib.report.targets import load_targets, targets_table

    images = []
    for a in IMAGES:
        path = tmp_path / f"{a.image_id}.jpg"
        Image.fromarray(np.full((480, 640, 3), 200, np.uint8)).save(path)
        images.append(Annotation(a.image_id, path, a.width, a.height, a.boxes, a.labels))
    perfect = [pred(a.boxes.tolist(), a.labels.tolist()) for a in images]
    empty = [pred([], []) for _ in images]
    preds = {"VGG16-SSD300": perfect, "HSV baseline": empty}
    table = evaluation.table2(preds, images, score_threshold=0.5, classes_of={"HSV baseline": ["WBC"]})
    assert len(table) == 4 and table.loc[0, "paper_precision"] == 0.79 and math.isnan(table.loc[0, "paper_recall"])
    assert table.set_index(["model", "class"]).loc[("HSV baseline", "WBC"), "AP50"] == 0.0
    maps = evaluation.map_table({"VGG16-SSD300": perfect}, images, samples=5, seed=0)
    assert maps.loc[0, "mAP50"] == 1.0 and maps.loc[0, "paper_mAP"] == 0.84
    thresholds = evaluation.count_thresholds(preds, images)
    frames = evaluation.count_frames(preds, images, thresholds)
    counts = evaluation.count_table(frames, samples=5, seed=0, classes_of={"HSV baseline": ["WBC"]})
    assert counts.set_index(["model", "class"]).loc[("VGG16-SSD300", "RBC"), "exact"] == 1.0
    values = evaluation.headline(maps, table, counts, 3.0, ["VGG16-SSD300"])
    targets = targets_table(values, load_targets("01_detection", "cpu"))
    assert targets["met"].all() and len(targets) == 5
    described = model_descriptions(load_params("01_detection", "cpu"))
    rows = evaluation.summary_rows(values, maps, table, 1.0, "split x", 0.5, descriptions=described)
    assert all(r["differs"] and r["model"] and r["paper_model"] for r in rows)
    rows = {r["metric"]: r for r in rows}
    assert rows["VGG16-SSD300 mAP@0.5"]["paper"] == 0.84 and rows["VGG16-SSD300 mAP@0.5"]["ours"] == 1.0
    assert "score >= 0.5" in rows["VGG16-SSD300 WBC precision"]["note"]
    misses = evaluation.wbc_misses(empty, images, threshold=0.5)
    assert misses["found"].tolist() == [0, 0] and misses["true"].tolist() == [1, 0]
    t = HSVThresholds(
        hue_low=120,
        hue_high=150,
        sat_low=90,
        val_low=0,
        val_high=255,
        open_kernel=5,
        close_kernel=15,
        min_area=500,
        box_scale=1.0,
    )
    for fig in (
        plots.detection_grid(images, preds, {"VGG16-SSD300": 0.5, "HSV baseline": thresholds["HSV baseline"]}),
        plots.hsv_failures(images, empty, t, 0.5),
        plots.hsv_failures([], [], t, 0.5),  # no failure: a line that says so
        plots.count_scatter(frames),
        plots.loss_curves({"m": [{"epoch": 1, "train_loss": 2.0, "train_bbox_regression": 1.0, "val_mAP": 0.5}]}),
    ):
        fig.savefig(tmp_path / "f.png")
        matplotlib.pyplot.close(fig)


def test_headline_picks_the_best_model_on_validation_not_on_test():
    from bloodlib.detection import evaluation

    maps = pd.DataFrame(
        [{"model": "A", "mAP50": 0.9, "val_mAP50": 0.7}, {"model": "B", "mAP50": 0.8, "val_mAP50": 0.8}]
    )
    table = pd.DataFrame([{"model": m, "class": "Platelets", "AP50": ap} for m, ap in (("A", 0.5), ("B", 0.6))])
    counts = pd.DataFrame([{"model": m, "class": c, "exact": 1.0, "mape": 0.0} for m in "AB" for c in ("WBC", "RBC")])
    values = evaluation.headline(maps, table, counts, 1.0, ["A", "B"])
    assert values["best_model"] == "B" and values["best_mAP50"] == 0.8 and values["best_platelets_AP50"] == 0.6
    assert evaluation.headline(maps.drop(columns="val_mAP50"), table, counts, 1.0, ["A", "B"])["best_model"] == "A"
