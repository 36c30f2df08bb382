"""Tiling a large field and merging the tiles' detections: coverage, the core rule, NMS, shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bloodlib.imaging.tiling import merge_tiles, tile_batch, tile_origins


def detection(boxes, scores=None, labels=None) -> dict[str, torch.Tensor]:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    scores = torch.tensor(scores if scores is not None else [0.9] * len(boxes), dtype=torch.float32)
    labels = torch.tensor(labels if labels is not None else [1] * len(boxes), dtype=torch.int64)
    return {"boxes": boxes, "scores": scores, "labels": labels}


def simulated_detector(objects: np.ndarray, labels: np.ndarray, origin, tile: int, image_size) -> dict:
    """What a perfect detector reports on one tile: every object whose centre the tile sees, clipped
    to the tile (and to the image), in tile pixels."""
    x, y = origin
    width, height = image_size
    right, bottom = min(x + tile, width), min(y + tile, height)
    centres = (objects[:, :2] + objects[:, 2:]) / 2
    seen = (centres[:, 0] >= x) & (centres[:, 0] < right) & (centres[:, 1] >= y) & (centres[:, 1] < bottom)
    clipped = objects[seen].copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(x, right) - x
    clipped[:, 1::2] = clipped[:, 1::2].clip(y, bottom) - y
    scores = np.linspace(0.9, 0.5, len(clipped)) if len(clipped) else []
    return detection(clipped, scores, labels[seen])


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap"),
    [(640, 480, 256, 64), (1000, 700, 300, 100), (300, 300, 300, 50), (100, 80, 256, 64), (513, 257, 256, 0)],
)
def test_origins_cover_every_pixel_with_the_last_tile_flush(width, height, tile, overlap):
    origins = tile_origins(width, height, tile, overlap)
    covered = np.zeros((height, width), int)
    for x, y in origins:
        covered[y : y + tile, x : x + tile] += 1
    assert covered.min() >= 1
    xs, ys = sorted({x for x, _ in origins}), sorted({y for _, y in origins})
    assert len(origins) == len(xs) * len(ys)
    assert xs[0] == 0 and ys[0] == 0
    if width > tile:
        assert xs[-1] == width - tile
        assert all(b - a <= tile - overlap for a, b in zip(xs, xs[1:]))  # neighbours overlap >= overlap
    else:
        assert xs == [0]


def test_an_image_smaller_than_a_tile_gets_one_padded_tile():
    assert tile_origins(100, 80, 256, 64) == [(0, 0)]
    image = torch.ones((3, 80, 100))
    (padded,) = tile_batch(image, [(0, 0)], 256)
    assert padded.shape == (3, 256, 256)
    assert padded[:, :80, :100].eq(1).all() and padded[:, 80:].eq(0).all() and padded[:, :, 100:].eq(0).all()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((640, 480, 256, 256), "overlap"),
        ((640, 480, 256, 300), "overlap"),
        ((640, 480, 256, -1), "overlap"),
        ((640, 480, 0, 0), "tile"),
        ((0, 480, 256, 64), "width"),
        ((640, -5, 256, 64), "height"),
    ],
)
def test_bad_tiling_raises_value_error(arguments, message):
    with pytest.raises(ValueError, match=message):
        tile_origins(*arguments)


def test_a_box_straddling_a_tile_border_is_counted_once():
    """Tiles at x = 0 and 192 (tile 256, overlap 64; the cores meet at x = 224). The object spans
    x = 180-230: whole in the first tile, cut at x = 192 in the second."""
    origins = tile_origins(448, 256, 256, 64)
    assert origins == [(0, 0), (192, 0)]
    first = detection([[180, 100, 230, 150]])
    second = detection([[0, 100, 38, 150]])  # the same object cut at the second tile's left edge
    merged = merge_tiles([first, second], origins, 256, 64, (448, 256))
    assert merged["boxes"].tolist() == [[180, 100, 230, 150]]


def test_a_box_inside_the_overlap_seen_by_both_tiles_is_counted_once():
    origins = tile_origins(448, 256, 256, 64)
    whole = [200.0, 20.0, 240.0, 60.0]  # inside the overlap 192-256; centre 220, in the first tile's core
    first = detection([whole], [0.8])
    second = detection([[whole[0] - 192, 20, whole[2] - 192, 60]], [0.9])
    merged = merge_tiles([first, second], origins, 256, 64, (448, 256))
    assert merged["boxes"].tolist() == [whole]
    assert merged["scores"].tolist() == pytest.approx([0.8])


def test_duplicates_the_core_rule_leaves_are_removed_by_classwise_nms():
    origins = [(0, 0)]
    same_class = detection([[10, 10, 50, 50], [12, 12, 50, 50]], [0.9, 0.8], [1, 1])
    merged = merge_tiles([same_class], origins, 256, 64, (256, 256))
    assert len(merged["boxes"]) == 1
    other_class = detection([[10, 10, 50, 50], [12, 12, 50, 50]], [0.9, 0.8], [1, 2])
    assert len(merge_tiles([other_class], origins, 256, 64, (256, 256))["boxes"]) == 2


def test_boxes_are_shifted_and_clipped_to_the_image():
    merged = merge_tiles([detection([[90, 60, 140, 120]])], [(0, 0)], 256, 64, (100, 80))
    assert merged["boxes"].tolist() == [[90, 60, 100, 80]]


def test_no_boxes_give_empty_tensors_with_the_right_shapes_and_dtypes():
    origins = tile_origins(640, 480, 256, 64)
    merged = merge_tiles([detection([])] * len(origins), origins, 256, 64, (640, 480))
    assert merged["boxes"].shape == (0, 4) and merged["boxes"].dtype == torch.float32
    assert merged["scores"].shape == (0,) and merged["scores"].dtype == torch.float32
    assert merged["labels"].shape == (0,) and merged["labels"].dtype == torch.int64


def test_merge_checks_its_arguments():
    origins = tile_origins(640, 480, 256, 64)
    with pytest.raises(ValueError, match="origins"):
        merge_tiles([detection([])], origins, 256, 64, (640, 480))
    with pytest.raises(ValueError, match="iou"):
        merge_tiles([detection([])] * len(origins), origins, 256, 64, (640, 480), iou=0.0)
    with pytest.raises(ValueError, match="image_size"):
        merge_tiles([detection([])] * len(origins), origins, 256, 64, (0, 480))
    with pytest.raises(ValueError, match="differ in length"):
        merge_tiles(
            [{"boxes": torch.zeros((2, 4)), "scores": torch.zeros(1), "labels": torch.zeros(2)}],
            [(0, 0)],
            256,
            64,
            (256, 256),
        )


@pytest.mark.parametrize("seed", range(8))
def test_every_object_seen_by_all_tiles_around_it_gives_exactly_one_merged_box(seed):
    """Random non-overlapping objects no larger than the overlap; a perfect detector on each tile
    reports every object whose centre the tile sees (cut at the tile's edge): the merge returns
    each object once, whole."""
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(300, 900)), int(rng.integers(300, 900))
    tile = int(rng.integers(128, 320))
    overlap = int(rng.integers(48, min(96, tile // 2)))
    objects, labels = [], []
    for _ in range(400):
        size = rng.uniform(8, overlap, 2)
        corner = rng.uniform(0, [width - size[0], height - size[1]])
        box = np.concatenate([corner, corner + size])
        if all(box[2] < o[0] or o[2] < box[0] or box[3] < o[1] or o[3] < box[1] for o in objects):
            objects.append(box)
            labels.append(int(rng.integers(0, 3)))
    objects, labels = np.array(objects), np.array(labels)
    origins = tile_origins(width, height, tile, overlap)
    tiles = [simulated_detector(objects, labels, origin, tile, (width, height)) for origin in origins]
    merged = merge_tiles(tiles, origins, tile, overlap, (width, height))
    assert len(merged["boxes"]) == len(objects)
    found = merged["boxes"].numpy()
    found, objects = found[np.lexsort(found.T[::-1])], objects[np.lexsort(objects.T[::-1])]
    np.testing.assert_allclose(found, objects, atol=1e-3)  # each object once, whole
