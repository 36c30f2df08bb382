"""Overlapping square tiles over a large field, and one set of detections merged from the tiles'.

:func:`tile_origins` lays tiles of ``tile`` px with at least ``overlap`` px between neighbours (the
last tile in a row or column flush with the border); :func:`tile_batch` cuts them out (zero-padded
where the image is smaller than a tile); a detector runs on each; :func:`merge_tiles` maps the
detections back to image pixels.

Merge rule: each tile owns a *core* -- the image split between overlapping neighbours at the middle of
each overlap, so the cores tile the image without gaps or overlaps -- and keeps only the boxes whose
centre lies in its core; class-wise NMS then removes what duplicates remain. An object whose centre
lies in a tile's core is seen whole by that tile when the overlap is at least the object's size, so
choose ``overlap`` >= the largest object (a WBC) and the kept box is never a cut one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torchvision.ops import batched_nms


def tile_origins(width: int, height: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Top-left corners ``(x, y)`` of the tiles covering a ``width`` x ``height`` image, row by row.

    Neighbouring tiles overlap by at least ``overlap`` px; the last tile of a row (column) ends at the
    image's border. An image dimension no larger than ``tile`` gets one tile at 0 along it (the tile is
    padded, see :func:`tile_batch`).
    """
    _check_tiling(tile, overlap)
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int | np.integer) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    xs, ys = _starts(int(width), tile, overlap), _starts(int(height), tile, overlap)
    return [(x, y) for y in ys for x in xs]


def tile_batch(
    image: torch.Tensor, origins: Sequence[tuple[int, int]], tile: int, *, fill: Sequence[float] | None = None
) -> torch.Tensor:
    """The (N, C, tile, tile) tiles of a (C, H, W) image at ``origins``, padded past its border with
    ``fill`` (one value per channel, in the image's units; default 0)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise ValueError(f"image must be a (C, H, W) tensor, got {getattr(image, 'shape', type(image).__name__)}")
    channels, height, width = image.shape
    batch = image.new_zeros((len(origins), channels, tile, tile))
    if fill is not None:
        batch[:] = torch.as_tensor(fill, dtype=image.dtype).view(1, channels, 1, 1)
    for index, (x, y) in enumerate(origins):
        part = image[:, y : y + tile, x : x + tile]
        batch[index, :, : part.shape[1], : part.shape[2]] = part
    return batch


def merge_tiles(
    detections: Sequence[dict[str, torch.Tensor]],
    origins: Sequence[tuple[int, int]],
    tile: int,
    overlap: int,
    image_size: tuple[int, int],
    iou: float = 0.5,
) -> dict[str, torch.Tensor]:
    """Merge per-tile detections into one set for the whole image.

    Args:
        detections: one torchvision-style dict per tile: ``boxes`` (N, 4) xyxy in tile pixels,
            ``scores`` (N,), ``labels`` (N,) int64.
        origins: the tiles' top-left corners ``(x, y)`` in image pixels (:func:`tile_origins`).
        tile, overlap: the tiling's tile size and overlap, px.
        image_size: ``(width, height)`` of the image, px.
        iou: class-wise NMS threshold for the duplicates the core rule leaves.

    Returns:
        ``boxes`` (M, 4) float32 xyxy in image pixels (clipped to the image), ``scores`` (M,) float32
        and ``labels`` (M,) int64, by falling score.
    """
    _check_tiling(tile, overlap)
    if len(detections) != len(origins):
        raise ValueError(f"detections has {len(detections)} tiles but origins has {len(origins)}")
    width, height = image_size
    if width <= 0 or height <= 0:
        raise ValueError(f"image_size must be a positive (width, height), got {image_size!r}")
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"iou must be in (0, 1], got {iou}")
    x_starts, y_starts = sorted({x for x, _ in origins}), sorted({y for _, y in origins})
    x_cuts, y_cuts = _core_cuts(x_starts, tile), _core_cuts(y_starts, tile)
    boxes, scores, labels = [], [], []
    for index, (detection, (x, y)) in enumerate(zip(detections, origins)):
        tile_boxes = torch.as_tensor(detection["boxes"], dtype=torch.float32).reshape(-1, 4)
        if not len(tile_boxes) == len(detection["scores"]) == len(detection["labels"]):
            raise ValueError(f"detections[{index}]: boxes, scores and labels differ in length")
        shifted = tile_boxes + torch.tensor([x, y, x, y], dtype=torch.float32)
        shifted[:, 0::2] = shifted[:, 0::2].clamp(0, width)
        shifted[:, 1::2] = shifted[:, 1::2].clamp(0, height)
        centre_x = (shifted[:, 0] + shifted[:, 2]).numpy() / 2
        centre_y = (shifted[:, 1] + shifted[:, 3]).numpy() / 2
        in_column = _core_index(x_cuts, centre_x) == x_starts.index(x)
        keep = torch.from_numpy(in_column & (_core_index(y_cuts, centre_y) == y_starts.index(y)))
        boxes.append(shifted[keep])
        scores.append(torch.as_tensor(detection["scores"], dtype=torch.float32).reshape(-1)[keep])
        labels.append(torch.as_tensor(detection["labels"], dtype=torch.int64).reshape(-1)[keep])
    merged_boxes = torch.cat(boxes) if boxes else torch.zeros((0, 4))
    merged_scores = torch.cat(scores) if scores else torch.zeros(0)
    merged_labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
    keep = batched_nms(merged_boxes, merged_scores, merged_labels, iou)  # by falling score
    return {"boxes": merged_boxes[keep], "scores": merged_scores[keep], "labels": merged_labels[keep]}


def _check_tiling(tile: int, overlap: int) -> None:
    if not isinstance(tile, int | np.integer) or tile <= 0:
        raise ValueError(f"tile must be a positive integer, got {tile!r}")
    if not isinstance(overlap, int | np.integer) or not 0 <= overlap < tile:
        raise ValueError(f"overlap must be an integer in [0, tile={tile}), got {overlap!r}")


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis: every ``tile - overlap`` px, the last one flush with the border."""
    if size <= tile:
        return [0]
    count = math.ceil((size - tile) / (tile - overlap)) + 1
    return sorted({min(index * (tile - overlap), size - tile) for index in range(count)})


def _core_cuts(starts: list[int], tile: int) -> np.ndarray:
    """Boundaries between consecutive tiles' cores along one axis: the middles of their overlaps."""
    middles = [(following + previous + tile) / 2 for previous, following in zip(starts, starts[1:])]
    return np.array([-math.inf, *middles, math.inf])


def _core_index(cuts: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Index of the core containing each position (cores are half-open ``[cut, next cut)``)."""
    return np.searchsorted(cuts, positions, side="right") - 1
