"""Rebuilding dataset2-master's source map (SIFT voting against BCCD) and where it is looked up."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from bloodlib.classification import data, sourcemap
from bloodlib.classification.classes import CLASSES, SPLITS
from tests.paths import require_data

# ---- voting rules (no data) ----------------------------------------------------------------


def test_ratio_test_is_against_the_nearest_other_source():
    owners = np.array([5, 5, 7, 9])
    indices = np.array(
        [
            [0, 1, 2],  # 5, 5 (its mirror variant), then 7 far away: vote for 5
            [2, 3, 0],  # 7 vs 9 almost as close: no vote
            [3, 0, 1],  # 9 clearly nearer than 5: vote for 9
            [0, 1, 1],  # only source 5 among the neighbours: vote for 5
        ]
    )
    distances = np.array([[1.0, 1.1, 9.0], [4.0, 4.2, 9.0], [1.0, 5.0, 6.0], [2.0, 2.0, 2.0]])
    votes = sourcemap.count_votes(indices, distances, owners)
    assert votes == {5: 2, 9: 1}
    assert sourcemap.best_two(votes) == (5, 2, 1)
    assert sourcemap.best_two({}) == (None, 0, 0)
    assert sourcemap.best_two({4: 3, 2: 3}) == (2, 3, 3)  # ties: lowest number


def test_pseudo_sources_are_negative_per_class_and_side():
    ids = {(s, c): sourcemap.pseudo_source(s, c) for s in SPLITS for c in CLASSES}
    assert all(v < 0 for v in ids.values())
    assert ids["TEST", "MONOCYTE"] == ids["TEST_SIMPLE", "MONOCYTE"] != ids["TRAIN", "MONOCYTE"]
    assert len(set(ids.values())) == 2 * len(CLASSES)
    with pytest.raises(ValueError, match="BASOPHIL"):
        sourcemap.pseudo_source("TRAIN", "BASOPHIL")
    with pytest.raises(ValueError, match="bloodimage_1.png"):
        sourcemap.bccd_number("bloodimage_1.png")


# ---- matching on real images ----------------------------------------------------------------


def _real_dirs() -> tuple[Path, Path]:
    root = require_data()
    return root / "blood-cells", root / "BCCD"


def test_rebuilt_sources_agree_with_the_shared_map_on_a_subset():
    blood_cells, bccd = _real_dirs()
    shared = pd.read_csv(blood_cells / data.SOURCE_MAP)
    picked = shared.groupby(["split", "cls"]).sample(4, random_state=0)  # 48 images, every split and class
    picked = pd.concat([picked, shared[shared["srcid"] == 204].head(2)])  # a near-duplicate straddling TRAIN/TEST
    picked = picked.drop_duplicates(["split", "cls", "fn"])
    files = [blood_cells / "dataset2-master" / "images" / r.split / r.cls / r.fn for r in picked.itertuples()]
    rebuilt = sourcemap.build_source_map(blood_cells, bccd, files=files, progress=False)
    assert tuple(rebuilt.columns) == sourcemap.COLUMNS and list(rebuilt["fn"]) == list(picked["fn"])
    both = picked.merge(rebuilt, on=["split", "cls", "fn"], suffixes=("", "_new"))
    confident = both[both["confident"]]
    assert len(confident) >= 35
    assert (confident["srcid"] == confident["srcid_new"]).mean() >= 0.95
    sure = both[both["confident_new"]]
    assert (sure["srclabel_new"] == sure["cls"]).all()


@pytest.mark.parametrize("flip", [1, 0, -1])
def test_a_rotated_mirrored_original_finds_its_source(tmp_path, flip):
    _, bccd = _real_dirs()
    numbers = [0, 1, 2, 3, 10, 37, 38, 204, 277]  # includes two near-duplicate pairs as confusers
    (tmp_path / "JPEGImages").mkdir()
    for n in numbers:
        shutil.copy(bccd / "JPEGImages" / f"BloodImage_{n:05d}.jpg", tmp_path / "JPEGImages")
    index = sourcemap.build_index(tmp_path, progress=False, workers=1)
    assert set(index.owners) == set(numbers) and index.descriptors.shape[1] == 128

    original = cv2.imread(str(bccd / "JPEGImages" / "BloodImage_00204.jpg"))
    small = cv2.resize(original, sourcemap.IMAGE_SIZE, interpolation=cv2.INTER_AREA)
    turn = cv2.getRotationMatrix2D((160, 120), 15, 1.0)
    augmented = cv2.flip(cv2.warpAffine(small, turn, sourcemap.IMAGE_SIZE, borderMode=cv2.BORDER_REPLICATE), flip)
    path = tmp_path / "query.jpeg"
    cv2.imwrite(str(path), augmented)
    (row,) = sourcemap.match_images(index, [path], progress=False, workers=1).itertuples()
    assert row.srcid == 204 and row.confident, row


# ---- lookup order: shared copy, cache, rebuild ---------------------------------------------


def _fake_builder(calls: list[Path]):
    def build(blood_cells_dir: Path, bccd_dir: Path, **kwargs) -> pd.DataFrame:
        calls.append(Path(bccd_dir))
        row = ("TRAIN", "EOSINOPHIL", "_0_1.jpeg", 0, "BloodImage_00001.jpg", 20, 1, True, 1.0, "EOSINOPHIL")
        return pd.DataFrame([row], columns=list(sourcemap.COLUMNS))

    return build


def _folder_without_map(tmp_path: Path) -> Path:
    blood_cells, _ = _real_dirs()
    folder = tmp_path / "blood-cells"
    folder.mkdir()
    (folder / "dataset2-master").symlink_to(blood_cells / "dataset2-master", target_is_directory=True)
    return folder


def test_the_shared_copy_wins():
    blood_cells, _ = _real_dirs()
    assert data.source_map_path(blood_cells) == blood_cells / data.SOURCE_MAP


def test_a_missing_map_is_rebuilt_once_into_the_cache(tmp_path, monkeypatch):
    folder = _folder_without_map(tmp_path)
    monkeypatch.setenv("BLOODLIB_CACHE", str(tmp_path / "cache"))
    calls: list[Path] = []
    monkeypatch.setattr(sourcemap, "build_source_map", _fake_builder(calls))

    first = data.load_source_map(folder, progress=False)
    path = data.source_map_path(folder)
    assert len(calls) == 1 and calls[0].name == "BCCD"
    assert path.parent == tmp_path / "cache" / "derived" / "blood-cells" and path.is_file()
    assert path.name.startswith("dataset2-master_source_map-") and path == data.cached_source_map_path(folder)
    assert not (folder / data.SOURCE_MAP).exists()  # never written into the data folder
    again = data.load_source_map(folder, progress=False)
    assert len(calls) == 1  # reused, not rebuilt
    pd.testing.assert_frame_equal(first, again)
    assert first.loc[0, "srcid"] == 1.0


def test_without_bccd_the_error_says_what_to_do(tmp_path, monkeypatch):
    import bloodlib.data
    from bloodlib.data import DataNotFoundError

    folder = _folder_without_map(tmp_path)
    monkeypatch.setenv("BLOODLIB_CACHE", str(tmp_path / "cache"))

    def no_bccd(name: str, **kwargs) -> Path:
        raise DataNotFoundError(f"data set {name!r} not found")

    monkeypatch.setattr(bloodlib.data, "locate", no_bccd)
    with pytest.raises(data.SourceMapMissingError, match="bloodlib data fetch BCCD"):
        data.load_source_map(folder, progress=False)
    assert not (tmp_path / "cache" / "derived" / "blood-cells").exists() or not any(
        (tmp_path / "cache" / "derived" / "blood-cells").iterdir()
    )


def test_candidate_sources_are_those_the_confidence_rule_cannot_rule_out():
    assert sourcemap.candidate_sources({5: 10, 7: 6, 9: 4, 11: 2}, 5) == {5, 7}
    assert sourcemap.candidate_sources({5: 4, 7: 3, 9: 1}, 5) == {5, 7}  # 1 vote is no match
    assert sourcemap.candidate_sources({}, 5) == {5}
    assert sourcemap.candidate_sources({8: 6}, 5) == {5, 8}  # the mapped source stays a candidate


@pytest.mark.slow
def test_uncertain_source_pairs_match_the_listed_ones():
    blood_cells, bccd = _real_dirs()
    shared = pd.read_csv(blood_cells / data.SOURCE_MAP)
    pairs = sourcemap.uncertain_source_pairs(blood_cells, bccd, shared, progress=False)
    assert pairs == list(data.UNCERTAIN_SOURCE_PAIRS)
