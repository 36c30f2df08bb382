"""A field's cell scale: the typical red-cell (RBC) diameter in pixels, measured without a learned model.

A detector trained on fields rescaled so that RBCs have one canonical diameter can read a field from
another microscope, camera or magnification once that field is rescaled the same way; this module
gives the scale. The method (distance-transform centres on a stain mask):

1. *stain density*: optical density (OD) of the green channel -- haemoglobin and the Romanowsky
   stains absorb green most -- against a background fitted as a quadratic surface (in log intensity)
   to the background pixels, so uneven illumination does not count as stain;
2. *cell mask*: OD above ``min(Otsu threshold, 5 x background noise)`` (the noise term keeps pale RBCs
   when a dark WBC dominates the histogram), closed by a 3-pixel disc; its convex holes are filled, so
   a hollow-looking RBC (central pallor) counts as a whole disc, but not the concave gaps that
   touching cells enclose;
3. *cell centres*: maxima of the mask's Euclidean distance transform, each the centre of the largest
   disc inside the mask there; a maximum inside a larger disc is dropped, so touching and overlapping
   cells keep one centre each; cells cut by the border beyond half a radius, and discs mostly on
   nucleus-dark pixels (a WBC), are not measured;
4. *typical size*: the mode of the centres' disc diameters (a kernel density in log size, weighted by
   area, so that the slivers between cells do not win); centres within 0.6-1.6 x the mode are the
   cells; each cell's diameter is that of a disc with the area of its share of the mask (nearest
   centre, at most 1.3 x its disc radius away), so an oval cell counts by its mean axis.

The answer is the cells' median diameter; ``spread`` is their interquartile range over the median.
The measurement runs on a small copy, longest side ``FIRST_SIDE`` px. Cells only a few pixels wide
there would merge into blobs that look like larger cells, so a zoom is trusted only when a closer look
(a centre window at twice the zoom) agrees within 25 %; otherwise the field is measured again closer.
Cells under ``MIN_WORKING_DIAMETER`` working px are measured once more on a copy where they are
``REFINE_DIAMETER`` px wide. A working copy is at most ``MAX_WORKING_SIDE`` px a side (a centre crop of
a very large field). Sizes in steps 2-4 are fixed in working pixels, so the estimate follows a
rescaled image; a 640x480 field takes a few milliseconds on one core.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

from bloodlib.imaging.arrays import check_rgb

RBC_DIAMETER_UM = 7.5
"""Typical diameter of a normal human RBC on a stained smear, micrometres: 7-8 um (NIH Curriculum
Supplements, "Medical reference manual: appearance of normal RBCs"), 6.7-7.7 um with a central pallor
of about a third of the diameter (LabCE, "Appearance of the erythrocyte")."""

METHOD = "distance-transform"
FIRST_SIDE = 160  # longest side of the first working copy, px
MIN_WORKING_DIAMETER = 16.0  # cells smaller than this in the first copy are measured again ...
REFINE_DIAMETER = 32.0  # ... on a copy where they are about this wide, px
MAX_WORKING_SIDE = 512  # a larger working copy is cropped to its centre, px
_CHECK_CELLS = 4.0  # the closer look's window spans at least this many cell diameters
_AGREE = 1.25  # a closer look agrees when the medians differ by at most this factor
_NOISE_SIGMAS = 5.0  # mask threshold cap: this many background-noise standard deviations
_MIN_THRESHOLD = 0.03  # OD floor of the mask threshold (a blank field has no cells)
_NUCLEUS_FACTOR = 2.0  # nucleus-dark: OD above this times the median OD of the mask
_MIN_RADIUS = 1.5  # px; smaller distance maxima are noise
_SIZE_WINDOW = (0.6, 1.6)  # cells: disc diameters within this factor of the typical size
_SMALL_HOLE = 16.0  # px^2; smaller holes are filled whatever their shape
_PALLOR_SOLIDITY = 0.85  # a hole at least this convex (area / hull area) is a pallor and is filled
_SHARE_CAP = 1.3  # a cell's share of the mask reaches at most this times its disc radius
_DISC3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
_SQUARE3 = np.ones((3, 3), np.uint8)


@dataclass(frozen=True)
class ScaleEstimate:
    """A field's typical RBC diameter.

    Attributes:
        diameter_px: median RBC diameter in the input image's pixels (``nan`` when ``cells == 0``).
        cells: how many cell-like objects the estimate rests on.
        spread: interquartile range of their diameters over the median (``nan`` when ``cells == 0``);
            large values (or few cells) flag an unreliable estimate.
        method: name of the method that made the estimate.
    """

    diameter_px: float
    cells: int
    spread: float
    method: str


def diameter_from_um_per_pixel(um_per_pixel: float) -> float:
    """The typical RBC diameter in pixels for a known pixel size (micrometres per pixel)."""
    if not (isinstance(um_per_pixel, int | float) and math.isfinite(um_per_pixel) and um_per_pixel > 0):
        raise ValueError(f"um_per_pixel must be a positive finite number, got {um_per_pixel!r}")
    return RBC_DIAMETER_UM / float(um_per_pixel)


def estimate_rbc_diameter(image: np.ndarray) -> ScaleEstimate:
    """Estimate the typical RBC diameter of an (H, W, 3) uint8 RGB smear field, in its pixels.

    A field without usable cells (blank, only cut cells, only a WBC) gives ``cells=0`` and
    ``diameter_px=nan``; see the module docstring for the method.
    """
    check_rgb(image)
    zoom = min(1.0, FIRST_SIDE / max(image.shape[:2]))
    sizes = _measure(image, zoom=zoom, window=MAX_WORKING_SIDE / zoom)
    while zoom < 1.0:
        # trust a zoom only when a closer look (a centre window at twice the zoom) agrees
        finer = min(1.0, 2.0 * zoom)
        median = float(np.median(sizes)) if sizes.size else 0.0
        closer = _measure(image, zoom=finer, window=max(FIRST_SIDE / finer, _CHECK_CELLS * median))
        if sizes.size and closer.size and abs(math.log(np.median(closer) / median)) <= math.log(_AGREE):
            break
        zoom = finer
        sizes = _measure(image, zoom=zoom, window=MAX_WORKING_SIDE / zoom)
    median = float(np.median(sizes)) if sizes.size else 0.0
    if 0 < median * zoom < MIN_WORKING_DIAMETER and zoom < 1.0:  # small in the working copy: measure closer
        zoom = min(1.0, REFINE_DIAMETER / median)
        sizes = _measure(image, zoom=zoom, window=MAX_WORKING_SIDE / zoom)
    if sizes.size == 0:
        return ScaleEstimate(float("nan"), 0, float("nan"), METHOD)
    median = float(np.median(sizes))
    q1, q3 = np.percentile(sizes, [25, 75])
    return ScaleEstimate(median, int(sizes.size), float((q3 - q1) / median), METHOD)


def box_diameter(boxes: np.ndarray, *, width: int, height: int, margin: float = 2.0) -> float:
    """Reference RBC diameter of a labelled field: median ``sqrt(w * h)`` of its (N, 4) xyxy RBC boxes.

    Boxes within ``margin`` px of the image border (cut cells) are left out when at least 3 others
    remain. ``nan`` for no boxes.
    """
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    if len(boxes) == 0:
        return float("nan")
    low, high = boxes[:, :2].min(axis=1), (boxes[:, 2:] - [width - 1, height - 1]).max(axis=1)
    inner = (low > margin) & (high < -margin)
    used = boxes[inner] if inner.sum() >= 3 else boxes
    return float(np.median(np.sqrt((used[:, 2] - used[:, 0]) * (used[:, 3] - used[:, 1]))))


def scale_errors(
    images: Iterable[np.ndarray],
    truths: Iterable[float],
    *,
    sources: Iterable[str] | None = None,
    scales: tuple[float, ...] = (1.0,),
) -> pd.DataFrame:
    """Estimate each image's RBC diameter, also after rescaling it by each of ``scales``.

    ``truths`` are reference diameters (e.g. :func:`box_diameter`) in the unscaled images' pixels.
    Returns one row per image and scale: ``image`` (index), ``source``, ``scale``, ``truth_px``
    (truth x scale), ``diameter_px``, ``cells``, ``spread``, ``relative_error``
    (``diameter_px / truth_px - 1``) and ``seconds``. :func:`summarize_scale_errors` condenses it.
    """
    sources = iter(sources) if sources is not None else None
    rows = []
    for index, (image, truth) in enumerate(zip(images, truths, strict=True)):
        source = next(sources) if sources is not None else ""
        for scale in scales:
            scaled = image if scale == 1.0 else _rescale(image, scale)
            start = time.perf_counter()
            estimate = estimate_rbc_diameter(scaled)
            seconds = time.perf_counter() - start
            rows.append(
                dict(
                    image=index,
                    source=source,
                    scale=scale,
                    truth_px=truth * scale,
                    diameter_px=estimate.diameter_px,
                    cells=estimate.cells,
                    spread=estimate.spread,
                    seconds=seconds,
                )
            )
    errors = pd.DataFrame(rows)
    if not errors.empty:
        errors["relative_error"] = errors["diameter_px"] / errors["truth_px"] - 1.0
    return errors


def summarize_scale_errors(errors: pd.DataFrame) -> pd.DataFrame:
    """Per source and scale: images, median absolute relative error, median relative error (bias),
    share within +-15 % and +-30 % (a missing estimate counts as outside), share without an estimate,
    median milliseconds."""
    absolute = errors["relative_error"].abs()
    grouped = errors.assign(
        absolute=absolute,
        within15=absolute <= 0.15,
        within30=absolute <= 0.30,
        missing=errors["diameter_px"].isna(),
        ms=errors["seconds"] * 1e3,
    )
    return grouped.groupby(["source", "scale"], as_index=False).agg(
        images=("image", "size"),
        median_abs_error=("absolute", "median"),
        median_error=("relative_error", "median"),
        within_15pct=("within15", "mean"),
        within_30pct=("within30", "mean"),
        missing=("missing", "mean"),
        median_ms=("ms", "median"),
    )


def _rescale(image: np.ndarray, zoom: float) -> np.ndarray:
    height, width = image.shape[:2]
    size = (max(1, round(width * zoom)), max(1, round(height * zoom)))
    interpolation = cv2.INTER_AREA if zoom < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def _measure(image: np.ndarray, *, zoom: float, window: float) -> np.ndarray:
    """Cell diameters (input px) in the image's centre ``window`` x ``window`` px, measured at ``zoom``."""
    height, width = image.shape[:2]
    side = int(math.ceil(window))
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    crop = image[top : top + side, left : left + side]
    return _cell_diameters(crop if zoom == 1.0 else _rescale(crop, zoom)) / zoom


