"""Out-of-distribution flags: tell the user when an input is unlike what the models were trained on.

Per field: its colour statistics far from the general detector's training fields
(:class:`bloodlib.imaging.stain.ColourModel`, largest robust z-score above ``colour_limit``), no red
cells to measure the scale, an RBC diameter outside ``diameter_range`` pixels, or a scale estimate
resting on fewer than :data:`MIN_CELLS` cells or with a wide spread. Per WBC: its top class
probability below ``confidence``. A sample whose fields are mostly out of range, or whose WBCs are
mostly uncertain, gets its counts and differential flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bloodlib.imaging.stain import ColourModel

MIN_CELLS = 3  # a scale estimate resting on fewer cells is unreliable
MAX_SPREAD = 0.6  # ... or one whose sizes spread more than this (IQR / median)
MOSTLY = 0.5  # a sample is flagged when more than this share of its fields (or WBCs) is


@dataclass
class OodReference:
    """What inputs are compared with.

    Attributes:
        colour: colour statistics of the training fields (None: not available, no colour flag).
        colour_limit: a field whose colour score exceeds this is out of range.
        diameter_range: ``(low, high)`` RBC diameters in pixels the models handle.
        confidence: a WBC whose top class probability is below this is uncertain.
    """

    colour: ColourModel | None
    colour_limit: float
    diameter_range: tuple[float, float]
    confidence: float


def field_flags(colour: dict[str, float] | None, scale: dict[str, Any] | None, ref: OodReference) -> dict[str, Any]:
    """``ood_colour_score``, ``ood`` (bool) and ``ood_reasons`` (text) of one field from its colour
    statistics and how its scale was found (:func:`bloodlib.pipeline.infer.scaled_input`)."""
    reasons = []
    score = ref.colour.score(colour) if ref.colour is not None and colour is not None else math.nan
    if score > ref.colour_limit:
        reasons.append(f"colours unlike the training fields (score {score:.1f} > {ref.colour_limit:g})")
    scale = scale or {}
    diameter = scale.get("rbc_diameter_px", math.nan)
    low, high = ref.diameter_range
    if scale.get("source") == "fallback":
        reasons.append("no red cells to measure the magnification")
    elif not low <= diameter <= high:
        reasons.append(f"RBC diameter {diameter:.0f} px outside the {low:g}-{high:g} px the models handle")
    elif scale.get("source") == "estimated" and (
        scale.get("cells", 0) < MIN_CELLS or scale.get("spread", 0.0) > MAX_SPREAD
    ):
        reasons.append(f"scale estimate unreliable ({scale.get('cells')} cells, spread {scale.get('spread', 0):.2f})")
    return {"ood_colour_score": score, "ood": bool(reasons), "ood_reasons": "; ".join(reasons)}


def uncertain_wbcs(probabilities: np.ndarray, ref: OodReference) -> np.ndarray:
    """``(N,)`` bool: WBCs whose top class probability (of ``(N, C)``) is below ``ref.confidence``."""
    probabilities = np.asarray(probabilities)
    if probabilities.size == 0:
        return np.zeros(len(probabilities), bool)
    return probabilities.max(axis=1) < ref.confidence


def sample_flags(fields_ood: list[bool], wbc_uncertain: int, wbc_total: int) -> dict[str, Any]:
    """Whether a sample's counts and differential are flagged: more than half of its fields out of
    range, or more than half of its WBCs uncertain; ``reasons`` says which."""
    share_fields = float(np.mean(fields_ood)) if fields_ood else math.nan
    share_wbc = wbc_uncertain / wbc_total if wbc_total else math.nan
    reasons = []
    if share_fields > MOSTLY:
        reasons.append(f"{sum(fields_ood)} of {len(fields_ood)} fields unlike the training data")
    if share_wbc > MOSTLY:
        reasons.append(f"{wbc_uncertain} of {wbc_total} WBC subtypes uncertain")
    return {
        "fields_ood_share": share_fields,
        "wbc_uncertain_share": share_wbc,
        "flagged": bool(reasons),
        "flag_reasons": reasons,
    }


def flag_field(result: Any, ref: OodReference | None) -> None:
    """Set ``result.flags`` (a :class:`~bloodlib.pipeline.infer.FieldResult`): :func:`field_flags` and
    the number of uncertain WBCs; nothing without a reference (the BCCD models)."""
    if ref is None or not result.ok:
        return
    wbc = result.subtype >= 0
    flags = field_flags(result.colour, result.cell_scale, ref)
    flags["wbc_uncertain"] = int(uncertain_wbcs(result.subtype_prob[wbc], ref).sum())
    result.flags = flags
