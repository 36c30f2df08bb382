"""Writers of ``bloodlib analyze``: deterministic CSV and JSON, each file written atomically.

Layout of the output folder::

    NOTICE.txt                                   the research-tool notice and how to read the files
    summary.csv                                  one row per sample (sorted by sample)
    messages.csv                                 every per-file error and warning (sorted)
    run.json                                     models, thresholds, parameters, timing
    samples/<sample>/sample.json                 counts, differential, ratios, COVID-19 probability
    samples/<sample>/fields.csv                  counts per field (image)
    samples/<sample>/<field>.detections.csv      detections of one image (class, box, score, subtype)
    samples/<sample>/<field>.detections.json     the same with the image's size, warnings, thresholds
    samples/<sample>/<field>.annotated.png       boxes coloured by class, WBCs labelled

CSV files use fixed float formatting (:func:`fmt`), ``\\n`` line ends and sorted rows, so the same
inputs and models give byte-identical CSVs; every CSV has a ``notice`` column and every JSON a
``notice`` key stating that this is a research tool, not a diagnostic device.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bloodlib import jsonutil
from bloodlib.detection.data import CLASSES
from bloodlib.fsutil import atomic_write_bytes, atomic_write_text
from bloodlib.pipeline import NOTICE
from bloodlib.pipeline.aggregate import CELL_COLUMNS, SampleAggregate, field_counts
from bloodlib.pipeline.features import SUBTYPES
from bloodlib.pipeline.infer import FieldResult
from bloodlib.pipeline.io import Field, Problem, printable

DIGITS = 4  # decimals of ratios, probabilities and scores
JSON_DIGITS = 6  # decimals of floats in the JSON files
BOX_DIGITS = 1  # decimals of box coordinates (pixels)

NOTICE_TEXT = f"""{NOTICE}

bloodlib analyze counts cells on smear images with the detection and WBC-subtype models of the
bloodlib reports and turns the counts into a COVID-19 probability with a model trained on a lab
cohort (OSR, San Raffaele). Counts are cells seen on the images, not concentrations (10^9/L).
The probability reads scale-free features only (WBC differential fractions, neutrophil-to-
lymphocyte ratio, platelets per WBC, optionally age and sex), assuming that the images' cells
are a fair sample of the patient's blood; it is flagged low-confidence when too few WBCs were
seen or a feature lies outside the lab cohort's range. It has not been validated on images of
patients with a known COVID-19 status and must not be used for any clinical decision.

Files: summary.csv (one row per sample), messages.csv (errors and warnings per file),
samples/<sample>/ (sample.json, fields.csv, and per image: detections CSV/JSON, annotated PNG).
"""


def fmt(value: Any, digits: int = DIGITS) -> str:
    """A CSV cell: fixed decimals for floats, ``""`` for None/NaN, ``true``/``false`` for booleans."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            return ""
        text = f"{float(value):.{digits}f}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text
    return str(value)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV with ``\\n`` line ends; cells formatted by :func:`fmt` unless already strings."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([cell if isinstance(cell, str) else fmt(cell) for cell in row])
    return buffer.getvalue()


def json_text(payload: dict[str, Any]) -> str:
    """Pretty JSON with ``notice`` first, NaN as null, floats rounded to :data:`JSON_DIGITS` decimals."""
    return jsonutil.json_text({"notice": NOTICE, **payload}, digits=JSON_DIGITS)


DETECTION_HEADER = (
    "image",
    "detection",
    "class",
    "x1",
    "y1",
    "x2",
    "y2",
    "score",
    "wbc_subtype",
    "subtype_confidence",
    *(f"p_{s}" for s in SUBTYPES),
    "notice",
)


def detection_records(result: FieldResult) -> list[dict[str, Any]]:
    """Detections of one image in a stable order (class, then score descending, then position)."""
    order = sorted(
        range(len(result.labels)),
        key=lambda i: (
            int(result.labels[i]),
            -round(float(result.scores[i]), DIGITS),
            *(round(float(v), BOX_DIGITS) for v in result.boxes[i]),
        ),
    )
    records = []
    for rank, i in enumerate(order, 1):
        sub = int(result.subtype[i])
        prob = result.subtype_prob[i]
        records.append(
            {
                "detection": rank,
                "class": CLASSES[int(result.labels[i]) - 1],
                "box": [round(float(v), BOX_DIGITS) for v in result.boxes[i]],
                "score": round(float(result.scores[i]), DIGITS),
                "wbc_subtype": SUBTYPES[sub] if sub >= 0 else None,
                "subtype_confidence": round(float(prob.max()), DIGITS) if sub >= 0 else None,
                "subtype_probabilities": (
                    {s: round(float(prob[k]), DIGITS) for k, s in enumerate(SUBTYPES)} if sub >= 0 else None
                ),
            }
        )
    return records