def _green_density(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """(H, W) green-channel optical density against a fitted quadratic background, and the mask threshold."""
    height, width = rgb.shape[:2]
    log_green = np.log1p(rgb[..., 1].astype(np.float32))
    y, x = np.linspace(-0.5, 0.5, height, dtype=np.float32), np.linspace(-0.5, 0.5, width, dtype=np.float32)
    step = max(1, min(height, width) // 48)  # fit on a sub-grid
    ys, xs = np.meshgrid(y[::step], x[::step], indexing="ij")
    design = np.stack([np.ones_like(xs), xs, ys, xs * xs, ys * ys, xs * ys], axis=-1).reshape(-1, 6)
    values = log_green[::step, ::step].ravel()
    background = values >= np.percentile(values, 75)  # start from the brightest quarter
    for _ in range(2):
        chosen = design[background]  # least squares by the 6x6 normal equations (lstsq is slow here)
        coef = np.linalg.solve(chosen.T @ chosen + 1e-6 * np.eye(6), chosen.T @ values[background])
        density = design @ coef - values
        threshold = _mask_threshold(density)
        background = density <= threshold
    fitted = coef[0] + coef[1] * x[None] + coef[2] * y[:, None] + coef[3] * x[None] ** 2
    fitted = fitted + coef[4] * y[:, None] ** 2 + coef[5] * x[None] * y[:, None]
    return fitted - log_green, threshold


def _mask_threshold(density: np.ndarray) -> float:
    cap = max(float(np.percentile(density, 95)), 1e-3)
    scaled = np.clip(density / cap * 255.0, 0, 255).astype(np.uint8)
    otsu = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0] / 255.0 * cap
    below = density[density < 0]
    noise = float(np.sqrt(np.mean(below**2))) if below.size else 0.0
    return max(_MIN_THRESHOLD, min(otsu, _NOISE_SIGMAS * noise))


def _fill_pallor(mask: np.ndarray) -> np.ndarray:
    """Fill the mask's convex holes (central pallor), not the concave gaps enclosed by touching cells."""
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return mask
    filled = mask.copy()
    for contour, (_, _, _, parent) in zip(contours, hierarchy[0]):
        if parent < 0:
            continue
        area = cv2.contourArea(contour)
        if area < _SMALL_HOLE or area >= _PALLOR_SOLIDITY * cv2.contourArea(cv2.convexHull(contour)):
            cv2.drawContours(filled, [contour], -1, 1, thickness=cv2.FILLED)
    return filled


def _disc_centres(mask: np.ndarray) -> np.ndarray:
    """(N, 3) rows ``y, x, radius`` of the distance maxima not inside a larger one's disc, largest first."""
    distance = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    ys, xs = np.nonzero((distance >= cv2.dilate(distance, _SQUARE3)) & (distance >= _MIN_RADIUS))
    radii = distance[ys, xs]
    order = np.argsort(-radii, kind="stable")
    ys, xs, radii = ys[order].astype(float), xs[order].astype(float), radii[order].astype(float)
    alive = np.ones(len(radii), bool)
    kept = []
    for i in range(len(radii)):
        if alive[i]:
            kept.append(i)
            alive &= (ys - ys[i]) ** 2 + (xs - xs[i]) ** 2 >= radii[i] ** 2
    return np.stack([ys[kept], xs[kept], radii[kept]], axis=1) if kept else np.empty((0, 3))


def _cell_diameters(rgb: np.ndarray) -> np.ndarray:
    """Diameters (working px) of the cells the estimate rests on; empty when there are none."""
    if min(rgb.shape[:2]) < 8:
        return np.empty(0)
    density, threshold = _green_density(rgb)
    stained = density > threshold
    if stained.sum() < 20:
        return np.empty(0)
    nucleus = (density > _NUCLEUS_FACTOR * np.median(density[stained])).astype(np.float32)
    mask = _fill_pallor(cv2.morphologyEx(stained.astype(np.uint8), cv2.MORPH_CLOSE, _DISC3))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _SQUARE3)
    centres = _disc_centres(mask)
    if len(centres) == 0:
        return np.empty(0)
    ys, xs, radii = centres.T
    height, width = mask.shape
    margin = 0.5 * radii  # cut cells count while their centre is half a radius inside
    visible = (ys >= margin) & (xs >= margin) & (ys + margin <= height - 1) & (xs + margin <= width - 1)
    measurable = visible & (_box_share(nucleus, centres, 0.7) < 0.2)
    if not measurable.any():
        return np.empty(0)
    diameters = 2 * radii + 1
    typical = _typical_size(diameters[measurable])
    in_window = (diameters >= _SIZE_WINDOW[0] * typical) & (diameters <= _SIZE_WINDOW[1] * typical)
    shares = _share_diameters(mask, centres[in_window])
    return shares[measurable[in_window]]


