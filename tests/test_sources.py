"""Loaders of the sets beyond BCCD: YOLO parsing, bccd-relabel, txl-pbc, their union, PBC's index and split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bloodlib.classification.data import CLASSES as WBC_CLASSES
from bloodlib.classification.sources import pbc_index, pbc_split
from bloodlib.detection.data import CLASSES, AnnotationError
from bloodlib.detection.sources import (
    YOLO_CLASSES,
    cap_by_source,
    general_detection_parts,
    load_bccd_relabel,
    load_txl_pbc,
    parse_yolo,
)
from tests.paths import require_data


@pytest.fixture(scope="module")
def data() -> Path:
    return require_data()


@pytest.fixture(scope="module")
def relabel(data):
    return load_bccd_relabel(data / "BCCD", data / "bccd-relabel")


@pytest.fixture(scope="module")
def txl(data):
    return load_txl_pbc(data / "txl-pbc")


@pytest.fixture
def image(tmp_path) -> Path:
    """A 200x100 JPEG."""
    from PIL import Image

    path = tmp_path / "field.jpg"
    Image.new("RGB", (200, 100)).save(path)
    return path


def write_labels(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "field.txt"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- YOLO parsing


def test_yolo_classes_map_to_detection_labels_by_name(tmp_path, image):
    labels = write_labels(tmp_path, "0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2 0.2\n")
    annotation = parse_yolo(labels, image, source="PBC")
    assert YOLO_CLASSES == ("WBC", "RBC", "Platelets") and CLASSES == ("RBC", "WBC", "Platelets")
    assert annotation.labels.tolist() == [2, 1, 3]  # WBC, RBC, Platelets as 1 + CLASSES.index
    assert annotation.counts() == {"RBC": 1, "WBC": 1, "Platelets": 1}
    assert (annotation.width, annotation.height, annotation.source, annotation.image_id) == (200, 100, "PBC", "field")


def test_yolo_box_in_pixels(tmp_path, image):
    annotation = parse_yolo(write_labels(tmp_path, "1 0.25 0.5 0.1 0.4\n\n"), image)
    # cx 0.25 * 200 = 50, w 0.1 * 200 = 20; cy 0.5 * 100 = 50, h 0.4 * 100 = 40
    np.testing.assert_allclose(annotation.boxes, [[40, 30, 60, 70]], atol=1e-4)
    assert annotation.boxes.dtype == np.float32 and annotation.labels.dtype == np.int64
    assert annotation.source == "BCCD"  # the default


def test_yolo_empty_file_is_an_image_without_boxes(tmp_path, image):
    annotation = parse_yolo(write_labels(tmp_path, ""), image)
    assert annotation.boxes.shape == (0, 4) and annotation.labels.shape == (0,)


def test_yolo_small_overshoot_is_clipped(tmp_path, image):
    annotation = parse_yolo(write_labels(tmp_path, "1 0.95 0.5 0.1004 0.2\n"), image)
    np.testing.assert_allclose(annotation.boxes, [[179.96, 40, 200, 60]], atol=1e-3)


@pytest.mark.parametrize(
    "text,message",
    [
        ("1 0.5 0.5 0.2\n", r"field.txt:1: expected 'class cx cy w h'"),
        ("1 0.5 0.5 0.2 0.2 0.9\n", r"field.txt:1: expected 'class cx cy w h'"),
        ("1 0.5 0.5 0.2 0.2\nRBC 0.5 0.5 0.2 0.2\n", r"field.txt:2: not numbers"),
        ("1.0 0.5 0.5 0.2 0.2\n", r"field.txt:1: not numbers"),
        ("1 0.5 nan 0.2 0.2\n", r"field.txt:1: coordinates .* not all in \[0, 1\]"),
        ("3 0.5 0.5 0.2 0.2\n", r"field.txt:1: class 3 is out of range 0..2"),
        ("-1 0.5 0.5 0.2 0.2\n", r"field.txt:1: class -1 is out of range"),
        ("1 1.5 0.5 0.2 0.2\n", r"field.txt:1: coordinates .* not all in \[0, 1\]"),
        ("1 0.5 0.5 0.2 -0.01\n", r"field.txt:1: coordinates .* not all in \[0, 1\]"),
    ],
)
def test_yolo_malformed_files_name_the_file_and_line(tmp_path, image, text, message):
    with pytest.raises(AnnotationError, match=message):
        parse_yolo(write_labels(tmp_path, text), image)


def test_yolo_zero_size_boxes_are_dropped_with_a_warning(tmp_path, image):
    labels = write_labels(tmp_path, "1 0.5 0.5 0 0.2\n0 0.5 0.5 0.2 0.2\n2 1.0 0.5 0.0004 0.1\n")
    with pytest.warns(UserWarning, match=r"field.txt: dropped 1 zero-size box"):
        annotation = parse_yolo(labels, image)
    # the third box lies at the right edge: clipped to [199.96, 200], positive, kept
    assert annotation.labels.tolist() == [2, 3]


def test_yolo_missing_files(tmp_path, image):
    with pytest.raises(FileNotFoundError, match="label file .*nothing.txt"):
        parse_yolo(tmp_path / "nothing.txt", image)
    with pytest.raises(FileNotFoundError, match="image .*nothing.jpg"):
        parse_yolo(write_labels(tmp_path, ""), tmp_path / "nothing.jpg")


# --------------------------------------------------------------------------- the real sets


def test_bccd_relabel_counts_and_split(data, relabel):
    assert {part: len(items) for part, items in relabel.items()} == {"train": 124, "val": 57}
    official = {line.strip() for line in (data / "BCCD/ImageSets/Main/test.txt").read_text().splitlines()}
    for part, items in relabel.items():
        assert all(a.source == "BCCD" and a.image_id.startswith("BloodImage_") for a in items)
        assert all((a.width, a.height) == (640, 480) and a.image_path.parent.name == "JPEGImages" for a in items)
        assert not {a.image_id for a in items} & official, part
        assert all(len(a.labels) > 0 for a in items)


def test_bccd_relabel_box_matches_the_label_file(relabel):
    first = next(a for a in relabel["train"] if a.image_id == "BloodImage_00094")
    # labels/BloodImage_00094.txt line 1: "0 0.633594 0.479167 0.370312 0.400000" on 640x480
    x1, x2 = (0.633594 - 0.370312 / 2) * 640, (0.633594 + 0.370312 / 2) * 640
    y1, y2 = (0.479167 - 0.4 / 2) * 480, (0.479167 + 0.4 / 2) * 480
    np.testing.assert_allclose(first.boxes[0], [x1, y1, x2, y2], atol=1e-3)
    np.testing.assert_allclose(first.boxes[0], [287.0, 134.0, 524.0, 326.0], atol=1e-2)
    assert first.labels[0] == 1 + CLASSES.index("WBC")
    assert first.counts() == {"RBC": 19, "WBC": 1, "Platelets": 1}


def test_bccd_relabel_refuses_a_split_that_is_not_bccds(data, tmp_path):
    relabel = tmp_path / "bccd-relabel"
    relabel.mkdir()
    rows = (data / "bccd-relabel" / "mapping.csv").read_text().splitlines()
    first = rows[1].split(",")
    moved = ",".join([first[0], "val" if first[1] == "train" else "train", first[2]])
    (relabel / "mapping.csv").write_text("\n".join([rows[0], moved, *rows[2:]]) + "\n")
    with pytest.raises(ValueError, match=rf"{first[0]} is in split .* but BCCD lists it in '{first[1]}'"):
        load_bccd_relabel(data / "BCCD", relabel)


def test_txl_pbc_counts_per_split_and_source(txl):
    counts = {part: Counter(a.source for a in items) for part, items in txl.items()}
    assert counts == {"train": {"PBC": 303, "Raabin": 350}, "val": {"PBC": 82, "Raabin": 100}}
    sizes = Counter((a.source, a.width, a.height) for items in txl.values() for a in items)
    assert set(sizes) == {("Raabin", 575, 575), ("PBC", 360, 363), ("PBC", 366, 369)}
    assert all(a.image_path.parent.name == part for part, items in txl.items() for a in items)
    assert sum(a.counts()["WBC"] for a in txl["train"]) >= len(txl["train"])  # a WBC-centred field each


def test_txl_pbc_refuses_an_unknown_split(data, tmp_path):
    root = tmp_path / "txl-pbc"
    root.mkdir()
    (root / "sources.csv").write_text("split,image,source\ntest,a.jpg,PBC\n")
    with pytest.raises(ValueError, match="a.jpg has split 'test'"):
        load_txl_pbc(root)


def test_general_detection_parts(data, relabel, txl):
    parts = general_detection_parts(data / "BCCD", data / "bccd-relabel", data / "txl-pbc")
    assert {part: len(items) for part, items in parts.items()} == {"train": 124 + 653, "val": 57 + 182}
    assert Counter(a.source for a in parts["val"]) == {"BCCD": 57, "PBC": 82, "Raabin": 100}
    capped = general_detection_parts(
        data / "BCCD", data / "bccd-relabel", data / "txl-pbc", limits={"train": 10, "val": 3}
    )
    assert [a.source for a in capped["val"]] == ["BCCD", "Raabin", "PBC"]
    assert Counter(a.source for a in capped["train"]) == {"BCCD": 4, "Raabin": 3, "PBC": 3}
    assert [a.image_id for a in capped["train"][:4]] == [a.image_id for a in relabel["train"][:4]]
    with pytest.raises(ValueError, match=r"unknown part\(s\) \['test'\]"):
        general_detection_parts(data / "BCCD", data / "bccd-relabel", data / "txl-pbc", limits={"test": 1})


def test_cap_by_source_takes_each_source_in_turn(txl):
    items = txl["val"]
    assert cap_by_source(items, 0) == sorted(items, key=lambda a: a.source != items[0].source)
    assert Counter(a.source for a in cap_by_source(items, 101)) == {"Raabin": 51, "PBC": 50}
    capped = cap_by_source(items, 170)
    assert Counter(a.source for a in capped) == {"PBC": 82, "Raabin": 88}  # PBC runs out at 82
    raabin = [a for a in items if a.source == "Raabin"]
    assert [a.image_id for a in capped[:88]] == [a.image_id for a in raabin[:88]]  # first of each, grouped


# --------------------------------------------------------------------------- PBC (classification)


def test_pbc_index(data):
    index = pbc_index(data / "pbc")
    assert list(index.columns) == ["label", "path", "source", "group"]
    assert len(index) == 2400 and index["label"].value_counts().to_dict() == dict.fromkeys(WBC_CLASSES, 600)
    assert (index["source"] == "PBC").all() and index["group"].is_unique
    assert all(path.is_file() and path.parent.name == label for path, label in zip(index["path"], index["label"]))
    neutrophils = index.loc[index["label"] == "NEUTROPHIL", "path"].map(lambda p: p.name.split("_")[0])
    assert neutrophils.value_counts().to_dict() == {"BNE": 300, "SNE": 300}


def test_pbc_index_missing_class(tmp_path):
    with pytest.raises(FileNotFoundError, match="EOSINOPHIL"):
        pbc_index(tmp_path)


def test_pbc_split_is_seeded_stratified_and_disjoint(data):
    index = pbc_index(data / "pbc")
    split = pbc_split(index, seed=0)
    assert list(split.columns) == ["split", "label", "path", "source", "group"]
    table = split.groupby(["split", "label"]).size().unstack()
    assert table.loc["train"].tolist() == [360] * 4 and table.loc["val"].tolist() == [120] * 4
    assert table.loc["test"].tolist() == [120] * 4
    assert split["split"].tolist() == pbc_split(index, seed=0)["split"].tolist()
    assert split["split"].tolist() != pbc_split(index, seed=1)["split"].tolist()
    assert split.drop(columns="split").equals(index)
    halves = pbc_split(index, seed=0, fractions=(0.5, 0.25, 0.25))["split"].value_counts().to_dict()
    assert halves == {"train": 1200, "val": 600, "test": 600}
    with pytest.raises(ValueError, match="summing to 1"):
        pbc_split(index, seed=0, fractions=(0.6, 0.3, 0.3))
