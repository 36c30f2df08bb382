"""BCCD in Pascal VOC layout: annotation parsing, the splits, a torch ``Dataset``.

BCCD (``Annotations/*.xml``, ``JPEGImages/*.jpg``, ``ImageSets/Main/{train,val,test}.txt``)
has 364 images of 640x480 with boxes for three classes. Labels are ``1 + CLASSES.index``
(0 is the background, as torchvision's detectors expect).

Parsing is strict where a silent mistake would corrupt results and lenient where BCCD is
known to be sloppy: malformed XML, an unknown class, a missing coordinate or a missing
image raise an error naming the file; zero-size boxes (BCCD has two) are dropped with a
warning naming the file; boxes are clipped to the image.
"""

from __future__ import annotations

import random
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

CLASSES: tuple[str, ...] = ("RBC", "WBC", "Platelets")
SPLITS = ("official", "random75")


class AnnotationError(ValueError):
    """A VOC annotation file cannot be used; the message names the file."""


@dataclass(frozen=True)
class Annotation:
    """One image and its boxes.

    Attributes:
        image_id: file stem, e.g. ``"BloodImage_00007"``.
        image_path: the JPEG.
        width, height: image size in pixels.
        boxes: ``(N, 4)`` float32 ``[x1, y1, x2, y2]`` pixels, clipped to the image, positive size.
        labels: ``(N,)`` int64 in ``1..len(CLASSES)``.
        source: the data set the image comes from (``"BCCD"``, or e.g. ``"PBC"``, ``"Raabin"``
            for TXL-PBC fields, see :mod:`bloodlib.detection.sources`).
    """

    image_id: str
    image_path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    source: str = "BCCD"

    def counts(self) -> dict[str, int]:
        """Number of boxes per class name."""
        return {name: int((self.labels == i + 1).sum()) for i, name in enumerate(CLASSES)}


def _number(node: ET.Element, tag: str, path: Path) -> float:
    child = node.find(tag)
    if child is None or child.text is None:
        raise AnnotationError(f"{path}: <{tag}> missing")
    try:
        return float(child.text.strip())
    except ValueError:
        raise AnnotationError(f"{path}: <{tag}> is not a number: {child.text!r}") from None


def parse_voc(xml_path: Path, image_dir: Path, classes: tuple[str, ...] = CLASSES) -> Annotation:
    """Parse one VOC XML file; the image is ``image_dir/<stem>.jpg`` (or the ``<filename>``).

    Raises:
        AnnotationError: malformed XML, no image size, an unknown class name, a missing or
            non-numeric coordinate (the message names the file).
        FileNotFoundError: the image does not exist (the message names it and the XML).
    """
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise AnnotationError(f"{xml_path}: malformed XML: {err}") from None
    image_path = Path(image_dir) / f"{xml_path.stem}.jpg"
    if not image_path.is_file():
        filename = root.findtext("filename")
        if filename and (Path(image_dir) / filename).is_file():
            image_path = Path(image_dir) / filename
        else:
            raise FileNotFoundError(f"image {image_path} for annotation {xml_path} not found")
    size = root.find("size")
    if size is None:
        raise AnnotationError(f"{xml_path}: <size> missing")
    width, height = int(_number(size, "width", xml_path)), int(_number(size, "height", xml_path))
    if width <= 0 or height <= 0:
        raise AnnotationError(f"{xml_path}: image size {width}x{height} is not positive")
    boxes, labels, dropped = [], [], 0
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in classes:
            raise AnnotationError(f"{xml_path}: unknown class {name!r}; expected one of {', '.join(classes)}")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise AnnotationError(f"{xml_path}: object {name!r} has no <bndbox>")
        x1, y1, x2, y2 = (_number(bndbox, tag, xml_path) for tag in ("xmin", "ymin", "xmax", "ymax"))
        x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
        y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
        if x2 <= x1 or y2 <= y1:
            dropped += 1
            continue
        boxes.append((x1, y1, x2, y2))
        labels.append(classes.index(name) + 1)
    if dropped:
        warnings.warn(f"{xml_path}: dropped {dropped} zero-size box(es)", stacklevel=2)
    return Annotation(
        image_id=xml_path.stem,
        image_path=image_path,
        width=width,
        height=height,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
    )


