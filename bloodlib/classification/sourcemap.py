"""Rebuild ``dataset2-master_source_map.csv``: which BCCD original each dataset2 image came from.

dataset2-master's 12,515 images are augmented copies (rotation <= 20 deg, shift 0.1, shear 0.2,
horizontal/vertical flips) of 348 BCCD-style originals resized from 640x480 to 320x240, and their
file names do not say which (see ``blood-cells/SOURCE.md``). :func:`build_source_map` recovers the
source of every image by SIFT keypoint voting:

1. every BCCD original is resized to 320x240 (``cv2.INTER_AREA``) and SIFT descriptors are
   computed for it *and for its two mirror images* (left-right, up-down; SIFT is rotation- but
   not mirror-invariant, and a left-right plus up-down flip is a 180 deg rotation);
2. all descriptors go into one FLANN kd-tree index (seeded, so a build is reproducible);
3. each descriptor of a dataset2 image looks up its :data:`NEIGHBOURS` nearest index
   descriptors; it votes for the original owning the nearest one if that is closer than
   :data:`RATIO` times the nearest descriptor of any *other* original (Lowe's ratio test
   against the best competing source, so the three mirror variants of one original and
   repeated texture within it do not cancel each other out; a descriptor whose neighbours all
   belong to one original votes for it);
4. ``v1``/``v2`` are the votes of the best and the runner-up original; the match is
   ``confident`` when ``v1 >= MIN_VOTES`` and ``v1 >= MIN_MARGIN * v2``;
5. three of dataset2's originals are not in BCCD (BloodImage_00096, _00280, _00329: 64 TRAIN
   images); their copies get < :data:`MIN_MATCH_VOTES` votes (every other image gets more, bar a
   handful of hard copies). Such unmatched images get a negative pseudo-source per class and
   side of the upstream split (:func:`pseudo_source`), so a grouped split keeps each unknown
   original whole and never puts one on both sides of TRAIN/TEST.

The table has the columns of the project's shared CSV (:data:`COLUMNS`). On the full data set
it agrees with the shared file's ``srcid`` on 99.6% of the rows that file marks confident
(99.99% leaving out the copies of the three originals missing from BCCD, which the shared file
matched against originals from outside BCCD, presumably the upstream ``Original_Images/``);
TRAIN and TEST share no source, and only the two near-duplicate groups that ``SOURCE.md`` names. The whole data set takes about 200 CPU
seconds (SIFT dominates), spread over ``workers`` threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import pandas as pd

from bloodlib.classification.classes import CLASSES, SPLITS

#: (width, height) of the dataset2 images; the originals are resized to it.
IMAGE_SIZE = (320, 240)
#: ``cv2.flip`` codes of the indexed variants of each original (None: as is).
FLIPS = (None, 1, 0)
#: Lowe's ratio: a vote needs nearest distance < RATIO * distance to the best other original.
RATIO = 0.75
#: Neighbours looked up per query descriptor (to find the nearest *other* original).
NEIGHBOURS = 8
#: Confidence rule: at least MIN_VOTES votes and at least MIN_MARGIN times the runner-up's.
MIN_VOTES = 8
MIN_MARGIN = 2.0
#: Fewer votes than this: the image matched no BCCD original (its source is not in BCCD).
MIN_MATCH_VOTES = 3
#: FLANN kd-tree parameters and the OpenCV RNG seed of its build.
FLANN_TREES = 4
FLANN_CHECKS = 64
FLANN_SEED = 0
#: Bump when the method changes in a way the constants above do not capture.
METHOD_VERSION = 1
COLUMNS = ("split", "cls", "fn", "k", "src", "v1", "v2", "confident", "srcid", "srclabel")

_FLANN_KDTREE = 1
_BCCD_NAME = re.compile(r"BloodImage_(\d+)\.jpg")
_DATASET2_NAME = re.compile(r"_(\d+)_\d+\.jpeg")
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class SourceIndex:
    """SIFT descriptors of the BCCD originals and their mirror images.

    Attributes:
        descriptors: ``(n, 128)`` float32, all variants of all originals stacked.
        owners: ``(n,)`` int64, the BCCD image number (``BloodImage_{number:05d}.jpg``) of each row.
    """

    descriptors: np.ndarray
    owners: np.ndarray

    def flann(self) -> cv2.flann_Index:
        """A seeded FLANN kd-tree over :attr:`descriptors` (build one per thread)."""
        cv2.setRNGSeed(FLANN_SEED)
        return cv2.flann_Index(self.descriptors, {"algorithm": _FLANN_KDTREE, "trees": FLANN_TREES})


def method_signature() -> dict[str, object]:
    """Every constant that shapes the output, for cache keys."""
    return {
        "version": METHOD_VERSION,
        "image_size": IMAGE_SIZE,
        "flips": FLIPS,
        "ratio": RATIO,
        "neighbours": NEIGHBOURS,
        "min_votes": MIN_VOTES,
        "min_margin": MIN_MARGIN,
        "min_match_votes": MIN_MATCH_VOTES,
        "flann": [FLANN_TREES, FLANN_CHECKS, FLANN_SEED],
    }


def input_digest(blood_cells_dir: Path) -> str:
    """12 hex digits over :func:`method_signature` and the names and sizes of the dataset2 images.

    Cheap (one ``stat`` per file, no reading); the BCCD originals are not included, they are
    pinned by the data registry.
    """
    files = dataset2_files(blood_cells_dir)
    digest = hashlib.sha256(json.dumps(method_signature(), sort_keys=True).encode())
    for path in files["path"]:
        digest.update(f"{path.relative_to(blood_cells_dir).as_posix()}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:12]


def bccd_number(name: str) -> int:
    """``"BloodImage_00123.jpg"`` -> 123."""
    match = _BCCD_NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"not a BCCD image name (BloodImage_<number>.jpg): {name!r}")
    return int(match.group(1))


def dataset2_files(blood_cells_dir: Path) -> pd.DataFrame:
    """Every dataset2-master image: ``split, cls, fn, path`` (sorted by split, class, name)."""
    root = Path(blood_cells_dir) / "dataset2-master" / "images"
    rows = [
        (split, cls, path.name, path)
        for split in SPLITS
        for cls in CLASSES
        for path in sorted((root / split / cls).glob("*.jpeg"))
    ]
    if not rows:
        raise ValueError(f"no images under {root}/{{{','.join(SPLITS)}}}/<class>/*.jpeg")
    return pd.DataFrame(rows, columns=["split", "cls", "fn", "path"])


def read_gray(path: Path, size: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
    """Grayscale ``(height, width)`` uint8 image, resized (``INTER_AREA``) to ``size`` = (width, height)."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    if (image.shape[1], image.shape[0]) != tuple(size):
        image = cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA)
    return image


