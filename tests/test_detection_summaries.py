"""The notebook-facing helpers of bloodlib.detection.evaluation on hand-made predictions (no data, no training)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from bloodlib.detection import evaluation, selection
from bloodlib.detection.data import Annotation
from bloodlib.detection.paper import model_descriptions
from bloodlib.modelcache import ModelRun
from bloodlib.paper import paper_results
from bloodlib.params import load_params
from bloodlib.training import TrainedModel


def ann(boxes, labels, image_id) -> Annotation:
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


WBC = [[100, 100, 160, 170]]
IMAGES = [ann(WBC, [2], "a"), ann([], [], "b"), ann(WBC, [2], "c")]


def test_hsv_found_text_quotes_the_paper_from_the_transcription():
    text = evaluation.hsv_found_text({"tp": 3, "ground_truth": 4, "recall": 0.75, "detections": 5})
    paper = paper_results("task1_detection")["hsv_segmentation_wbc_accuracy"]
    assert text.startswith("HSV baseline: 3 of 4 test WBCs found")
    assert f"accuracy 0.75; paper: about {paper:.2f}" in text and text.endswith("5 boxes drawn")


def test_hsv_failures_keep_misses_and_spurious_boxes_only():
    preds = [pred([], []), pred([[400, 300, 450, 350]], [2]), pred(WBC, [2])]
    failed = evaluation.hsv_failures(preds, IMAGES, threshold=0.5)
    assert failed["image_id"].tolist() == ["a", "b"]  # a: WBC missed; b: a box on no WBC; c: right
    assert evaluation.image_indices(IMAGES, failed["image_id"][:1]) == [0]


def test_select_images_and_worst_counts_index_the_annotations():
    preds = {"m": [pred([], []), pred([], []), pred(WBC * 3, [2, 2, 2])]}
    images, selected = evaluation.select_images(IMAGES, preds, [2, 0])
    assert [a.image_id for a in images] == ["c", "a"] and len(selected["m"]) == 2
    assert selected["m"][0]["boxes"].shape == (3, 4)
    frames = evaluation.count_frames(preds, IMAGES, {"m": {"RBC": 0.5, "WBC": 0.5, "Platelets": 0.5}})
    assert evaluation.worst_count_images(frames["m"], IMAGES, "WBC", 2) == [2, 0]  # errors 2 and 1


def test_thresholds_table_and_best_model():
    table = evaluation.thresholds_table({"A": {"RBC": 0.3, "WBC": 0.5}, "B": {"RBC": 0.4, "WBC": 0.6}})
    assert table.columns.tolist() == ["model", "RBC", "WBC"] and table["model"].tolist() == ["A", "B"]
    maps = pd.DataFrame(
        [{"model": "A", "mAP50": 0.9, "val_mAP50": 0.6}, {"model": "B", "mAP50": 0.5, "val_mAP50": 0.7}]
    )
    assert evaluation.best_model(maps) == "B"  # validation decides, never test


def test_summary_rows_read_the_paper_numbers():
    maps = pd.DataFrame([{"model": "VGG16-SSD300", "mAP50": 0.5, "ci_low": 0.4, "ci_high": 0.6, "paper_mAP": 0.84}])
    table = pd.DataFrame([{"model": "VGG16-SSD300", "class": "WBC", "precision": 0.9}])
    values = {"best_model": "VGG16-SSD300", "best_platelets_AP50": 0.1, "best_wbc_exact": 0.2, "best_rbc_mape": 30.0}
    note = evaluation.summary_note("official", "quick")
    described = model_descriptions(load_params("01_detection", "cpu"))
    rows = {
        r["metric"]: r for r in evaluation.summary_rows(values, maps, table, 0.3, note, 0.5, descriptions=described)
    }
    paper = paper_results("task1_detection")
    assert rows["VGG16-SSD300 mAP@0.5"]["model"] == "SSD300, VGG16-BN backbone at width 0.25, from scratch, 20 epochs"
    assert rows["VGG16-SSD300 mAP@0.5"]["paper_model"].startswith("SSD300-VGG16, ImageNet-pretrained")
    assert rows["VGG16-SSD300 WBC precision"]["paper"] == paper["vgg16_ssd300"]["precision"]["WBC"]
    assert rows["HSV baseline WBC accuracy (share found, IoU 0.5)"]["paper"] == paper["hsv_segmentation_wbc_accuracy"]
    assert rows["VGG16-SSD300 mAP@0.5"]["note"] == "BCCD official split, test images; profile quick; 95% CI 0.400-0.600"


def test_wall_minutes_add_the_training_time_of_cached_detectors():
    detectors = {
        "a": SimpleNamespace(train_seconds=600.0, cached=True),
        "b": SimpleNamespace(train_seconds=900.0, cached=False),  # trained in this run: already in the clock
    }
    minutes = evaluation.wall_minutes(time.perf_counter() - 60.0, detectors)
    assert 11.0 <= minutes < 11.5


def test_report_metrics_hold_every_table_as_records():
    frame = pd.DataFrame([{"x": 1}])
    run = ModelRun("detection/ssd_vgg16", {}, {})
    detector = TrainedModel("VGG16-SSD300", torch.nn.Linear(2, 1), [{"epoch": 1, "val_mAP": 0.4}], 1, 60.0, True, run)
    metrics = evaluation.report_metrics(
        split="official",
        profile="quick",
        values={"best_model": "VGG16-SSD300"},
        hsv_accuracy=0.5,
        table=frame,
        maps=frame,
        counts=frame,
        thresholds={"VGG16-SSD300": {"WBC": 0.5}},
        timing=frame,
        detectors={"vgg16": detector},
        evidence={"tta_selection": frame},
        overlap_free={"map": frame},
    )
    assert metrics["table2"] == [{"x": 1}] and metrics["headline"]["best_model"] == "VGG16-SSD300"
    assert metrics["evidence"] == {"tta_selection": [{"x": 1}], "overlap_free_map": [{"x": 1}]}
    assert metrics["training"][0]["parameters"] == 3 and metrics["training"][0]["val_mAP50"] == 0.4


def test_model_descriptions_name_every_difference_from_the_paper():
    cpu = model_descriptions(load_params("01_detection", "cpu"))
    assert set(cpu) == {"VGG16-SSD300", "AlexNet-SSD300", "HSV baseline"}
    vgg = cpu["VGG16-SSD300"]
    for words in ("width 0.25", "BatchNorm", "no ImageNet weights", "20 epochs (paper: 150)", "official"):
        assert words in vgg["differs"], words
    paper = model_descriptions(load_params("01_detection", "paper"))["VGG16-SSD300"]
    assert paper["ours"] == "SSD300, VGG16 backbone at width 1, ImageNet-pretrained, 150 epochs"
    assert "width" not in paper["differs"] and "ImageNet" not in paper["differs"].split(";")[0]
    table = evaluation.models_table(cpu)
    assert table.columns.tolist() == ["model", "ours", "paper", "differs"] and len(table) == 3


def test_side_by_side_and_subset():
    a = pd.DataFrame([{"model": "m", "class": "WBC", "AP50": 0.5}, {"model": "m", "class": "RBC", "AP50": 0.4}])
    b = pd.DataFrame([{"model": "m", "class": "WBC", "AP50": 0.6}])
    joined = evaluation.side_by_side({"all": a, "some": b}, ["model", "class"], ["AP50"])
    assert joined.columns.tolist() == ["model", "class", "AP50 (all)", "AP50 (some)"]
    assert joined["AP50 (some)"].isna().tolist() == [False, True]
    assert evaluation.subset({"m": ["x", "y", "z"]}, [2, 0]) == {"m": ["z", "x"]}


def test_overlap_free_tables_put_both_sets_side_by_side():
    preds = {"VGG16-SSD300": [pred(WBC, [2], [0.9]), pred([], []), pred([], [])], "HSV baseline": [pred([], [])] * 3}
    thresholds = {m: {"RBC": 0.5, "WBC": 0.5, "Platelets": 0.5} for m in preds}
    p = SimpleNamespace(score_threshold=0.5, bootstrap_samples=5, seed=0)
    tables = evaluation.overlap_free_tables(preds, IMAGES, [0, 1], thresholds, p)
    maps = tables["map"].set_index("model")
    assert maps.loc["VGG16-SSD300", "mAP50 (official)"] == pytest.approx(51 / 101)  # c's WBC missed
    assert maps.loc["VGG16-SSD300", "mAP50 (overlap-free)"] == 1.0
    wbc = tables["table2"].set_index(["model", "class"]).loc[("VGG16-SSD300", "WBC")]
    assert wbc["recall (official)"] == 0.5 and wbc["recall (overlap-free)"] == 1.0
    assert ("HSV baseline", "WBC") in tables["counts"].set_index(["model", "class"]).index
    assert maps.loc["VGG16-SSD300", "images (official)"] == 3 and maps.loc["VGG16-SSD300", "images (overlap-free)"] == 2
    values = evaluation.headline(
        tables["map"].rename(columns={"mAP50 (official)": "mAP50"}),
        pd.DataFrame([{"model": "VGG16-SSD300", "class": "Platelets", "AP50": 0.0}]),
        pd.DataFrame([{"model": "VGG16-SSD300", "class": c, "exact": 1.0, "mape": 0.0} for c in ("WBC", "RBC")]),
        1.0,
        ["VGG16-SSD300"],
        tables["map"],
    )
    assert values["best_mAP50_overlap_free"] == 1.0
    described = model_descriptions(load_params("01_detection", "cpu"))
    official = tables["map"].rename(columns={"mAP50 (official)": "mAP50", "ci_low (official)": "ci_low"})
    official = official.rename(columns={"ci_high (official)": "ci_high"}).assign(paper_mAP=0.84)
    table = pd.DataFrame([{"model": "VGG16-SSD300", "class": "WBC", "precision": 0.9}])
    rows = evaluation.summary_rows(
        values, official, table, 0.3, "n", 0.5, descriptions=described, overlap_maps=tables["map"]
    )
    free = {r["metric"]: r for r in rows}["VGG16-SSD300 mAP@0.5, test images overlapping no train/val image"]
    assert free["ours"] == 1.0 and free["paper"] == 0.84 and "2 of 3 test images" in free["note"]


def test_epoch_table_marks_the_epoch_kept():
    run = ModelRun("detection/ssd_vgg16", {}, {})
    history = [{"epoch": 1, "val_mAP": 0.2}, {"epoch": 2}, {"epoch": 3, "val_mAP": 0.5}]
    detector = TrainedModel("VGG16-SSD300", torch.nn.Linear(2, 1), history, 3, 60.0, True, run)
    table = selection.epoch_table({"vgg16": detector})
    assert table["epoch"].tolist() == [1, 3] and table["kept"].tolist() == [False, True]


def test_hsv_grid_scores_every_point_and_marks_the_parameters(tmp_path):
    import cv2

    from bloodlib.detection.baseline import HSVThresholds

    image = np.full((480, 640, 3), 230, np.uint8)
    cv2.circle(image, (130, 135), 25, (90, 40, 160), -1)  # a purple nucleus, area ~1,960 px (RGB)
    cv2.circle(image, (400, 300), 10, (90, 40, 160), -1)  # a purple speck, area ~310 px, no WBC
    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    a = Annotation("a", path, 640, 480, np.array([[95, 100, 165, 170]], np.float32), np.array([2], np.int64))
    hsv = HSVThresholds(120, 150, 90, 0, 255, 3, 5, 100, 1.4)
    grid = selection.hsv_grid([a], hsv, {"min_area": (100, 1000)})
    assert grid["min_area"].tolist() == [100, 1000] and grid["params"].tolist() == [True, False]
    assert grid["boxes"].tolist() == [2, 1] and grid["found"].tolist() == [1, 1]
    assert grid["best"].tolist() == [False, True]
    assert "grid's best is min_area 1000" in selection.hsv_grid_text(grid)


def test_train_detectors_keys_each_backbone_by_its_display_name_in_order(monkeypatch):
    from bloodlib.detection import train

    calls = []

    def fake(p, backbone, parts):
        calls.append(backbone)
        return TrainedModel(train.DISPLAY[backbone], torch.nn.Linear(1, 1), [], 1, 1.0, True, None)

    monkeypatch.setattr(train, "train_detector", fake)
    trained = train.train_detectors(load_params("01_detection", "quick"), {})
    assert calls == list(train.BACKBONES) and list(trained) == [train.DISPLAY[b] for b in train.BACKBONES]
