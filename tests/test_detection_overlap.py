"""Overlapping fields of view among BCCD's images (SIFT + RANSAC), and what they mean for the test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bloodlib.classification.data import NEAR_DUPLICATE_PAIRS
from bloodlib.detection import overlap
from bloodlib.detection.data import Annotation
from tests.paths import require_data

#: The seven official test images that show part of a training or validation image, and which.
TEST_OVERLAPS = {
    ("BloodImage_00205", "BloodImage_00276"),
    ("BloodImage_00229", "BloodImage_00258"),
    ("BloodImage_00249", "BloodImage_00242"),
    ("BloodImage_00249", "BloodImage_00248"),
    ("BloodImage_00226", "BloodImage_00261"),
    ("BloodImage_00227", "BloodImage_00260"),
    ("BloodImage_00253", "BloodImage_00236"),
    ("BloodImage_00391", "BloodImage_00386"),
}


def _bccd_images(numbers: list[int]) -> dict[str, Path]:
    root = require_data("BCCD/JPEGImages")
    return {f"BloodImage_{n:05d}": root / f"BloodImage_{n:05d}.jpg" for n in numbers}


def _annotation(image_id: str) -> Annotation:
    return Annotation(image_id, Path(f"{image_id}.jpg"), 640, 480, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))


def test_finds_the_seven_test_overlaps_and_nothing_else_among_their_neighbours():
    partners = {int(b[-5:]) for _, b in TEST_OVERLAPS} | {int(a[-5:]) for a, _ in TEST_OVERLAPS}
    distractors = [0, 16, 65, 68, 225, 228, 241, 264, 365, 392]  # many shared dust specks, neighbouring numbers
    images = _bccd_images(sorted(partners | set(distractors)))
    found = overlap.find_overlaps(images)
    pairs = {tuple(sorted(p)) for p in zip(found["image_a"], found["image_b"])}
    assert pairs == {tuple(sorted(p)) for p in TEST_OVERLAPS}
    assert (found["inliers"] >= overlap.MIN_INLIERS).all()
    assert np.allclose(found["scale"], 1.0, atol=overlap.MAX_SCALE_ERROR)


def test_dust_matches_are_not_overlaps():
    images = _bccd_images([65, 229, 241, 299])  # share sensor dust, show different fields
    every = overlap.find_overlaps(images, keep_all=True)
    assert len(every) and not every["overlap"].any()
    assert (every["inliers"] < overlap.MIN_INLIERS).all() or (abs(every["scale"] - 1) > 0.5).all()


def test_split_overlaps_keeps_held_out_images_that_meet_another_part():
    overlaps = pd.DataFrame(
        [
            {"image_a": "a", "image_b": "t1", "inliers": 20, "shift_x": 3.0, "shift_y": 4.0, "overlap": True},
            {"image_a": "t1", "image_b": "t2", "inliers": 20, "shift_x": 1.0, "shift_y": 0.0, "overlap": True},
            {"image_a": "b", "image_b": "t2", "inliers": 5, "shift_x": 0.0, "shift_y": 0.0, "overlap": False},
            {"image_a": "a", "image_b": "b", "inliers": 30, "shift_x": 0.0, "shift_y": 1.0, "overlap": True},
        ]
    )
    parts = {
        "train": [_annotation("a")],
        "val": [_annotation("b")],
        "test": [_annotation("t1"), _annotation("t2"), _annotation("t3")],
    }
    found = overlap.split_overlaps(overlaps, parts)
    assert found[["image", "other", "other_part"]].values.tolist() == [["t1", "a", "train"]]
    assert found["shift_px"].tolist() == [5.0]
    assert overlap.overlap_free(parts["test"], found) == [1, 2]
    with pytest.raises(ValueError, match="no part 'holdout'"):
        overlap.split_overlaps(overlaps, parts, held_out="holdout")


def test_pairs_must_name_given_images():
    with pytest.raises(ValueError, match="not given"):
        overlap.find_overlaps({"a": Path("a.jpg")}, [("a", "b")])


@pytest.mark.slow
def test_every_bccd_overlap_is_a_listed_near_duplicate_pair(tmp_path, monkeypatch):
    from bloodlib.detection.data import load_split

    monkeypatch.setenv("BLOODLIB_CACHE", str(tmp_path))
    bccd = require_data("BCCD")
    found = overlap.bccd_overlaps(bccd)
    pairs = {(int(a[-5:]), int(b[-5:])) for a, b in zip(found["image_a"], found["image_b"])}
    assert pairs == set(NEAR_DUPLICATE_PAIRS)  # the classification split groups exactly these
    assert overlap.bccd_overlaps(bccd).equals(found)  # the cached copy
    with pytest.warns(UserWarning, match="zero-size"):
        parts = load_split(bccd, "official", 0)
    test = overlap.split_overlaps(found, parts)
    assert set(zip(test["image"], test["other"])) == TEST_OVERLAPS
    assert len(overlap.overlap_free(parts["test"], test)) == 72 - 7