def sift_descriptors(sift: cv2.SIFT, image: np.ndarray) -> np.ndarray:
    """``(n, 128)`` float32 SIFT descriptors of a grayscale image (``n`` may be 0)."""
    _, descriptors = sift.detectAndCompute(image, None)
    return np.zeros((0, 128), np.float32) if descriptors is None else descriptors.astype(np.float32, copy=False)


def original_variants(image: np.ndarray) -> list[np.ndarray]:
    """The original and its mirror images, one per :data:`FLIPS` entry."""
    return [image if code is None else cv2.flip(image, code) for code in FLIPS]


def count_votes(indices: np.ndarray, distances: np.ndarray, owners: np.ndarray) -> dict[int, int]:
    """Votes per BCCD number from one image's kNN result.

    Args:
        indices: ``(n, k)`` index rows of the k nearest descriptors of each query descriptor.
        distances: ``(n, k)`` their squared L2 distances, ascending along axis 1.
        owners: ``(n_index,)`` BCCD number of each index row.
    """
    if len(indices) == 0:
        return {}
    owner = owners[indices]
    other = owner != owner[:, :1]
    has_other = other.any(axis=1)
    competitor = np.where(has_other, distances[np.arange(len(owner)), other.argmax(axis=1)], np.inf)
    passed = distances[:, 0] < RATIO**2 * competitor
    sources, counts = np.unique(owner[passed, 0], return_counts=True)
    return dict(zip(sources.tolist(), counts.tolist(), strict=True))


