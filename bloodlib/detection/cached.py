"""A trained detector's detections, kept in the model cache.

Predicting every field of a report again on a re-render costs minutes on two cores; the detections
of a :class:`~bloodlib.training.TrainedModel` are stored with
:func:`bloodlib.modelcache.cached_output`, keyed by its weights, a sha256 of the fields' image
files, the code of :mod:`bloodlib.detection` and :mod:`bloodlib.imaging` and what else the detections
depend on (views, scale, ...). A plain ``nn.Module`` is always run. Detections travel as one float64
array, a row per box: ``item, view, x0, y0, x1, y1, score, label`` (float64 holds the float32 boxes
and scores and the integer labels exactly).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from bloodlib.detection.metrics import Prediction

COLUMNS = ("item", "view", "x0", "y0", "x1", "y1", "score", "label")


def to_array(per_item: Sequence[Sequence[Prediction]]) -> np.ndarray:
    """``per_item[i][v]`` (item ``i``, view ``v``) -> ``(boxes, 8)`` float64 rows of :data:`COLUMNS`."""
    rows = [np.zeros((0, len(COLUMNS)))]
    for i, views in enumerate(per_item):
        for v, p in enumerate(views):
            n = len(p["scores"])
            rows.append(
                np.column_stack(
                    [
                        np.full(n, i),
                        np.full(n, v),
                        p["boxes"].numpy().reshape(n, 4),
                        p["scores"].numpy(),
                        p["labels"].numpy(),
                    ]
                ).astype(np.float64)
            )
    return np.concatenate(rows)


def from_array(array: np.ndarray, items: int, views: int) -> list[list[Prediction]]:
    """The inverse of :func:`to_array`: ``items`` lists of ``views`` torchvision-style dicts."""
    if array.ndim != 2 or array.shape[1] != len(COLUMNS):
        raise ValueError(f"expected an (N, {len(COLUMNS)}) array of detections, got shape {array.shape}")
    out = []
    for i in range(items):
        mine = array[array[:, 0] == i]
        per_view = []
        for v in range(views):
            rows = mine[mine[:, 1] == v]
            per_view.append(
                {
                    "boxes": torch.from_numpy(rows[:, 2:6].astype(np.float32)),
                    "scores": torch.from_numpy(rows[:, 6].astype(np.float32)),
                    "labels": torch.from_numpy(rows[:, 7].astype(np.int64)),
                }
            )
        out.append(per_view)
    return out


def fields_digest(annotations: Sequence[Any]) -> str:
    """sha256 over the fields' image files (their bytes, in order): which fields were predicted."""
    digest = hashlib.sha256()
    for a in annotations:
        with open(a.image_path, "rb") as handle:
            digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def cached_detections(
    model: Any,
    kind: str,
    annotations: Sequence[Any],
    inputs: dict[str, Any],
    compute: Callable[[torch.nn.Module], list[list[Prediction]]],
    *,
    views: int = 1,
) -> list[list[Prediction]]:
    """``compute(network)`` -- per field, ``views`` predictions -- or, for a
    :class:`~bloodlib.training.TrainedModel`, what it returned before for the same weights, fields
    and ``inputs`` (:func:`bloodlib.modelcache.cached_output` under ``kind``)."""
    from bloodlib.modelcache import cached_output, source_digest
    from bloodlib.training import TrainedModel

    if not isinstance(model, TrainedModel):
        return compute(model)
    code = source_digest("bloodlib.detection", "bloodlib.imaging")
    key = {**inputs, "fields": fields_digest(annotations), "n": len(annotations), "views": views, "code": code}
    array = cached_output(model.run, kind, key, lambda: to_array(compute(model.model)))
    return from_array(array, len(annotations), views)
