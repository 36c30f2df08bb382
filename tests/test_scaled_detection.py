"""Detection at a canonical cell scale: field scale, training tiles, tiled prediction, the fast pipeline path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from bloodlib.detection.data import Annotation, read_image
from bloodlib.detection.scaled import (
    ScaledDetection,
    ScaleSpec,
    field_tiles,
    label_rbc_diameter,
    predict_scaled,
)
from bloodlib.pipeline.infer import ScaledDetector, detect_paths
from tests.pipeline_helpers import bccd_images, tiny_models

SPEC = ScaleSpec(rbc_diameter=45.0, tile=300, overlap=112, fit_slack=0.15)


def test_field_scale_brings_red_cells_to_the_canonical_size_and_small_overshoots_into_one_tile():
    assert SPEC.field_scale(640, 480, 97.0) == pytest.approx(45 / 97)  # 297 px: one tile as it is
    assert SPEC.field_scale(640, 480, 90.0) == pytest.approx(300 / 640)  # 320 px would need two tiles
    assert SPEC.field_scale(640, 480, 60.0) == pytest.approx(0.75)  # 480 px: too far over, tiled
    assert SPEC.field_scale(1280, 960, 20.0) == pytest.approx(2.25)  # small cells: enlarged
    for bad in (0.0, -3.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="RBC diameter"):
            SPEC.field_scale(640, 480, bad)
    with pytest.raises(ValueError, match="overlap < tile"):
        ScaleSpec(overlap=300)


def _annotation(path, boxes, labels, width=640, height=480) -> Annotation:
    return Annotation(path.stem, path, width, height, np.asarray(boxes, np.float32), np.asarray(labels, np.int64))


def test_label_rbc_diameter_skips_cells_cut_by_the_border(tmp_path):
    boxes = [[100, 100, 190, 190], [300, 300, 410, 410], [200, 50, 300, 150], [0, 200, 30, 290], [10, 10, 200, 200]]
    a = _annotation(tmp_path / "a.jpg", boxes, [1, 1, 1, 1, 2])  # three RBCs, one at the border, a WBC
    assert label_rbc_diameter(a) == pytest.approx(100.0)
    two = _annotation(tmp_path / "c.jpg", boxes[:2] + boxes[3:4], [1, 1, 1])  # under three whole: all count
    assert label_rbc_diameter(two) == pytest.approx(90.0)
    assert math.isnan(label_rbc_diameter(_annotation(tmp_path / "b.jpg", [[1, 1, 5, 5]], [2])))


def test_training_tiles_are_at_the_canonical_scale(tmp_path):
    path = tmp_path / "field.jpg"
    Image.fromarray(np.full((480, 640, 3), 200, np.uint8)).save(path)
    boxes = [[100, 100, 190, 190], [400, 200, 490, 290]]  # two RBCs of 90 px
    data = ScaledDetection([_annotation(path, boxes, [1, 1])], [90.0], spec=SPEC, scale_jitter=0.0, colour_p=0.0)
    torch.manual_seed(0)
    for _ in range(5):
        image, target = data[0]
        assert image.shape == (3, 300, 300) and image.dtype == torch.float32
        sides = target["boxes"][:, 2:] - target["boxes"][:, :2]
        whole = (sides > 44).all(dim=1)  # boxes the crop did not cut
        assert torch.allclose(sides[whole], torch.full_like(sides[whole], 45.0), atol=0.5)
    with pytest.raises(ValueError, match="usable RBC diameter"):
        ScaledDetection([_annotation(path, boxes, [1, 1])], [math.nan], spec=SPEC, scale_jitter=0.1)


class _OneBoxPerTile(torch.nn.Module):
    """A stand-in detector: in every tile, one RBC box at tile pixels (100, 100, 150, 150)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images):
        box = torch.tensor([[100.0, 100.0, 150.0, 150.0]])
        return [{"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])} for _ in images]


def test_tiled_prediction_returns_boxes_in_the_fields_pixels():
    image = torch.full((3, 960, 1280), 200, dtype=torch.uint8)
    field = field_tiles(image.permute(1, 2, 0).numpy(), 90.0, SPEC)  # x0.5: 640x480, 3 x 2 tiles
    assert field.size == (640, 480) and len(field.origins) == 6 and field.tiles.shape == (6, 3, 300, 300)
    pred = predict_scaled(_OneBoxPerTile(), image, 90.0, spec=SPEC)
    expected = {(2 * (x + 100), 2 * (y + 100)) for x, y in field.origins}
    got = {(round(float(b[0])), round(float(b[1]))) for b in pred["boxes"]}
    assert got <= expected and len(got) >= 4  # kept only by the tile whose core holds the box
    assert float((pred["boxes"][:, 2] - pred["boxes"][:, 0]).min()) == pytest.approx(100.0)


def test_the_fast_pipeline_detector_equals_tiled_prediction():
    models = tiny_models()
    paths = bccd_images(2)
    detector = ScaledDetector(models.detector, SPEC, diameter=60.0)  # 640x480 -> 480x360: four tiles
    got = detect_paths(detector, paths, batch_size=2)
    for path, g in zip(paths, got):
        expected = predict_scaled(models.detector, read_image(path), 60.0, spec=SPEC)
        assert len(g["boxes"]) > 0
        iou = box_iou(expected["boxes"], g["boxes"])
        same = (iou > 0.95) & (expected["labels"][:, None] == g["labels"][None, :])
        assert same.any(dim=1).float().mean() >= 0.9
    with pytest.raises(ValueError, match="diameter"):
        ScaledDetector(models.detector, SPEC, diameter=0.0)