def best_two(votes: dict[int, int]) -> tuple[int | None, int, int]:
    """``(source, v1, v2)``: the most-voted source (lowest number on ties; None without votes),
    its votes and the runner-up's."""
    ranked = sorted(votes.items(), key=lambda item: (-item[1], item[0]))
    if not ranked:
        return None, 0, 0
    return ranked[0][0], ranked[0][1], ranked[1][1] if len(ranked) > 1 else 0


@contextmanager
def _opencv_threads(n: int) -> Iterator[None]:
    """OpenCV's own thread pool at ``n`` threads inside the block (we parallelise over images)."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _parallel_map(
    func: Callable[[_T], _R],
    items: Sequence[_T],
    *,
    workers: int,
    desc: str,
    progress: bool,
    init: Callable[[], None] | None = None,
) -> list[_R]:
    """``[func(item) for item in items]`` on ``workers`` threads (OpenCV releases the GIL), in order."""
    from tqdm.auto import tqdm

    with _opencv_threads(1), ThreadPoolExecutor(workers, initializer=init) as pool:
        return list(tqdm(pool.map(func, items), total=len(items), desc=desc, disable=not progress, unit="img"))


def default_workers() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def build_index(bccd_dir: Path, *, progress: bool = True, workers: int | None = None) -> SourceIndex:
    """SIFT descriptors of every ``bccd_dir/JPEGImages/BloodImage_*.jpg`` and its mirror images."""
    paths = sorted((Path(bccd_dir) / "JPEGImages").glob("BloodImage_*.jpg"))
    if not paths:
        raise ValueError(f"no BloodImage_*.jpg under {Path(bccd_dir) / 'JPEGImages'}")
    local = threading.local()

    def describe(path: Path) -> list[np.ndarray]:
        if not hasattr(local, "sift"):
            local.sift = cv2.SIFT_create()
        return [sift_descriptors(local.sift, v) for v in original_variants(read_gray(path))]

    per_image = _parallel_map(
        describe, paths, workers=workers or default_workers(), desc="SIFT BCCD originals", progress=progress
    )
    descriptors = np.concatenate([d for variants in per_image for d in variants])
    owners = np.concatenate(
        [
            np.full(sum(len(d) for d in variants), bccd_number(path.name), np.int64)
            for path, variants in zip(paths, per_image, strict=True)
        ]
    )
    return SourceIndex(np.ascontiguousarray(descriptors), owners)


def match_votes(
    index: SourceIndex, paths: Sequence[Path], *, progress: bool = True, workers: int | None = None
) -> list[dict[int, int]]:
    """Votes per BCCD number (:func:`count_votes`) of each image of ``paths``, in order."""
    local = threading.local()

    def init() -> None:
        local.sift, local.flann = cv2.SIFT_create(), index.flann()

    def votes(path: Path) -> dict[int, int]:
        descriptors = sift_descriptors(local.sift, read_gray(path))
        if len(descriptors) == 0:
            return {}
        k = min(NEIGHBOURS, len(index.owners))
        indices, distances = local.flann.knnSearch(descriptors, k, params={"checks": FLANN_CHECKS})
        return count_votes(indices, distances, index.owners)

    return _parallel_map(
        votes,
        list(paths),
        workers=workers or default_workers(),
        desc="match dataset2 images",
        progress=progress,
        init=init,
    )


def match_images(
    index: SourceIndex, paths: Sequence[Path], *, progress: bool = True, workers: int | None = None
) -> pd.DataFrame:
    """Best source per image: ``srcid`` (float, NaN without any vote), ``v1``, ``v2``, ``confident``.

    One row per entry of ``paths``, in order.
    """
    rows = []
    for votes in match_votes(index, paths, progress=progress, workers=workers):
        source, v1, v2 = best_two(votes)
        rows.append(((np.nan if source is None else float(source)), v1, v2))
    out = pd.DataFrame(rows, columns=["srcid", "v1", "v2"]).astype({"srcid": float, "v1": np.int64, "v2": np.int64})
    out["confident"] = (out["v1"] >= MIN_VOTES) & (out["v1"] >= MIN_MARGIN * out["v2"])
    return out


def candidate_sources(votes: dict[int, int], srcid: int) -> set[int]:
    """The originals an image whose match is not confident may have been made from: its mapped
    ``srcid`` and every original with at least ``1 / MIN_MARGIN`` of the best original's votes (the
    ones the confidence rule could not rule out) and at least :data:`MIN_MATCH_VOTES` (fewer is no
    match at all, the rule that marks a copy of an original missing from BCCD)."""
    best = max(votes.values(), default=0)
    floor = max(MIN_MATCH_VOTES, best / MIN_MARGIN)
    return {int(srcid)} | {source for source, n in votes.items() if n >= floor}


def uncertain_source_pairs(
    blood_cells_dir: Path,
    bccd_dir: Path,
    source_map: pd.DataFrame,
    *,
    progress: bool = True,
    workers: int | None = None,
) -> list[tuple[int, int]]:
    """Pairs of BCCD originals that an image of ``source_map`` *not* marked ``confident`` may come from
    (:func:`candidate_sources` of its votes, matched again against ``bccd_dir``), sorted, each ``(a, b)``
    with ``a < b``. Images that matched no BCCD original (negative ``srcid``) give none.

    A grouped split that keeps each such pair on one side never puts an uncertain copy next to a
    copy of the original it may really come from.
    """
    uncertain = source_map[~source_map["confident"].astype(bool) & (source_map["srcid"] >= 0)]
    root = Path(blood_cells_dir) / "dataset2-master" / "images"
    paths = [root / split / cls / fn for split, cls, fn in zip(uncertain["split"], uncertain["cls"], uncertain["fn"])]
    if not paths:
        return []
    index = build_index(bccd_dir, progress=progress, workers=workers)
    pairs = set()
    for srcid, votes in zip(uncertain["srcid"], match_votes(index, paths, progress=progress, workers=workers)):
        for other in candidate_sources(votes, int(srcid)) - {int(srcid)}:
            pairs.add((min(int(srcid), other), max(int(srcid), other)))
    return sorted(pairs)


def pseudo_source(split: str, cls: str) -> int:
    """The negative ``srcid`` of images that matched no BCCD original: one per class and side.

    A source image has one label and the upstream split is by source, so all copies of an
    original missing from BCCD share their folder class and lie on one side (TRAIN, or
    TEST/TEST_SIMPLE, which hold the same sources). Lumping all unmatched images of a class
    and side into one pseudo-source keeps every such original whole in a grouped split:
    TRAIN -1..-4, TEST and TEST_SIMPLE -5..-8, in :data:`~.data.CLASSES` order.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if cls not in CLASSES:
        raise ValueError(f"unknown class {cls!r}; expected one of {CLASSES}")
    side = 0 if split == "TRAIN" else 1
    return -1 - side * len(CLASSES) - CLASSES.index(cls)