def read_id_list(path: Path) -> list[str]:
    """Image ids of a VOC ``ImageSets/Main/*.txt`` file (one per line)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"split list {path} not found")
    return [line.split()[0] for line in Path(path).read_text().splitlines() if line.strip()]


def split_ids(root: Path, split: str, seed: int) -> dict[str, list[str]]:
    """``{"train", "val", "test"}`` image ids.

    ``"official"``: BCCD's ``ImageSets/Main`` lists (205 / 87 / 72). ``"random75"``: the
    paper's protocol, a seeded random 75 % / 25 % train/test split of all images; 15 % of
    the training part is then held out as validation (for model selection only).
    """
    root = Path(root)
    if split == "official":
        main = root / "ImageSets" / "Main"
        return {part: read_id_list(main / f"{part}.txt") for part in ("train", "val", "test")}
    if split == "random75":
        ids = sorted(p.stem for p in (root / "Annotations").glob("*.xml"))
        random.Random(seed).shuffle(ids)
        n_test = round(0.25 * len(ids))
        test, rest = sorted(ids[:n_test]), ids[n_test:]
        n_val = round(0.15 * len(rest))
        return {"train": sorted(rest[n_val:]), "val": sorted(rest[:n_val]), "test": test}
    raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")


def load_annotations(root: Path, ids: list[str], limit: int = 0) -> list[Annotation]:
    """Parse the annotations of ``ids`` (the first ``limit`` if ``limit > 0``)."""
    root = Path(root)
    chosen = ids[:limit] if limit > 0 else ids
    return [parse_voc(root / "Annotations" / f"{i}.xml", root / "JPEGImages") for i in chosen]


def load_split(root: Path, split: str, seed: int, limits: dict[str, int] | None = None) -> dict[str, list[Annotation]]:
    """Annotations of each part of :func:`split_ids`; ``limits`` caps a part's size (0 = all)."""
    limits = limits or {}
    return {
        part: load_annotations(root, ids, limits.get(part, 0)) for part, ids in split_ids(root, split, seed).items()
    }


def read_image(path: Path) -> torch.Tensor:
    """A JPEG as a ``(3, H, W)`` uint8 RGB tensor."""
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()


def float_image(item: torch.Tensor | Annotation) -> torch.Tensor:
    """``item`` as a float ``(3, H, W)`` tensor in [0, 1]: an annotation's image is read from disk,
    a tensor (already in that form) is returned as it is."""
    return read_image(item.image_path).float().div_(255) if isinstance(item, Annotation) else item


def split_table(parts: dict[str, list[Annotation]]) -> Any:
    """A DataFrame: images and boxes per class for each part."""
    import pandas as pd

    rows = []
    for part, items in parts.items():
        counts = [a.counts() for a in items]
        rows.append({"part": part, "images": len(items), **{name: sum(c[name] for c in counts) for name in CLASSES}})
    return pd.DataFrame(rows)


class BCCDDetection(Dataset):
    """``(image, target)`` pairs for torchvision detectors.

    ``image`` is a ``tv_tensors.Image`` (3, H, W) (uint8, or float in [0, 1] after the
    transforms' ``ToDtype``); ``target`` holds ``boxes`` (``tv_tensors.BoundingBoxes`` XYXY,
    (N, 4)), ``labels`` (N,) int64 and ``image_id`` (str). Decoded images are kept in memory.
    """

    def __init__(self, annotations: list[Annotation], transforms: Callable | None = None) -> None:
        self.annotations = list(annotations)
        self.transforms = transforms
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        from torchvision import tv_tensors

        a = self.annotations[index]
        if index not in self._cache:
            self._cache[index] = read_image(a.image_path)
        image = tv_tensors.Image(self._cache[index])
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(a.boxes.copy()), format="XYXY", canvas_size=(a.height, a.width)
            ),
            "labels": torch.from_numpy(a.labels.copy()),
            "image_id": a.image_id,
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def collate(batch: list[tuple[Any, dict[str, Any]]]) -> tuple[list[Any], list[dict[str, Any]]]:
    """Lists of images and targets (detectors take lists, images may differ in size)."""
    images, targets = zip(*batch)
    return list(images), list(targets)
