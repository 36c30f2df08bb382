"""Out-of-distribution flags: colour, scale and classifier confidence per field, majority per sample."""

from __future__ import annotations

import math

import numpy as np

from bloodlib.imaging.stain import ColourModel
from bloodlib.pipeline.ood import OodReference, field_flags, sample_flags, uncertain_wbcs

COLOUR = ColourModel.fit([{"background_L": 90.0 + d, "stained_a": 30.0 - d} for d in (-1.0, 0.0, 1.0, 0.5, -0.5)])
REF = OodReference(colour=COLOUR, colour_limit=8.0, diameter_range=(30.0, 300.0), confidence=0.5)
GOOD_SCALE = {"source": "estimated", "rbc_diameter_px": 90.0, "cells": 12, "spread": 0.2}


def test_a_training_like_field_is_not_flagged():
    flags = field_flags({"background_L": 90.2, "stained_a": 29.9}, GOOD_SCALE, REF)
    assert flags["ood"] is False and flags["ood_reasons"] == "" and flags["ood_colour_score"] < 1


def test_each_reason_is_named():
    yellow = field_flags({"background_L": 60.0, "stained_a": 5.0}, GOOD_SCALE, REF)
    assert yellow["ood"] and "colours unlike the training fields" in yellow["ood_reasons"]
    fallback = field_flags(None, {"source": "fallback", "rbc_diameter_px": 20.0}, REF)
    assert "no red cells" in fallback["ood_reasons"] and math.isnan(fallback["ood_colour_score"])
    tiny = field_flags(None, {**GOOD_SCALE, "rbc_diameter_px": 12.0}, REF)
    assert "RBC diameter 12 px outside the 30-300 px" in tiny["ood_reasons"]
    shaky = field_flags(None, {**GOOD_SCALE, "cells": 2}, REF)
    assert "scale estimate unreliable (2 cells" in shaky["ood_reasons"]
    given = field_flags(None, {"source": "given", "rbc_diameter_px": 75.0}, REF)
    assert not given["ood"]  # the user's pixel size is trusted; no colour model -> no colour flag


def test_uncertain_wbcs_and_sample_majority():
    probs = np.array([[0.9, 0.05, 0.03, 0.02], [0.4, 0.3, 0.2, 0.1], [0.26, 0.25, 0.25, 0.24]])
    assert uncertain_wbcs(probs, REF).tolist() == [False, True, True]
    assert uncertain_wbcs(np.zeros((0, 4)), REF).tolist() == []
    assert sample_flags([True, True, False], 0, 10)["flagged"]
    calm = sample_flags([True, False, False], 5, 10)
    assert not calm["flagged"] and calm["fields_ood_share"] == 1 / 3 and calm["wbc_uncertain_share"] == 0.5
    doubtful = sample_flags([False], 6, 10)
    assert doubtful["flagged"] and doubtful["flag_reasons"] == ["6 of 10 WBC subtypes uncertain"]
    assert math.isnan(sample_flags([], 0, 0)["fields_ood_share"])
