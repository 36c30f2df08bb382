"""Per-field counts and per-sample aggregates: totals, per-field means, the WBC differential, ratios.

A sample is one patient's smear; its fields are the images analysed without error. Counts are
cells *seen* on those images (not concentrations); the differential and the ratios are
scale-free and are what the COVID-19 model reads (:mod:`bloodlib.pipeline.covid`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bloodlib.detection.data import CLASSES
from bloodlib.pipeline.features import SUBTYPES, scale_free_features
from bloodlib.pipeline.infer import FieldResult
from bloodlib.pipeline.io import Field
from bloodlib.pipeline.ood import sample_flags

#: Output names of the detection classes (``CLASSES`` order).
CELL_COLUMNS: tuple[str, ...] = ("rbc", "wbc", "platelets")


def field_counts(result: FieldResult) -> dict[str, int]:
    """Cells counted on one image: ``rbc``, ``wbc``, ``platelets`` and one count per WBC subtype."""
    counts = {col: int((result.labels == k + 1).sum()) for k, col in enumerate(CELL_COLUMNS)}
    wbc = result.labels == CLASSES.index("WBC") + 1
    for k, name in enumerate(SUBTYPES):
        counts[name] = int((result.subtype[wbc] == k).sum())
    return counts


@dataclass
class SampleAggregate:
    """One sample's numbers (see :func:`aggregate`)."""

    sample: str
    source: str
    fields: int
    fields_ok: int
    totals: dict[str, int] = field(default_factory=dict)
    per_field: dict[str, float] = field(default_factory=dict)
    differential_pct: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)
    flags: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.fields_ok > 0


def aggregate(
    sample: str, source: str, fields: list[Field], results: list[FieldResult], pseudo_count: float
) -> SampleAggregate:
    """Totals and per-field means of every count, the differential (counts and % of classified WBCs),
    the plain ratios (NaN where undefined) and the scale-free model features (ratios with
    ``pseudo_count``, see :func:`~bloodlib.pipeline.features.scale_free_features`)."""
    ok = [r for r in results if r.ok]
    agg = SampleAggregate(sample, source, len(fields), len(ok))
    names = CELL_COLUMNS + SUBTYPES
    counts = [field_counts(r) for r in ok]
    agg.totals = {n: int(sum(c[n] for c in counts)) for n in names}
    agg.per_field = {n: (agg.totals[n] / len(ok) if ok else math.nan) for n in CELL_COLUMNS}
    t = agg.totals
    classified = sum(t[s] for s in SUBTYPES)
    agg.differential_pct = {s: (100.0 * t[s] / classified if classified else math.nan) for s in SUBTYPES}
    with np.errstate(divide="ignore", invalid="ignore"):
        agg.ratios = {
            "nlr": t["neutrophil"] / t["lymphocyte"] if t["lymphocyte"] else math.nan,
            "platelets_per_wbc": t["platelets"] / t["wbc"] if t["wbc"] else math.nan,
            "wbc_per_1000_rbc": 1000.0 * t["wbc"] / t["rbc"] if t["rbc"] else math.nan,
        }
    frame = scale_free_features(
        neutrophils=[t["neutrophil"]],
        lymphocytes=[t["lymphocyte"]],
        monocytes=[t["monocyte"]],
        eosinophils=[t["eosinophil"]],
        platelets=[t["platelets"]],
        wbc=[t["wbc"]],
        pseudo_count=pseudo_count,
    )
    agg.features = {k: float(v) for k, v in frame.iloc[0].items()} if ok else {k: math.nan for k in frame.columns}
    checked = [r for r in ok if r.flags is not None]
    if checked:
        uncertain = sum(r.flags["wbc_uncertain"] for r in checked)
        agg.flags = sample_flags([r.flags["ood"] for r in checked], uncertain, t["wbc"])
    return agg


def covid_flags(agg: SampleAggregate, prediction: dict[str, Any], min_wbc: int) -> dict[str, Any]:
    """The prediction with its confidence flag: low when fewer than ``min_wbc`` WBCs were classified,
    when a feature lies outside OSR's range, or when a feature had to be imputed; ``reasons`` says why.
    A prediction marked ``unavailable`` (no image analysed, no model) gets no flag (None)."""
    if prediction.get("unavailable"):
        return {**prediction, "low_confidence": None, "reasons": [f"no probability: {prediction['unavailable']}"]}
    n = agg.totals.get("wbc", 0)
    reasons = []
    if n < min_wbc:
        reasons.append(f"{n} WBCs classified, fewer than {min_wbc}")
    if prediction.get("out_of_range"):
        reasons.append("outside OSR's 1st-99th percentile: " + ", ".join(prediction["out_of_range"]))
    if prediction.get("imputed") and not math.isnan(prediction.get("probability", math.nan)):
        reasons.append("imputed: " + ", ".join(prediction["imputed"]))
    return {**prediction, "low_confidence": bool(reasons), "reasons": reasons}
