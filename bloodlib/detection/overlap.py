"""Overlapping fields of view among BCCD's images: test images that show part of a training image.

BCCD holds several pairs of images of the same smear region taken a few cells apart (the
stage moved, the camera did not turn or zoom). When one image of such a pair is a test image
and the other a training or validation image, a detector is tested partly on cells it was
trained or selected on. :func:`bccd_overlaps` finds every such pair among all BCCD images:

1. every image is read in grey and resized to 320x240 (``cv2.INTER_AREA``), SIFT keypoints
   and descriptors are computed (about 80 per image: a smear is smooth);
2. for each pair, descriptors are matched by brute force with Lowe's ratio test
   (:data:`RATIO`); with at least :data:`MIN_MATCHES` matches a similarity transform
   (rotation, uniform scale, shift) is fitted by RANSAC (``cv2.estimateAffinePartial2D``,
   :data:`RANSAC_PX` pixels, OpenCV's RNG seeded per pair so a run is reproducible);
3. the pair *overlaps* when at least :data:`MIN_INLIERS` matches agree with the transform and
   its scale is within :data:`MAX_SCALE_ERROR` of 1 (the same microscope and magnification).

Sensor dust sits at the same pixels in every image and gives a handful of matches, but their
transforms are degenerate (scale near 0) or have few inliers: on BCCD the true overlaps have
13-46 inliers at scale 1.000 +- 0.002, the best other pair 7.

The result is cached (``<cache>/derived/BCCD/overlaps-<digest>.csv``, the digest covering the
method's constants and the image names and sizes): about ten CPU seconds the first time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from bloodlib.detection.data import Annotation

#: (width, height) every image is resized to before SIFT.
IMAGE_SIZE = (320, 240)
#: Lowe's ratio test: a match needs nearest distance < RATIO * second-nearest distance.
RATIO = 0.75
#: Fewer ratio-test matches than this: no transform is fitted.
MIN_MATCHES = 8
#: RANSAC reprojection threshold in pixels of the resized image.
RANSAC_PX = 3.0
#: An overlap needs at least this many RANSAC inliers ...
MIN_INLIERS = 10
#: ... and a transform whose scale is within this of 1.
MAX_SCALE_ERROR = 0.02
#: OpenCV RNG seed, set before each pair's RANSAC.
RANSAC_SEED = 0
#: Bump when the method changes in a way the constants above do not capture.
METHOD_VERSION = 1

#: Columns of :func:`find_overlaps`' and :func:`bccd_overlaps`' tables.
COLUMNS = ("image_a", "image_b", "matches", "inliers", "scale", "rotation_deg", "shift_x", "shift_y", "overlap")


@dataclass(frozen=True)
class Features:
    """SIFT keypoints of one resized grey image: ``points`` (n, 2) float32 pixels, ``descriptors`` (n, 128)."""

    points: np.ndarray
    descriptors: np.ndarray


def method_signature() -> dict[str, object]:
    """Every constant that shapes the result, for the cache key."""
    return {
        "version": METHOD_VERSION,
        "image_size": IMAGE_SIZE,
        "ratio": RATIO,
        "min_matches": MIN_MATCHES,
        "ransac_px": RANSAC_PX,
        "min_inliers": MIN_INLIERS,
        "max_scale_error": MAX_SCALE_ERROR,
        "ransac_seed": RANSAC_SEED,
    }


def image_features(path: Path, sift: cv2.SIFT | None = None) -> Features:
    """:class:`Features` of the image at ``path`` (grey, resized to :data:`IMAGE_SIZE`).

    Raises:
        ValueError: the file cannot be read as an image.
    """
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise ValueError(f"cannot read image {path}")
    grey = cv2.resize(grey, IMAGE_SIZE, interpolation=cv2.INTER_AREA)
    keypoints, descriptors = (sift or cv2.SIFT_create()).detectAndCompute(grey, None)
    if descriptors is None:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
    return Features(np.float32([k.pt for k in keypoints]), descriptors.astype(np.float32))


def match_pair(a: Features, b: Features, matcher: cv2.BFMatcher | None = None) -> dict[str, float] | None:
    """The similarity transform mapping ``a``'s keypoints onto ``b``'s, or None (too few matches).

    Returns ``{"matches", "inliers", "scale", "rotation_deg", "shift_x", "shift_y", "overlap"}``: ratio-test
    matches, RANSAC inliers, the transform (shift in pixels of the resized image) and whether it
    passes the overlap rule (module docstring).
    """
    if len(a.descriptors) < 2 or len(b.descriptors) < 2:
        return None
    pairs = (matcher or cv2.BFMatcher(cv2.NORM_L2)).knnMatch(a.descriptors, b.descriptors, k=2)
    good = [m for m, n in (p for p in pairs if len(p) == 2) if m.distance < RATIO * n.distance]
    if len(good) < MIN_MATCHES:
        return None
    source = a.points[[m.queryIdx for m in good]]
    target = b.points[[m.trainIdx for m in good]]
    cv2.setRNGSeed(RANSAC_SEED)
    transform, inliers = cv2.estimateAffinePartial2D(
        source, target, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX, maxIters=2000, confidence=0.99
    )
    if transform is None:
        return None
    scale = float(np.hypot(transform[0, 0], transform[1, 0]))
    n_inliers = int(inliers.sum())
    return {
        "matches": len(good),
        "inliers": n_inliers,
        "scale": scale,
        "rotation_deg": float(np.degrees(np.arctan2(transform[1, 0], transform[0, 0]))),
        "shift_x": float(transform[0, 2]),
        "shift_y": float(transform[1, 2]),
        "overlap": n_inliers >= MIN_INLIERS and abs(scale - 1.0) <= MAX_SCALE_ERROR,
    }


def find_overlaps(
    images: dict[str, Path], pairs: Sequence[tuple[str, str]] | None = None, *, keep_all: bool = False
) -> pd.DataFrame:
    """Match image pairs (default: every unordered pair of ``images``, keyed by image id).

    Returns one row per pair with a fitted transform (:data:`COLUMNS`), only the overlapping
    pairs unless ``keep_all``; ``image_a`` < ``image_b`` when ``pairs`` is None.

    Raises:
        ValueError: a pair names an image id that is not in ``images``.
    """
    pairs = list(combinations(sorted(images), 2)) if pairs is None else list(pairs)
    unknown = sorted({i for pair in pairs for i in pair} - set(images))
    if unknown:
        raise ValueError(f"pairs name images not given: {unknown[:5]}")
    sift, matcher = cv2.SIFT_create(), cv2.BFMatcher(cv2.NORM_L2)
    features = {i: image_features(images[i], sift) for i in sorted({i for pair in pairs for i in pair})}
    rows = []
    for a, b in pairs:
        found = match_pair(features[a], features[b], matcher)
        if found is not None and (keep_all or found["overlap"]):
            rows.append({"image_a": a, "image_b": b, **found})
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype({"overlap": bool})


def _digest(paths: dict[str, Path]) -> str:
    digest = hashlib.sha256(json.dumps(method_signature(), sort_keys=True).encode())
    for image_id, path in sorted(paths.items()):
        digest.update(f"{image_id}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:12]


def bccd_overlaps(bccd_dir: Path, *, cache: bool = True) -> pd.DataFrame:
    """Every overlapping pair among the images of ``bccd_dir/JPEGImages`` (:func:`find_overlaps`),
    read from or written to the user cache (``cache=False``: computed afresh, not written).

    Raises:
        ValueError: no ``BloodImage_*.jpg`` in the folder.
    """
    from bloodlib.fsutil import atomic_write_text
    from bloodlib.paths import cache_dir

    paths = {p.stem: p for p in sorted((Path(bccd_dir) / "JPEGImages").glob("BloodImage_*.jpg"))}
    if not paths:
        raise ValueError(f"no BloodImage_*.jpg under {Path(bccd_dir) / 'JPEGImages'}")
    target = cache_dir() / "derived" / "BCCD" / f"overlaps-{_digest(paths)}.csv"
    if cache and target.is_file():
        return pd.read_csv(target).astype({"overlap": bool})
    found = find_overlaps(paths)
    if cache:
        atomic_write_text(target, found.to_csv(index=False))
    return found


def split_overlaps(
    overlaps: pd.DataFrame, parts: dict[str, Sequence[Annotation]], held_out: str = "test"
) -> pd.DataFrame:
    """The overlapping pairs of ``overlaps`` that join a ``held_out`` image to an image of another part.

    One row per such pair: ``image`` (the held-out image), ``other``, ``other_part`` (e.g. ``train``),
    ``inliers`` and ``shift_px`` (how far the field moved, in pixels at 320x240); sorted by image and other.
    """
    if held_out not in parts:
        raise ValueError(f"no part {held_out!r}; parts: {', '.join(parts)}")
    part_of = {a.image_id: name for name, items in parts.items() for a in items}
    rows = []
    for row in overlaps[overlaps["overlap"]].itertuples():
        for image, other in ((row.image_a, row.image_b), (row.image_b, row.image_a)):
            if part_of.get(image) == held_out and part_of.get(other) not in (None, held_out):
                rows.append(
                    {
                        "image": image,
                        "other": other,
                        "other_part": part_of[other],
                        "inliers": int(row.inliers),
                        "shift_px": float(np.hypot(row.shift_x, row.shift_y)),
                    }
                )
    columns = ["image", "other", "other_part", "inliers", "shift_px"]
    return pd.DataFrame(rows, columns=columns).sort_values(["image", "other"]).reset_index(drop=True)


def overlap_free(annotations: Sequence[Annotation], overlapping: pd.DataFrame) -> list[int]:
    """Positions in ``annotations`` of the images that are not an ``image`` of :func:`split_overlaps`."""
    excluded = set(overlapping["image"])
    return [i for i, a in enumerate(annotations) if a.image_id not in excluded]
