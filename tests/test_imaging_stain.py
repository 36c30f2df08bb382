"""Stain normalisation and colour statistics: identity on its own reference, shifted stains move back,
blank fields stay blank, the torchvision transform, dict round trips, the out-of-distribution score."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from bloodlib.imaging.stain import (
    METHODS,
    ColourModel,
    StainNormalize,
    StainReference,
    colour_stats,
    fit_reference,
    normalize,
)
from tests.paths import require_data


def bccd_fields(*indices: int) -> list[np.ndarray]:
    """BCCD fields by position in the sorted file list."""
    paths = sorted((require_data() / "BCCD" / "JPEGImages").glob("*.jpg"))
    return [cv2.cvtColor(cv2.imread(str(paths[index])), cv2.COLOR_BGR2RGB) for index in indices]


def stained_mean_od(image: np.ndarray) -> np.ndarray:
    """Mean optical density (against the brightest fifth of the pixels) of the stained pixels."""
    pixels = image.reshape(-1, 3).astype(float)
    brightness = pixels.sum(axis=1)
    background = np.median(pixels[brightness >= np.percentile(brightness, 80)], axis=0)
    od = np.maximum(-np.log((pixels + 1) / (background + 1)), 0)
    return od[np.linalg.norm(od, axis=1) > 0.15].mean(axis=0)


def shift_stains(image: np.ndarray, od_factors: tuple[float, float, float]) -> np.ndarray:
    """The image with each channel's optical density scaled (a different stain/scanner)."""
    od = -np.log((image.astype(float) + 1) / 256)
    return np.clip(256 * np.exp(-od * np.array(od_factors)) - 1, 0, 255).round().astype(np.uint8)


@pytest.mark.parametrize(("method", "tolerance"), [("reinhard", 1.5), ("macenko", 5.0)])
def test_normalising_to_its_own_reference_changes_a_field_little(method, tolerance):
    (image,) = bccd_fields(0)
    output = normalize(image, fit_reference([image], method))
    assert output.dtype == np.uint8 and output.shape == image.shape
    assert np.abs(output.astype(int) - image).mean() < tolerance


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("od_factors", [(1.4, 0.8, 1.0), (0.7, 1.0, 1.5)])
def test_shifted_stains_move_towards_the_reference(method, od_factors):
    reference_image, field = bccd_fields(0, 5)
    reference = fit_reference([reference_image], method)
    shifted = shift_stains(field, od_factors)
    target = stained_mean_od(reference_image)
    before = np.linalg.norm(stained_mean_od(shifted) - target)
    after = np.linalg.norm(stained_mean_od(normalize(shifted, reference)) - target)
    assert after < 0.8 * before


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("colour", [(255, 255, 255), (236, 236, 240)])
def test_a_blank_field_is_unchanged_and_never_nan(method, colour):
    reference = fit_reference(bccd_fields(0), method)
    blank = np.full((37, 53, 3), colour, np.uint8)
    output = normalize(blank, reference)
    assert output.dtype == np.uint8 and output.shape == blank.shape
    assert np.array_equal(output, blank)


@pytest.mark.parametrize("method", METHODS)
def test_a_field_with_a_speck_of_stain_is_nearly_unchanged(method):
    reference = fit_reference(bccd_fields(0), method)
    field = np.full((120, 160, 3), 245, np.uint8)
    field[50:53, 70:73] = (150, 60, 160)  # 9 stained pixels of 19,200
    assert np.abs(normalize(field, reference).astype(int) - field).mean() < 1.0


def test_stain_normalize_is_a_torchvision_v2_transform():
    (image,) = bccd_fields(0)
    reference = fit_reference([image], "macenko")
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    expected = torch.from_numpy(normalize(image, reference)).permute(2, 0, 1)
    transform = StainNormalize(reference)
    assert torch.equal(transform(tensor), expected)
    boxes = tv_tensors.BoundingBoxes([[10, 10, 50, 60]], format="XYXY", canvas_size=tuple(image.shape[:2]))
    target = {"boxes": boxes, "labels": torch.tensor([1])}
    output, output_target = v2.Compose([transform])(tv_tensors.Image(tensor), target)
    assert isinstance(output, tv_tensors.Image) and torch.equal(output.as_subclass(torch.Tensor), expected)
    assert torch.equal(output_target["boxes"], boxes) and torch.equal(output_target["labels"], target["labels"])
    with pytest.raises(ValueError, match="uint8"):
        transform(tensor.float())


@pytest.mark.parametrize("method", METHODS)
def test_stain_reference_round_trips_through_json(method):
    reference = fit_reference(bccd_fields(0, 2), method)
    restored = StainReference.from_dict(json.loads(json.dumps(reference.to_dict())))
    assert restored == reference
    (image,) = bccd_fields(5)
    assert np.array_equal(normalize(image, restored), normalize(image, reference))


def test_bad_references_and_inputs_raise_value_error():
    with pytest.raises(ValueError, match="method"):
        StainReference("vahadane", lab_mean=(0, 0, 0), lab_std=(1, 1, 1))
    with pytest.raises(ValueError, match="lab_std"):
        StainReference("reinhard", lab_mean=(0, 0, 0))
    with pytest.raises(ValueError, match="method"):
        fit_reference(bccd_fields(0), "vahadane")
    with pytest.raises(ValueError, match="empty"):
        fit_reference([], "reinhard")
    with pytest.raises(ValueError, match="stained pixels"):
        fit_reference([np.full((32, 32, 3), 250, np.uint8)], "macenko")
    with pytest.raises(ValueError, match=r"images\[1\] must be uint8"):
        fit_reference([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3))], "reinhard")
    reference = StainReference("reinhard", lab_mean=(70.0, 5.0, 0.0), lab_std=(8.0, 7.0, 9.0))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        normalize(np.zeros((8, 8), np.uint8), reference)


def test_colour_stats_describe_a_field():
    (image,) = bccd_fields(0)
    stats = colour_stats(image)
    assert set(stats) == {
        "stained_fraction",
        "background_L",
        "background_a",
        "background_b",
        "stained_L",
        "stained_a",
        "stained_b",
        "stain1_saturation_deg",
        "stain2_saturation_deg",
        "stain_separation_deg",
    }
    assert all(math.isfinite(value) for value in stats.values())
    assert 0.2 < stats["stained_fraction"] < 0.9 and stats["background_L"] > stats["stained_L"]
    grey = colour_stats(cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB))
    assert grey["stain1_saturation_deg"] < 2 and grey["stain2_saturation_deg"] < 2
    blank = colour_stats(np.full((20, 20, 3), 255, np.uint8))
    assert blank["stained_fraction"] == 0 and math.isnan(blank["stained_L"])


def test_colour_model_scores_training_like_fields_low_and_odd_colours_high():
    model = ColourModel.fit([colour_stats(image) for image in bccd_fields(*range(12))])
    held_out = bccd_fields(200, 201, 202)
    assert max(model.score(colour_stats(image)) for image in held_out) < 6
    yellow = np.clip(held_out[0] * np.array([1.0, 0.97, 0.75]), 0, 255).astype(np.uint8)
    grey = cv2.cvtColor(cv2.cvtColor(held_out[0], cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    assert model.score(colour_stats(yellow)) > 10
    assert model.score(colour_stats(grey)) > 10
    assert model.score(colour_stats(np.full((20, 20, 3), 255, np.uint8))) > 10
    assert model.score({}) == math.inf
    restored = ColourModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert restored == model
    with pytest.raises(ValueError, match="stats"):
        ColourModel.fit([])
