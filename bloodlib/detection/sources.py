"""Detection data beyond BCCD's own VOC boxes: YOLO label files and the sets that use them.

Two registered data sets (``bloodlib data list``) hold YOLO labels from TXL-PBC (Gan & Li 2024):

- ``bccd-relabel``: complete boxes for the 181 BCCD images in BCCD's official train (124) and
  val (57) lists, one ``labels/<BCCD id>.txt`` each; the images are BCCD's ``JPEGImages``.
  ``mapping.csv`` gives each image's BCCD split (:func:`load_bccd_relabel`).
- ``txl-pbc``: 835 fields from the PBC and Raabin-WBC sets (train 653, val 182),
  ``images/<split>/<name>.jpg`` with ``labels/<split>/<stem>.txt``; ``sources.csv`` names each
  image's source (:func:`load_txl_pbc`).

A YOLO label file has one line per box, ``class cx cy w h``: the box centre and size as
fractions of the image width and height, classes ``0 WBC, 1 RBC, 2 Platelets``
(:data:`YOLO_CLASSES`) -- not the order of :data:`bloodlib.detection.data.CLASSES`; labels are
mapped by name to ``1 + CLASSES.index(name)``. Parsing is strict: a malformed line, a class out
of range or a coordinate outside [0, 1] (beyond :data:`COORDINATE_TOLERANCE`) raises
:class:`~bloodlib.detection.data.AnnotationError` naming the file and line; boxes are clipped to
the image, and boxes of zero size are dropped with a warning naming the file.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np

from bloodlib.detection.data import CLASSES, Annotation, AnnotationError, split_ids

#: YOLO class index -> class name, as in TXL-PBC's ``data.yaml``.
YOLO_CLASSES: tuple[str, ...] = ("WBC", "RBC", "Platelets")
#: How far outside [0, 1] a normalised coordinate may lie (rounding in the label files).
COORDINATE_TOLERANCE = 1e-3
#: The parts these sets provide: there is no test part (held out).
PARTS = ("train", "val")
#: Image sources of ``txl-pbc/sources.csv``.
TXL_SOURCES = ("PBC", "Raabin")


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image, read from its header.

    Raises:
        FileNotFoundError: the image does not exist.
    """
    from PIL import Image

    if not Path(path).is_file():
        raise FileNotFoundError(f"image {path} not found")
    with Image.open(path) as image:
        return image.size


def _yolo_line(fields: list[str], label_path: Path, line_number: int) -> tuple[int, np.ndarray]:
    """Class index and ``[cx, cy, w, h]`` of one split line, checked."""
    where = f"{label_path}:{line_number}"
    if len(fields) != 5:
        raise AnnotationError(f"{where}: expected 'class cx cy w h', got {' '.join(fields)!r}")
    try:
        index = int(fields[0])
        values = np.array([float(v) for v in fields[1:]], dtype=np.float64)
    except ValueError:
        raise AnnotationError(f"{where}: not numbers: {' '.join(fields)!r}") from None
    if not 0 <= index < len(YOLO_CLASSES):
        raise AnnotationError(f"{where}: class {index} is out of range 0..{len(YOLO_CLASSES) - 1}")
    if (
        not np.isfinite(values).all()
        or (values < -COORDINATE_TOLERANCE).any()
        or (values > 1 + COORDINATE_TOLERANCE).any()
    ):
        raise AnnotationError(f"{where}: coordinates {fields[1:]} are not all in [0, 1]")
    return index, values


def parse_yolo(label_path: Path, image_path: Path, *, image_id: str | None = None, source: str = "BCCD") -> Annotation:
    """One YOLO label file as an :class:`~bloodlib.detection.data.Annotation`.

    Args:
        label_path: the ``.txt`` file (an empty file is an image without boxes).
        image_path: its image (read for its size only).
        image_id: the annotation's id; default the label file's stem.
        source: the data set the image comes from.

    Returns:
        boxes ``(N, 4)`` float32 ``[x1, y1, x2, y2]`` pixels, clipped to the image;
        labels ``(N,)`` int64 ``1 + CLASSES.index(name)``.

    Raises:
        AnnotationError: a malformed line, a class out of range, a coordinate outside [0, 1]
            (the message names the file and line).
        FileNotFoundError: the label file or the image does not exist.
    """
    label_path = Path(label_path)
    if not label_path.is_file():
        raise FileNotFoundError(f"label file {label_path} not found")
    width, height = image_size(image_path)
    scale = np.array([width, height, width, height], dtype=np.float64)
    boxes, labels, dropped = [], [], 0
    for line_number, line in enumerate(label_path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        index, (cx, cy, w, h) = _yolo_line(fields, label_path, line_number)
        box = np.clip(np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]), 0.0, 1.0) * scale
        if box[2] <= box[0] or box[3] <= box[1]:
            dropped += 1
            continue
        boxes.append(box)
        labels.append(CLASSES.index(YOLO_CLASSES[index]) + 1)
    if dropped:
        warnings.warn(f"{label_path}: dropped {dropped} zero-size box(es)", stacklevel=2)
    return Annotation(
        image_id=image_id or label_path.stem,
        image_path=Path(image_path),
        width=width,
        height=height,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        source=source,
    )


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV file that must have ``columns``."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(columns) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        return list(reader)