def _box_share(values: np.ndarray, centres: np.ndarray, half: float) -> np.ndarray:
    """Mean of ``values`` in the square of half-side ``half * radius`` around each centre."""
    integral = cv2.integral(values)
    height, width = values.shape
    ys, xs, radii = centres.T
    y0, y1 = np.clip(ys - half * radii, 0, height).astype(int), np.clip(ys + half * radii + 1, 0, height).astype(int)
    x0, x1 = np.clip(xs - half * radii, 0, width).astype(int), np.clip(xs + half * radii + 1, 0, width).astype(int)
    total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return total / np.maximum((y1 - y0) * (x1 - x0), 1)


def _typical_size(diameters: np.ndarray) -> float:
    """Mode of an area-weighted kernel density of log diameters (bandwidth 0.15)."""
    logs = np.log(diameters)
    grid = np.linspace(logs.min() - 0.3, logs.max() + 0.3, 128)
    density = (diameters[None] ** 2 * np.exp(-0.5 * ((grid[:, None] - logs[None]) / 0.15) ** 2)).sum(axis=1)
    return float(np.exp(grid[np.argmax(density)]))


def _share_diameters(mask: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Area-equivalent diameter of each centre's share of the mask (nearest centre, capped distance)."""
    seeds = np.ones(mask.shape, np.uint8)
    ys, xs = centres[:, 0].astype(int), centres[:, 1].astype(int)
    seeds[ys, xs] = 0
    distance, labels = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    owner_of_label = np.zeros(labels.max() + 1, int)
    owner_of_label[labels[ys, xs]] = np.arange(len(centres))
    owner = owner_of_label[labels]
    counted = (mask > 0) & (distance <= _SHARE_CAP * centres[owner, 2])
    areas = np.bincount(owner[counted], minlength=len(centres))
    return np.sqrt(4.0 * areas / np.pi)
