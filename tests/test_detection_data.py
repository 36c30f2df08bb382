"""BCCD VOC parsing (edge cases on hand-made files), the splits, and the box-aware augmentation."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from bloodlib.detection.data import (
    AnnotationError,
    BCCDDetection,
    load_split,
    parse_voc,
    split_ids,
)
from bloodlib.detection.transforms import eval_transforms, train_transforms


def write_voc(
    folder: Path, stem: str, objects: list[tuple[str, tuple]], *, size=(640, 480), image=True, raw: str | None = None
) -> Path:
    (folder / "Annotations").mkdir(parents=True, exist_ok=True)
    (folder / "JPEGImages").mkdir(parents=True, exist_ok=True)
    body = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b in objects
    )
    xml = (
        raw
        if raw is not None
        else (
            f"<annotation><filename>{stem}.jpg</filename><size><width>{size[0]}</width>"
            f"<height>{size[1]}</height><depth>3</depth></size>{body}</annotation>"
        )
    )
    path = folder / "Annotations" / f"{stem}.xml"
    path.write_text(xml)
    if image:
        pixels = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "JPEGImages" / f"{stem}.jpg")
    return path


def test_parses_boxes_and_labels(tmp_path):
    path = write_voc(
        tmp_path, "a", [("RBC", (10, 20, 110, 120)), ("WBC", (200, 100, 400, 300)), ("Platelets", (5, 5, 30, 30))]
    )
    a = parse_voc(path, tmp_path / "JPEGImages")
    assert a.image_id == "a" and (a.width, a.height) == (640, 480)
    np.testing.assert_array_equal(a.boxes, [[10, 20, 110, 120], [200, 100, 400, 300], [5, 5, 30, 30]])
    assert a.labels.tolist() == [1, 2, 3]
    assert a.counts() == {"RBC": 1, "WBC": 1, "Platelets": 1}


def test_zero_size_boxes_dropped_with_warning_naming_file(tmp_path):
    path = write_voc(tmp_path, "zero", [("RBC", (504, 337, 504, 337)), ("RBC", (1, 1, 50, 50))])
    with pytest.warns(UserWarning, match=r"zero\.xml: dropped 1 zero-size"):
        a = parse_voc(path, tmp_path / "JPEGImages")
    assert a.boxes.shape == (1, 4)


def test_boxes_clipped_to_image(tmp_path):
    path = write_voc(tmp_path, "clip", [("RBC", (-5, 400, 700, 520))])
    a = parse_voc(path, tmp_path / "JPEGImages")
    np.testing.assert_array_equal(a.boxes, [[0, 400, 640, 480]])


def test_image_without_objects(tmp_path):
    a = parse_voc(write_voc(tmp_path, "empty", []), tmp_path / "JPEGImages")
    assert a.boxes.shape == (0, 4) and a.labels.shape == (0,)
    image, target = BCCDDetection(
        [a],
        train_transforms(photometric_p=0.5, zoom_out_p=0.5, zoom_out_max=2.0, iou_crop_p=0.5, hflip_p=0.5, vflip_p=0.5),
    )[0]
    assert image.shape == (3, 300, 300) and target["boxes"].shape == (0, 4)


@pytest.mark.parametrize(
    "raw,objects,image,error,words",
    [
        ("<annotation><size>", [], True, AnnotationError, "malformed XML"),
        (None, [("Neutrophil", (1, 1, 5, 5))], True, AnnotationError, "unknown class 'Neutrophil'"),
        (
            (
                "<annotation><size><width>640</width><height>480</height></size><object><name>RBC</name>"
                "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax></bndbox></object></annotation>"
            ),
            [],
            True,
            AnnotationError,
            "<ymax> missing",
        ),
        ("<annotation><object><name>RBC</name></object></annotation>", [], True, AnnotationError, "<size> missing"),
        (None, [("RBC", (1, 1, 9, 9))], False, FileNotFoundError, "bad.jpg"),
    ],
)
def test_broken_files_are_errors_naming_the_file(tmp_path, raw, objects, image, error, words):
    path = write_voc(tmp_path, "bad", objects, image=image, raw=raw)
    with pytest.raises(error) as err:
        parse_voc(path, tmp_path / "JPEGImages")
    assert words in str(err.value) and "bad.xml" in str(err.value)


def test_train_transforms_keep_boxes_consistent():
    torch.manual_seed(0)
    image = tv_tensors.Image(torch.randint(0, 255, (3, 480, 640), dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([[100.0, 100, 200, 180], [300, 200, 340, 240]]), format="XYXY", canvas_size=(480, 640)
    )
    t = train_transforms(photometric_p=1.0, zoom_out_p=1.0, zoom_out_max=2.0, iou_crop_p=1.0, hflip_p=0.5, vflip_p=0.5)
    for _ in range(10):
        out, target = t(image, {"boxes": boxes, "labels": torch.tensor([1, 3])})
        assert out.shape == (3, 300, 300) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
        b = target["boxes"]
        assert len(b) == len(target["labels"]) and (b[:, 2:] > b[:, :2]).all()
        assert b.min() >= 0 and b.max() <= 300
    flip = train_transforms(photometric_p=0, zoom_out_p=0, zoom_out_max=1, iou_crop_p=0, hflip_p=1, vflip_p=0)
    _, target = flip(image, {"boxes": boxes, "labels": torch.tensor([1, 3])})
    sx, sy = 300 / 640, 300 / 480
    expected = torch.tensor([[(640 - 200) * sx, 100 * sy, (640 - 100) * sx, 180 * sy]])
    torch.testing.assert_close(target["boxes"][:1].as_subclass(torch.Tensor), expected, atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="iou_crop_p"):
        train_transforms(photometric_p=0, zoom_out_p=0, zoom_out_max=1, iou_crop_p=2, hflip_p=0, vflip_p=0)


def test_eval_transform_keeps_geometry():
    image = tv_tensors.Image(torch.full((3, 480, 640), 255, dtype=torch.uint8))
    out, _ = eval_transforms()(image, {"labels": torch.tensor([])})
    assert out.shape == (3, 480, 640) and out.max() == 1.0


def test_bccd_official_and_random_splits(data_root):
    root = data_root / "BCCD"
    official = split_ids(root, "official", 0)
    assert {k: len(v) for k, v in official.items()} == {"train": 205, "val": 87, "test": 72}
    assert not set(official["train"]) & set(official["test"])
    random75 = split_ids(root, "random75", 1)
    assert len(random75["test"]) == 91 and sum(len(v) for v in random75.values()) == 364
    assert len(set().union(*map(set, random75.values()))) == 364
    assert random75 == split_ids(root, "random75", 1) and random75 != split_ids(root, "random75", 2)
    with pytest.raises(ValueError, match="split 'kfold'"):
        split_ids(root, "kfold", 0)


def test_bccd_loads_with_its_two_zero_size_boxes_dropped(data_root):
    root = data_root / "BCCD"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parts = load_split(root, "official", 0)
    dropped = sorted(Path(str(w.message).split(":")[0]).name for w in caught if "zero-size" in str(w.message))
    assert dropped == ["BloodImage_00338.xml", "BloodImage_00343.xml"]
    total = {k: sum(a.counts()[k] for part in parts.values() for a in part) for k in ("RBC", "WBC", "Platelets")}
    assert total == {"RBC": 4153, "WBC": 372, "Platelets": 361}
    image, target = BCCDDetection(parts["test"][:1], eval_transforms())[0]
    assert image.shape == (3, 480, 640) and target["boxes"].shape[1] == 4
