"""Stain normalisation (Reinhard, Macenko) and colour statistics of smear fields.

- *Reinhard* (Reinhard et al., IEEE CG&A 2001): shift and scale each CIELAB channel so that its mean and
  standard deviation over the field match the reference's.
- *Macenko* (Macenko et al., ISBI 2009): in optical density (OD, ``-log(I / I0)`` with the background
  ``I0`` estimated per channel), the stained pixels span a plane; the two stain directions are the
  robust extreme angles (1st and 99th percentile) in that plane. Each pixel's stain concentrations are
  rescaled so the 99th percentiles match the reference's and recombined with the reference's stain
  vectors and background. Stains are matched by role, not hue (a Raabin RBC is as blue as a BCCD
  nucleus): the first is the stain dense in few pixels (nuclei: the larger ratio of 99th percentile to
  median concentration), the second the one spread over the RBCs that fill a smear.

Both leave a field with almost no stained pixels unchanged (Reinhard by blending towards the input as
the stained share falls under 5 %), and never return NaN. :func:`colour_stats` and :class:`ColourModel`
describe a field's colour for out-of-distribution flags.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from bloodlib.imaging.arrays import check_rgb

METHODS = ("reinhard", "macenko")
_STAINED_OD = 0.15  # a pixel is stained when the norm of its OD vector exceeds this
_MIN_STAINED = 0.01  # Macenko leaves a field unchanged with fewer stained pixels than this share
_FULL_STAINED = 0.05  # Reinhard blends towards the input under this stained share
_SAMPLE = 20_000  # stained pixels per image used to fit the stain plane


@dataclass(frozen=True)
class StainReference:
    """Target colours of a normalisation (a plain dict via :meth:`to_dict` for JSON).

    Attributes:
        method: ``"reinhard"`` or ``"macenko"``.
        lab_mean, lab_std: (3,) CIELAB mean and standard deviation (L in 0-100) -- Reinhard.
        stains: (2, 3) unit OD vectors of the two stains (RGB order) -- Macenko.
        max_concentrations: (2,) 99th-percentile concentration of each stain -- Macenko.
        background: (3,) RGB background intensity ``I0`` -- Macenko.
    """

    method: str
    lab_mean: tuple[float, ...] | None = None
    lab_std: tuple[float, ...] | None = None
    stains: tuple[tuple[float, ...], ...] | None = None
    max_concentrations: tuple[float, ...] | None = None
    background: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        needed = (
            ("lab_mean", "lab_std") if self.method == "reinhard" else ("stains", "max_concentrations", "background")
        )
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.method} StainReference needs {', '.join(missing)}")

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StainReference:
        def nested(value):
            return tuple(nested(item) for item in value) if isinstance(value, list | tuple) else float(value)

        return cls(**{key: (value if key == "method" else nested(value)) for key, value in values.items()})


def fit_reference(images: Iterable[np.ndarray], method: str) -> StainReference:
    """The reference colours of (H, W, 3) uint8 RGB ``images``, pooled, for ``method``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    images = list(images)
    if not images:
        raise ValueError("images is empty")
    for index, image in enumerate(images):
        check_rgb(image, name=f"images[{index}]")
    if method == "reinhard":
        lab = np.concatenate([_lab(image).reshape(-1, 3) for image in images])
        return StainReference(method, lab_mean=tuple(map(float, lab.mean(0))), lab_std=tuple(map(float, lab.std(0))))
    backgrounds = np.array([_background(image) for image in images])
    samples = [_stained_od(image, background)[:_SAMPLE] for image, background in zip(images, backgrounds)]
    od = np.concatenate(samples)
    if len(od) < 100:
        raise ValueError("images have too few stained pixels to fit Macenko stain vectors")
    stains = _stain_vectors(od)
    concentrations = _concentrations(od, stains)
    return StainReference(
        method,
        stains=tuple(tuple(map(float, row)) for row in stains),
        max_concentrations=tuple(map(float, np.percentile(concentrations, 99, axis=0))),
        background=tuple(map(float, np.median(backgrounds, axis=0))),
    )


def normalize(image: np.ndarray, reference: StainReference) -> np.ndarray:
    """The (H, W, 3) uint8 RGB ``image`` with its colours mapped to ``reference``'s (same shape, uint8)."""
    check_rgb(image)
    if reference.method == "reinhard":
        return _reinhard(image, reference)
    return _macenko(image, reference)