def write_field(folder: Path, f: Field, result: FieldResult, thresholds: dict[str, float], png: bytes | None) -> None:
    """``<field>.detections.csv``, ``<field>.detections.json`` and (if given) ``<field>.annotated.png``."""
    records = detection_records(result)
    rows = [
        (
            printable(f.path.name),
            r["detection"],
            r["class"],
            *(fmt(v, BOX_DIGITS) for v in r["box"]),
            r["score"],
            r["wbc_subtype"] or "",
            r["subtype_confidence"],
            *((r["subtype_probabilities"] or {}).get(s) for s in SUBTYPES),
            NOTICE,
        )
        for r in records
    ]
    atomic_write_text(folder / f"{f.name}.detections.csv", csv_text(DETECTION_HEADER, rows))
    payload = {
        "sample": f.sample,
        "image": f.display,
        "width": result.width,
        "height": result.height,
        "analysed_size": list(result.rgb.shape[1::-1]) if result.rgb is not None else None,
        "warnings": result.warnings,
        "score_thresholds": thresholds,
        "cell_scale": result.cell_scale,
        "out_of_distribution": result.flags,
        "counts": field_counts(result),
        "detections": records,
    }
    atomic_write_text(folder / f"{f.name}.detections.json", json_text(payload))
    if png is not None:
        atomic_write_bytes(folder / f"{f.name}.annotated.png", png)


FIELD_HEADER = (
    "field",
    "path",
    "status",
    *CELL_COLUMNS,
    *SUBTYPES,
    "rbc_diameter_px",
    "scale_source",
    "out_of_distribution",
    "ood_reasons",
    "wbc_uncertain",
    "error",
    "warnings",
    "notice",
)


def fields_csv(fields: list[Field], results: list[FieldResult]) -> str:
    """One row per field of a sample, sorted by field name; failed fields have empty counts."""
    rows = []
    for f, r in sorted(zip(fields, results), key=lambda fr: fr[0].name):
        counts = field_counts(r) if r.ok else {}
        scale, flags = r.cell_scale or {}, r.flags or {}
        rows.append(
            (
                f.name,
                f.display,
                "ok" if r.ok else "failed",
                *(counts.get(c) for c in (*CELL_COLUMNS, *SUBTYPES)),
                scale.get("rbc_diameter_px"),
                scale.get("source", ""),
                flags.get("ood"),
                flags.get("ood_reasons", ""),
                flags.get("wbc_uncertain"),
                r.error or "",
                "; ".join(r.warnings),
                NOTICE,
            )
        )
    return csv_text(FIELD_HEADER, rows)


def sample_payload(
    agg: SampleAggregate,
    covid: dict[str, Any],
    fields: list[Field],
    results: list[FieldResult],
    demographics: dict[str, Any],
) -> dict[str, Any]:
    """The content of ``sample.json``."""
    return {
        "sample": agg.sample,
        "source": agg.source,
        "status": "ok" if agg.ok else "failed",
        "fields": {
            "given": agg.fields,
            "analysed": agg.fields_ok,
            "failed": [
                {"field": f.name, "path": f.display, "error": r.error} for f, r in zip(fields, results) if not r.ok
            ],
        },
        "counts_total": agg.totals,
        "counts_per_field_mean": agg.per_field,
        "differential": {
            "counts": {s: agg.totals[s] for s in SUBTYPES},
            "percent": agg.differential_pct,
            "classified_wbc": sum(agg.totals[s] for s in SUBTYPES),
        },
        "ratios": agg.ratios,
        "out_of_distribution": agg.flags,
        "covid19": {**covid, "features": agg.features, "demographics": demographics},
        "caveat": (
            "Counts are cells seen on the images, not concentrations (10^9/L). The probability comes from a "
            "model trained on lab blood counts (OSR) with scale-free features only; it assumes the images' "
            "cells are a fair sample of the patient's blood and was never validated on images of patients "
            "with a known COVID-19 status."
        ),
    }


SUMMARY_HEADER = (
    "sample",
    "source",
    "status",
    "fields",
    "fields_analysed",
    *(f"{c}_total" for c in CELL_COLUMNS),
    *(f"{c}_per_field" for c in CELL_COLUMNS),
    *(f"{s}_count" for s in SUBTYPES),
    *(f"{s}_pct" for s in SUBTYPES),
    "nlr",
    "platelets_per_wbc",
    "wbc_per_1000_rbc",
    "flagged",
    "flag_reasons",
    "covid19_probability",
    "covid19_low_confidence",
    "covid19_reasons",
    "covid19_model",
    "notice",
)


def summary_csv(samples: list[tuple[SampleAggregate, dict[str, Any]]]) -> str:
    """``summary.csv``: one row per sample, sorted by sample name."""
    rows = []
    for agg, covid in sorted(samples, key=lambda s: s[0].sample):
        rows.append(
            (
                agg.sample,
                agg.source,
                "ok" if agg.ok else "failed",
                agg.fields,
                agg.fields_ok,
                *(agg.totals.get(c) if agg.ok else None for c in CELL_COLUMNS),
                *(agg.per_field.get(c) for c in CELL_COLUMNS),
                *(agg.totals.get(s) if agg.ok else None for s in SUBTYPES),
                *(agg.differential_pct.get(s) for s in SUBTYPES),
                *(agg.ratios.get(k) for k in ("nlr", "platelets_per_wbc", "wbc_per_1000_rbc")),
                (agg.flags or {}).get("flagged"),
                "; ".join((agg.flags or {}).get("flag_reasons", [])),
                covid.get("probability"),
                covid.get("low_confidence") if agg.ok else None,
                "; ".join(covid.get("reasons", [])),
                covid.get("model", ""),
                NOTICE,
            )
        )
    return csv_text(SUMMARY_HEADER, rows)


def messages_csv(problems: list[Problem]) -> str:
    """``messages.csv``: every error and warning, sorted by sample, path, level, message."""
    rows = sorted((p.sample, p.path, p.level, p.message) for p in problems)
    return csv_text(("sample", "path", "level", "message", "notice"), [(*r, NOTICE) for r in rows])