def load_bccd_relabel(bccd_root: Path, relabel_root: Path) -> dict[str, list[Annotation]]:
    """BCCD's train and val images with ``bccd-relabel``'s complete boxes (source ``"BCCD"``).

    Each part lists its images in the order of BCCD's ``ImageSets/Main`` list (124 train,
    57 val: the images TXL-PBC re-annotated).

    Args:
        bccd_root: the ``BCCD`` data set folder (for ``JPEGImages`` and the official lists).
        relabel_root: the ``bccd-relabel`` data set folder.

    Raises:
        ValueError: ``mapping.csv`` names an image whose split is not its BCCD split, or an image
            outside BCCD's train/val lists (the test images must stay unseen).
        AnnotationError, FileNotFoundError: see :func:`parse_yolo`.
    """
    bccd_root, relabel_root = Path(bccd_root), Path(relabel_root)
    mapping = _read_csv(relabel_root / "mapping.csv", ("bccd_image", "bccd_split"))
    split_of = {row["bccd_image"]: row["bccd_split"] for row in mapping}
    official = split_ids(bccd_root, "official", seed=0)
    official_split = {image: part for part, ids in official.items() for image in ids}
    for image, part in split_of.items():
        if official_split.get(image) != part or part not in PARTS:
            raise ValueError(
                f"{relabel_root / 'mapping.csv'}: {image} is in split {part!r}, "
                f"but BCCD lists it in {official_split.get(image)!r}; expected train or val"
            )
    return {
        part: [
            parse_yolo(relabel_root / "labels" / f"{image}.txt", bccd_root / "JPEGImages" / f"{image}.jpg")
            for image in official[part]
            if image in split_of
        ]
        for part in PARTS
    }


def load_txl_pbc(root: Path) -> dict[str, list[Annotation]]:
    """The ``txl-pbc`` fields of each part (653 train, 182 val), sorted by image name.

    Each annotation's ``source`` is ``"PBC"`` or ``"Raabin"`` (``sources.csv``); its
    ``image_id`` is the image's file stem (a UUID).

    Raises:
        ValueError: ``sources.csv`` names a split other than train/val or an unknown source.
        AnnotationError, FileNotFoundError: see :func:`parse_yolo`.
    """
    root = Path(root)
    rows = _read_csv(root / "sources.csv", ("split", "image", "source"))
    for row in rows:
        if row["split"] not in PARTS or row["source"] not in TXL_SOURCES:
            raise ValueError(
                f"{root / 'sources.csv'}: {row['image']} has split {row['split']!r} and source {row['source']!r}; "
                f"expected one of {PARTS} and one of {TXL_SOURCES}"
            )
    return {
        part: [
            parse_yolo(
                root / "labels" / part / f"{Path(row['image']).stem}.txt",
                root / "images" / part / row["image"],
                source=row["source"],
            )
            for row in sorted(rows, key=lambda row: row["image"])
            if row["split"] == part
        ]
        for part in PARTS
    }


def cap_by_source(annotations: list[Annotation], limit: int) -> list[Annotation]:
    """At most ``limit`` annotations (0 = all), shared out over the sources in turn.

    Sources take one place each in the order they first appear until ``limit`` is reached, so
    a small cap still holds every source; each source keeps its first annotations, in order,
    and the result stays grouped by source.
    """
    groups: dict[str, list[Annotation]] = {}
    for annotation in annotations:
        groups.setdefault(annotation.source, []).append(annotation)
    if limit <= 0 or limit >= len(annotations):
        return [a for group in groups.values() for a in group]
    taken = dict.fromkeys(groups, 0)
    while sum(taken.values()) < limit:
        for source, group in groups.items():
            if taken[source] < len(group) and sum(taken.values()) < limit:
                taken[source] += 1
    return [a for source, group in groups.items() for a in group[: taken[source]]]


def general_detection_parts(
    bccd_root: Path, relabel_root: Path, txl_root: Path, *, limits: dict[str, int] | None = None
) -> dict[str, list[Annotation]]:
    """Train and val parts for a detector that must count beyond BCCD.

    ``train`` = ``bccd-relabel`` train (BCCD) + ``txl-pbc`` train (PBC, Raabin); ``val`` likewise
    (181 + 835 images in all). ``limits`` caps a part's size (0 or absent = all), shared over
    the sources by :func:`cap_by_source`. BCCD's test images are never included.

    Args:
        bccd_root: the ``BCCD`` data set folder.
        relabel_root: the ``bccd-relabel`` data set folder.
        txl_root: the ``txl-pbc`` data set folder.
        limits: ``{"train": n, "val": n}``.
    """
    limits = limits or {}
    unknown = set(limits) - set(PARTS)
    if unknown:
        raise ValueError(f"limits names unknown part(s) {sorted(unknown)}; expected {PARTS}")
    bccd = load_bccd_relabel(bccd_root, relabel_root)
    txl = load_txl_pbc(txl_root)
    return {part: cap_by_source(bccd[part] + txl[part], limits.get(part, 0)) for part in PARTS}