class StainNormalize(v2.Transform):
    """torchvision-v2 transform: :func:`normalize` on uint8 (3, H, W) images; boxes and labels pass through."""

    _transformed_types = (lambda item: isinstance(item, tv_tensors.Image) or type(item) is torch.Tensor,)

    def __init__(self, reference: StainReference) -> None:
        super().__init__()
        self.reference = reference

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if inpt.dtype != torch.uint8 or inpt.ndim != 3 or inpt.shape[0] != 3:
            raise ValueError(f"StainNormalize needs a uint8 (3, H, W) image, got {inpt.dtype} {tuple(inpt.shape)}")
        rgb = inpt.permute(1, 2, 0).contiguous().cpu().numpy()
        output = torch.from_numpy(normalize(rgb, self.reference)).permute(2, 0, 1).to(inpt.device)
        return tv_tensors.wrap(output, like=inpt) if isinstance(inpt, tv_tensors.Image) else output

    _transform = transform  # the name older torchvision releases call


def colour_stats(image: np.ndarray) -> dict[str, float]:
    """Statistics of an (H, W, 3) uint8 RGB field's colour (NaN where undefined, e.g. no stained pixels).

    ``background_L/a/b``: median CIELAB of the unstained pixels; ``stained_fraction``; ``stained_L/a/b``:
    mean CIELAB of the stained pixels; ``stain1_saturation_deg``, ``stain2_saturation_deg``: angle of
    each Macenko stain vector (1: nuclei, 2: RBCs; see the module docstring) from the grey axis (0 for
    a grey image); ``stain_separation_deg``: angle between the two stain vectors.
    """
    check_rgb(image)
    lab = _lab(image).reshape(-1, 3)
    background = _background(image)
    od = _od(image, background).reshape(-1, 3)
    stained = np.linalg.norm(od, axis=1) > _STAINED_OD
    nan = float("nan")
    stats = {"stained_fraction": float(stained.mean())}
    unstained_lab = np.median(lab[~stained], axis=0) if (~stained).any() else [nan] * 3
    stained_lab = lab[stained].mean(axis=0) if stained.any() else [nan] * 3
    for index, channel in enumerate("Lab"):
        stats[f"background_{channel}"] = float(unstained_lab[index])
        stats[f"stained_{channel}"] = float(stained_lab[index])
    stats.update(stain1_saturation_deg=nan, stain2_saturation_deg=nan, stain_separation_deg=nan)
    if stained.sum() >= 100:
        stains = _stain_vectors(od[stained][:: max(1, int(stained.sum()) // _SAMPLE)])
        grey = np.ones(3) / math.sqrt(3)
        stats["stain1_saturation_deg"] = _degrees(stains[0], grey)
        stats["stain2_saturation_deg"] = _degrees(stains[1], grey)
        stats["stain_separation_deg"] = _degrees(stains[0], stains[1])
    return stats


_MIN_SCALE = {"stained_fraction": 0.02}  # other statistics: LAB units or degrees, at least 1.0


@dataclass(frozen=True)
class ColourModel:
    """Per-statistic median and robust scale (1.4826 x MAD, at least 1 LAB unit / degree) of training
    fields' :func:`colour_stats`; :meth:`score` is a field's largest absolute robust z-score."""

    centre: dict[str, float]
    scale: dict[str, float]

    @classmethod
    def fit(cls, stats: Sequence[dict[str, float]]) -> ColourModel:
        if not stats:
            raise ValueError("stats is empty")
        centre, scale = {}, {}
        for name in stats[0]:
            values = np.array([row[name] for row in stats], dtype=float)
            values = values[np.isfinite(values)]
            if values.size == 0:
                continue
            centre[name] = float(np.median(values))
            mad = 1.4826 * float(np.median(np.abs(values - centre[name])))
            scale[name] = max(mad, _MIN_SCALE.get(name, 1.0))
        return cls(centre, scale)

    def z_scores(self, stats: dict[str, float]) -> dict[str, float]:
        """Robust z-score of each statistic the model knows (NaN where ``stats`` has none)."""
        return {name: (stats.get(name, math.nan) - centre) / self.scale[name] for name, centre in self.centre.items()}

    def score(self, stats: dict[str, float]) -> float:
        """Largest absolute z-score; ``inf`` when no statistic is defined (e.g. a blank field)."""
        values = [abs(value) for value in self.z_scores(stats).values() if math.isfinite(value)]
        return max(values) if values else math.inf

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {"centre": dict(self.centre), "scale": dict(self.scale)}

    @classmethod
    def from_dict(cls, values: dict[str, dict[str, float]]) -> ColourModel:
        return cls(
            {k: float(v) for k, v in values["centre"].items()}, {k: float(v) for k, v in values["scale"].items()}
        )


def _lab(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _background(image: np.ndarray) -> np.ndarray:
    """(3,) background intensity I0: the median colour of the brightest fifth of the pixels."""
    pixels = image.reshape(-1, 3)
    brightness = pixels.sum(axis=1, dtype=np.int32)
    return np.maximum(np.median(pixels[brightness >= np.percentile(brightness, 80)], axis=0), 1.0)


def _od(image: np.ndarray, background: np.ndarray) -> np.ndarray:
    return np.maximum(-np.log((image.astype(np.float64) + 1.0) / (background + 1.0)), 0.0)


def _stained_od(image: np.ndarray, background: np.ndarray) -> np.ndarray:
    od = _od(image, background).reshape(-1, 3)
    od = od[np.linalg.norm(od, axis=1) > _STAINED_OD]
    return od[:: max(1, len(od) // _SAMPLE)]


def _stain_vectors(od: np.ndarray) -> np.ndarray:
    """(2, 3) unit stain vectors from (N, 3) stained OD pixels; the stain dense in few pixels first."""
    _, vectors = np.linalg.eigh(np.cov(od.T))
    plane = vectors[:, [2, 1]]  # the two largest eigenvectors, columns
    plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # point into positive OD
    angles = np.arctan2(od @ plane[:, 1], od @ plane[:, 0])
    low, high = np.percentile(angles, [1, 99])
    stains = np.stack([plane @ [math.cos(a), math.sin(a)] for a in (low, high)])
    stains = np.abs(stains) / np.linalg.norm(stains, axis=1, keepdims=True)
    high, typical = np.percentile(_concentrations(od, stains), [99, 50], axis=0)
    peakedness = high / np.maximum(typical, 1e-6)
    return stains if peakedness[0] >= peakedness[1] else stains[::-1]


def _concentrations(od: np.ndarray, stains: np.ndarray) -> np.ndarray:
    """(N, 2) least-squares concentrations of (N, 3) OD pixels in the two stains, at least 0."""
    return np.maximum(od @ np.linalg.pinv(stains), 0.0)


def _degrees(first: np.ndarray, second: np.ndarray) -> float:
    return math.degrees(math.acos(float(np.clip(first @ second, -1.0, 1.0))))


def _reinhard(image: np.ndarray, reference: StainReference) -> np.ndarray:
    lab = _lab(image)
    mean, std = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0)
    scaled = (lab - mean) / np.maximum(std, 1e-3) * np.array(reference.lab_std) + np.array(reference.lab_mean)
    scaled[..., 0] = np.clip(scaled[..., 0], 0, 100)
    rgb = np.clip(cv2.cvtColor(scaled.astype(np.float32), cv2.COLOR_LAB2RGB), 0, 1) * 255.0
    stained = (np.linalg.norm(_od(image, _background(image)), axis=2) > _STAINED_OD).mean()
    weight = min(1.0, stained / _FULL_STAINED)  # a field with hardly any stain stays as it is
    blended = weight * rgb + (1.0 - weight) * image
    return np.clip(np.nan_to_num(blended), 0, 255).round().astype(np.uint8)


def _macenko(image: np.ndarray, reference: StainReference) -> np.ndarray:
    background = _background(image)
    od = _od(image, background).reshape(-1, 3)
    stained_od = _stained_od(image, background)
    if len(stained_od) < max(100, _MIN_STAINED * len(od)):
        return image.copy()
    stains = _stain_vectors(stained_od)
    if _degrees(stains[0], stains[1]) < 3.0:  # one stain only (e.g. a grey image): no plane to map
        return image.copy()
    concentrations = _concentrations(od, stains)
    maxima = np.maximum(np.percentile(_concentrations(stained_od, stains), 99, axis=0), 1e-6)
    concentrations = concentrations * (np.array(reference.max_concentrations) / maxima)
    target = np.array(reference.background) + 1.0
    rgb = target * np.exp(-concentrations @ np.array(reference.stains)) - 1.0
    return np.clip(np.nan_to_num(rgb), 0, 255).round().reshape(image.shape).astype(np.uint8)


COLOUR_SIDE = 160  # fields are shrunk to this longer side before their colour statistics


def field_colour_stats(rgb: np.ndarray) -> dict[str, float]:
    """:func:`colour_stats` of an ``(H, W, 3)`` uint8 field shrunk to
    :data:`COLOUR_SIDE` pixels on its longer side (fast; what training and inference both use)."""
    import cv2

    height, width = rgb.shape[:2]
    factor = COLOUR_SIDE / max(height, width)
    if factor < 1:
        rgb = cv2.resize(
            rgb, (max(1, round(width * factor)), max(1, round(height * factor))), interpolation=cv2.INTER_AREA
        )
    return colour_stats(rgb)
