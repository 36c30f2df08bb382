"""BCCD WBC boxes with their subtype: the un-augmented "what the pipeline will see" set.

BCCD's VOC annotations give WBC boxes (not subtyped); ``blood-cells/dataset-master/labels.csv``
gives the subtype of each image. An image is used when its label names one of the four
classes, possibly repeated ("NEUTROPHIL, NEUTROPHIL"), and its number of WBC boxes equals
the number of labels -- then every box has that class. Basophils (3 images) are left out,
as everywhere in this task. Boxes come from the detection task's VOC parser
(:func:`bloodlib.detection.data.parse_voc`: clipped to the image, zero-size boxes dropped).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bloodlib.classification.data import CLASSES, near_duplicate_groups
from bloodlib.detection.data import CLASSES as DETECTION_CLASSES
from bloodlib.detection.data import parse_voc


def read_voc_boxes(xml_path: Path, name: str = "WBC") -> list[tuple[float, float, float, float]]:
    """``(xmin, ymin, xmax, ymax)`` of every ``name`` box of a BCCD VOC file (the image must exist
    in ``../JPEGImages``); errors as :func:`~bloodlib.detection.data.parse_voc`."""
    annotation = parse_voc(Path(xml_path), Path(xml_path).parent.parent / "JPEGImages")
    wanted = annotation.labels == DETECTION_CLASSES.index(name) + 1
    return [tuple(float(v) for v in box) for box in annotation.boxes[wanted]]


def parse_label(category: object) -> list[str]:
    """``"NEUTROPHIL, EOSINOPHIL"`` -> ``["NEUTROPHIL", "EOSINOPHIL"]``; empty -> ``[]``."""
    if not isinstance(category, str):
        return []
    return [part.strip().upper() for part in category.split(",") if part.strip()]


def bccd_wbc_index(bccd_dir: Path, labels_csv: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per usable WBC box: ``image, path, label, x0, y0, x1, y1, source, group``.

    Returns the table and the count of images left out per reason.
    """
    labels = pd.read_csv(labels_csv)
    rows, skipped = [], {"no label": 0, "mixed or other class": 0, "no annotation": 0, "box count != label count": 0}
    for image, category in zip(labels["Image"], labels["Category"], strict=True):
        names = parse_label(category)
        if not names:
            skipped["no label"] += 1
            continue
        if len(set(names)) != 1 or names[0] not in CLASSES:
            skipped["mixed or other class"] += 1
            continue
        stem = f"BloodImage_{int(image):05d}"
        xml = Path(bccd_dir) / "Annotations" / f"{stem}.xml"
        if not xml.is_file():
            skipped["no annotation"] += 1
            continue
        boxes = read_voc_boxes(xml)
        if len(boxes) != len(names):
            skipped["box count != label count"] += 1
            continue
        for box in boxes:
            rows.append((int(image), Path(bccd_dir) / "JPEGImages" / f"{stem}.jpg", names[0], *box))
    frame = pd.DataFrame(rows, columns=["image", "path", "label", "x0", "y0", "x1", "y1"])
    frame["source"] = frame["image"]
    frame["group"] = near_duplicate_groups(frame["source"].to_numpy())
    return frame, skipped
