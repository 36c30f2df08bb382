"""Notebook 04's upload box: nothing under papermill; an uploaded image analysed like ``bloodlib analyze`` does."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from bloodlib.pipeline.infer import Classifier, Detector
from bloodlib.pipeline.widget import analyse_upload, smear_upload
from tests.pipeline_helpers import bccd_images, quick_params, tiny_models


@pytest.fixture(scope="module")
def pipeline():
    models = tiny_models(threshold=0.3)
    return models, Detector(models.detector), Classifier(models.classifier, models.policy)


def test_nothing_happens_unless_interactive(pipeline):
    models, detector, classifier = pipeline
    p = quick_params()
    assert p.interactive is False  # what the report runner renders with
    assert smear_upload(p, models, detector=detector, classifier=classifier) is None


def test_an_uploaded_image_gives_the_annotated_field_counts_and_differential(pipeline, data_root, one_thread):
    models, detector, classifier = pipeline
    image = bccd_images(1)[0]
    found = analyse_upload(
        "my smear.jpg", image.read_bytes(), quick_params(), models, detector=detector, classifier=classifier
    )
    assert found.error is None and found.png[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(found.counts.index) == ["rbc", "wbc", "platelets"] and found.counts["cells"].sum() > 0
    assert list(found.differential.index) == ["eosinophil", "lymphocyte", "monocyte", "neutrophil"]
    assert found.differential["WBCs"].sum() == found.counts.loc["wbc", "cells"]
    assert found.notes[-1] == "Research tool, not a diagnostic device." and any(
        n.startswith("NLR") for n in found.notes
    )


def test_a_file_that_is_no_image_is_reported(pipeline):
    models, detector, classifier = pipeline
    found = analyse_upload(
        "notes.txt", b"not an image", quick_params(), models, detector=detector, classifier=classifier
    )
    assert found.error and found.png == b""


def test_the_upload_box_in_jupyterlab(pipeline, data_root, one_thread, capsys):
    import ipywidgets

    models, detector, classifier = pipeline
    p = dataclasses.replace(quick_params(), interactive=True)
    box = smear_upload(p, models, detector=detector, classifier=classifier)
    assert isinstance(box, ipywidgets.VBox)
    upload, output = box.children[1], box.children[2]
    assert isinstance(upload, ipywidgets.FileUpload) and isinstance(output, ipywidgets.Output)
    content = bccd_images(1)[0].read_bytes()
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    upload.value = (
        {
            "name": "field.jpg",
            "type": "image/jpeg",
            "size": len(content),
            "content": memoryview(content),
            "last_modified": when,
        },
    )
    shown = capsys.readouterr().out  # outside a kernel, what the Output widget would show is printed
    assert "cells" in shown and "neutrophil" in shown