def source_labels(labels_csv: Path) -> dict[int, str]:
    """BCCD number -> ``Category`` of ``dataset-master/labels.csv`` (raw text; empty ones left out)."""
    labels = pd.read_csv(labels_csv)
    missing = {"Image", "Category"} - set(labels.columns)
    if missing:
        raise ValueError(f"{labels_csv}: missing column(s) {sorted(missing)}")
    labels = labels.dropna(subset=["Category"])
    return dict(zip(labels["Image"].astype(int), labels["Category"].astype(str), strict=True))


def _selected_files(blood_cells_dir: Path, files: Sequence[Path] | None) -> pd.DataFrame:
    """:func:`dataset2_files`, restricted to ``files`` (in their order) when given."""
    every = dataset2_files(blood_cells_dir)
    if files is None:
        return every
    by_path = {p.resolve(): i for i, p in enumerate(every["path"])}
    unknown = [str(p) for p in files if Path(p).resolve() not in by_path]
    if unknown:
        raise ValueError(f"not dataset2-master images of {blood_cells_dir}: {unknown[:3]}")
    return every.iloc[[by_path[Path(p).resolve()] for p in files]].reset_index(drop=True)


def build_source_map(
    blood_cells_dir: Path,
    bccd_dir: Path,
    *,
    files: Sequence[Path] | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> pd.DataFrame:
    """The source map of dataset2-master, rebuilt from the images (see the module docstring).

    Args:
        blood_cells_dir: the ``blood-cells`` data set folder (holds ``dataset2-master/images``).
        bccd_dir: the ``BCCD`` data set folder (holds ``JPEGImages/BloodImage_*.jpg``).
        files: only these dataset2 images (paths under ``dataset2-master/images/<split>/<class>/``);
            default all of them.
        progress: show tqdm progress bars.
        workers: threads (default: the CPU cores this process may use).

    Returns:
        One row per image, columns :data:`COLUMNS`: ``split``, ``cls`` (folder class), ``fn``
        (file name), ``k`` (the ``k`` of ``_{k}_{r}.jpeg``), ``src`` (``BloodImage_{srcid:05d}.jpg``),
        ``v1``/``v2`` (votes of the best and runner-up original), ``confident`` (``v1 >= MIN_VOTES``
        and ``v1 >= MIN_MARGIN * v2``), ``srcid`` (BCCD image number, as float) and ``srclabel``
        (``dataset-master/labels.csv``'s Category of ``srcid``, raw text; NaN where labels.csv is
        missing or has no label for it). An image with fewer than :data:`MIN_MATCH_VOTES` votes
        matched no original: its ``src`` and ``srclabel`` are NaN, ``confident`` is False and its
        ``srcid`` is the negative :func:`pseudo_source` of its class and split.
        Sorted by split, class, ``k`` and file name when ``files`` is None, else in ``files`` order.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1 or None, got {workers}")
    table = _selected_files(blood_cells_dir, files)
    index = build_index(bccd_dir, progress=progress, workers=workers)
    matched = match_images(index, list(table["path"]), progress=progress, workers=workers)
    out = pd.concat([table.drop(columns="path"), matched], axis=1)
    out["k"] = [_dataset2_k(fn) for fn in out["fn"]]
    found = out["v1"] >= MIN_MATCH_VOTES
    out["src"] = [f"BloodImage_{int(s):05d}.jpg" if ok else np.nan for s, ok in zip(out["srcid"], found, strict=True)]
    labels_csv = Path(blood_cells_dir) / "dataset-master" / "labels.csv"
    labels = source_labels(labels_csv) if labels_csv.is_file() else {}
    out["srclabel"] = [labels.get(int(s), np.nan) if ok else np.nan for s, ok in zip(out["srcid"], found, strict=True)]
    unmatched = out.loc[~found, ["split", "cls"]].itertuples(index=False)
    out.loc[~found, "srcid"] = [float(pseudo_source(split, cls)) for split, cls in unmatched]
    if files is None:
        out = out.sort_values(["split", "cls", "k", "fn"], kind="stable").reset_index(drop=True)
    return out[list(COLUMNS)]


def _dataset2_k(fn: str) -> int:
    """``"_12_3456.jpeg"`` -> 12."""
    match = _DATASET2_NAME.fullmatch(fn)
    if match is None:
        raise ValueError(f"not a dataset2-master file name (_<k>_<r>.jpeg): {fn!r}")
    return int(match.group(1))
