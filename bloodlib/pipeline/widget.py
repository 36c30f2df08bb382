"""Notebook 04 in JupyterLab: a student uploads a smear image and sees what the pipeline makes of it.

:func:`smear_upload` shows an upload box (ipywidgets ``FileUpload``) when the notebook's ``interactive``
parameter is True and does nothing otherwise (the report runner leaves it False, so a rendered report
never waits for an upload). Each uploaded image goes through the same code as ``bloodlib analyze``
(:func:`analyse_upload`: batched inference, out-of-distribution flags, the annotated image, the
sample aggregate and, with the COVID-19 model, its probability and confidence flags), and the
annotated field, the counts and the differential appear below the box. Nothing is written to disk
but a temporary copy of the image, removed at once.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bloodlib.pipeline import NOTICE
from bloodlib.pipeline.params import PipelineParams


@dataclass
class UploadResult:
    """What the pipeline found on one uploaded image.

    Attributes:
        name: the file's name as uploaded.
        error: why it was not analysed (None if it was).
        png: the annotated field (PNG bytes).
        counts: one row per cell class (``rbc``, ``wbc``, ``platelets``): cells counted.
        differential: one row per WBC subtype: count and % of classified WBCs.
        notes: flags and the COVID-19 probability, in words.
    """

    name: str
    error: str | None = None
    png: bytes = b""
    counts: pd.DataFrame = field(default_factory=pd.DataFrame)
    differential: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)


def _suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return suffix if suffix in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff") else ".img"


def _notes(result: Any, agg: Any, covid: dict[str, Any] | None) -> list[str]:
    notes = list(result.warnings)
    if result.flags and result.flags.get("ood"):
        notes.append("unlike the training data: " + result.flags["ood_reasons"])
    if result.cell_scale:
        diameter = result.cell_scale.get("rbc_diameter_px")
        if isinstance(diameter, (int, float)):
            notes.append(f"red-cell diameter {diameter:.0f} px ({result.cell_scale.get('source', 'estimated')})")
    nlr = agg.ratios.get("nlr", math.nan)
    notes.append("NLR " + ("n/a (no lymphocyte)" if math.isnan(nlr) else f"{nlr:.2f}"))
    if covid is not None:
        probability = covid.get("probability", math.nan)
        text = "n/a" if probability is None or math.isnan(probability) else f"{probability:.2f}"
        reasons = "; ".join(covid.get("reasons", []))
        notes.append(f"COVID-19 probability {text}" + (f" (low confidence: {reasons})" if reasons else ""))
    return notes + [NOTICE]


def analyse_upload(
    name: str,
    content: bytes,
    p: PipelineParams,
    models: Any,
    *,
    detector: Any,
    classifier: Any,
    covid_model: Any = None,
) -> UploadResult:
    """Run one uploaded image (``content``, named ``name``) through the pipeline.

    ``models`` is :class:`~bloodlib.pipeline.models.PipelineModels` (thresholds, out-of-distribution
    references), ``detector`` and ``classifier`` the notebook's fast detector and classifier; with
    ``covid_model`` (:func:`bloodlib.pipeline.covid.load_or_fit`) the sample gets its probability.
    """
    from bloodlib.pipeline import covid
    from bloodlib.pipeline.aggregate import CELL_COLUMNS, aggregate, covid_flags
    from bloodlib.pipeline.annotate import annotate, png_bytes
    from bloodlib.pipeline.features import SUBTYPES
    from bloodlib.pipeline.infer import run_fields_of
    from bloodlib.pipeline.io import Field, safe_name
    from bloodlib.pipeline.ood import flag_field

    with tempfile.TemporaryDirectory(prefix="bloodlib-upload-") as folder:
        path = Path(folder) / (safe_name(Path(name).stem) + _suffix(name))
        path.write_bytes(content)
        (result,) = list(run_fields_of(p, [path], detector, classifier, models.thresholds, num_workers=0))
    if not result.ok:
        return UploadResult(name, error=result.error)
    flag_field(result, models.ood)
    agg = aggregate("upload", name, [Field("upload", path, path.stem)], [result], covid.COUNT_PSEUDO)
    prediction = None
    if covid_model is not None:
        prediction = covid_flags(agg, covid_model.predict(agg.features), p.min_wbc_confident)
    counts = pd.DataFrame({"cells": [agg.totals[c] for c in CELL_COLUMNS]}, index=list(CELL_COLUMNS))
    differential = pd.DataFrame(
        {"WBCs": [agg.totals[s] for s in SUBTYPES], "%": [agg.differential_pct[s] for s in SUBTYPES]},
        index=list(SUBTYPES),
    )
    return UploadResult(
        name,
        png=png_bytes(annotate(result, title=name)),
        counts=counts,
        differential=differential,
        notes=_notes(result, agg, prediction),
    )


def _uploaded(value: Any) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of a ``FileUpload`` value (ipywidgets 8: a tuple of dicts; 7: a dict by name)."""
    items = value.values() if isinstance(value, dict) else value
    return [
        (item.get("name") or item.get("metadata", {}).get("name", "upload"), bytes(item["content"])) for item in items
    ]


def smear_upload(
    p: PipelineParams, models: Any, *, detector: Any, classifier: Any, covid_model: Any = None
) -> Any | None:
    """An upload box that analyses each uploaded smear image (:func:`analyse_upload`) and shows the
    annotated field, the counts and the differential below it; None -- nothing shown, nothing done --
    unless ``p.interactive``."""
    if not p.interactive:
        return None
    import ipywidgets
    from IPython.display import Image, Markdown, display

    upload = ipywidgets.FileUpload(accept="image/*", multiple=True, description="Smear image")
    output = ipywidgets.Output()

    def show(change: dict[str, Any]) -> None:
        output.clear_output()
        with output:
            for name, content in _uploaded(change["new"]):
                found = analyse_upload(
                    name, content, p, models, detector=detector, classifier=classifier, covid_model=covid_model
                )
                if found.error:
                    display(Markdown(f"**{name}**: not analysed: {found.error}"))
                    continue
                display(Markdown(f"**{name}**"), Image(data=found.png, format="png"))
                display(found.counts, found.differential, Markdown("\n".join(f"* {n}" for n in found.notes)))

    upload.observe(show, names="value")
    intro = ipywidgets.HTML(
        "Upload a field of view of a stained blood smear (PNG, JPEG, TIFF). " + NOTICE, layout={"margin": "0 0 6px 0"}
    )
    return ipywidgets.VBox([intro, upload, output])
