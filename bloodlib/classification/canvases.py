"""Canvases of many images, built once and cached on disk.

Decoding, white-balancing, locating and cropping ~12.5k images takes about a minute on
two cores; the result (a uint8 tensor, ~350 MB at 96x96) is cached under
``<models root>/wbc_subtypes/canvases/<key>.pt``, ``key`` hashing the crop policy, the file
list, the boxes and the data checksums, so a changed policy or data set builds anew. A cached file
that cannot be read back as such a tensor (truncated, altered, unsafe) is moved aside with a warning
naming it (``<key>.pt.corrupt-<n>``) and built again.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from bloodlib.classification.classes import CLASSES
from bloodlib.classification.crops import CropPolicy, read_rgb
from bloodlib.fsutil import atomic_write_bytes, move_aside
from bloodlib.modelcache import CorruptModelError, models_root, run_key, torch_load_bytes

BOX_COLUMNS = ["x0", "y0", "x1", "y1"]


@dataclass
class CanvasSet:
    """Images of one evaluation or training set, ready for the classifier.

    Attributes:
        name: e.g. ``"TEST"``.
        frame: one row per image: ``label``, ``source``, ``group``, ``path`` (+ box columns).
        canvases: ``(N, 3, Hc, Wc)`` uint8 (see :class:`CropPolicy`).
    """

    name: str
    frame: pd.DataFrame
    canvases: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.frame) != len(self.canvases):
            raise ValueError(f"{self.name}: {len(self.frame)} rows but {len(self.canvases)} canvases")

    @property
    def labels(self) -> torch.Tensor:
        """``(N,)`` int64 class indices into :data:`CLASSES`."""
        return torch.tensor([CLASSES.index(label) for label in self.frame["label"]], dtype=torch.int64)

    @property
    def groups(self) -> np.ndarray:
        return self.frame["group"].to_numpy()

    def __len__(self) -> int:
        return len(self.frame)


def _one(policy: CropPolicy, path: Path, box: tuple[float, ...] | None) -> torch.Tensor:
    return policy.canvas(read_rgb(path), box)


def load_cached_canvases(path: Path, count: int, size: tuple[int, int]) -> torch.Tensor | None:
    """The cached ``(count, 3, *size)`` uint8 canvases at ``path``; None if there are none or the file is
    damaged (then moved aside with a warning, so that the caller builds them again)."""
    import warnings

    if not path.is_file():
        return None
    try:
        canvases = torch_load_bytes(path.read_bytes(), path)
        if not (
            isinstance(canvases, torch.Tensor)
            and canvases.dtype == torch.uint8
            and tuple(canvases.shape) == (count, 3, *size)
        ):
            got = tuple(canvases.shape) if isinstance(canvases, torch.Tensor) else type(canvases).__name__
            raise CorruptModelError(f"{path} is damaged (holds {got}, expected uint8 {(count, 3, *size)})", path)
    except CorruptModelError as err:
        aside = move_aside(path, "corrupt")
        warnings.warn(f"{err}; moved to {aside.name}, building the canvases again", stacklevel=3)
        return None
    return canvases


def build_canvases(
    frame: pd.DataFrame,
    policy: CropPolicy,
    *,
    data_checksums: dict[str, object],
    cache: bool = True,
    workers: int = 2,
    desc: str = "canvases",
    progress: bool = True,
) -> torch.Tensor:
    """``(N, 3, Hc, Wc)`` uint8 canvases of ``frame``'s images (its box columns if present,
    else :func:`~bloodlib.classification.crops.locate_wbc`), from the cache when possible."""
    has_boxes = all(c in frame.columns for c in BOX_COLUMNS)
    boxes = [tuple(b) for b in frame[BOX_COLUMNS].to_numpy().tolist()] if has_boxes else [None] * len(frame)
    paths = [Path(p) for p in frame["path"]]
    key = run_key(
        {"policy": asdict(policy), "files": [f"{p.parent.name}/{p.name}" for p in paths], "boxes": boxes},
        {k: str(v) for k, v in data_checksums.items()},
    )
    target = models_root() / "wbc_subtypes" / "canvases" / f"{key}.pt"
    if cache and (cached := load_cached_canvases(target, len(paths), tuple(policy.canvas_size))) is not None:
        return cached
    if not paths:
        h, w = policy.canvas_size
        return torch.zeros((0, 3, h, w), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        jobs = pool.map(_one, [policy] * len(paths), paths, boxes)
        items = list(tqdm(jobs, total=len(paths), desc=desc, disable=not progress))
    canvases = torch.stack(items)
    if cache:
        buffer = io.BytesIO()
        torch.save(canvases, buffer)
        atomic_write_bytes(target, buffer.getvalue())
    return canvases
