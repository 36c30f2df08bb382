"""WBC-subtype data: grouped split without leakage, source map, BCCD boxes, crops, augmentation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.transforms import v2

from bloodlib.classification import bccd, crops, data
from bloodlib.classification.canvases import CanvasSet
from bloodlib.classification.engine import AugmentedCanvases, balanced_weights
from bloodlib.classification.transforms import AugmentConfig, eval_transform, train_transform

POLICY = crops.CropPolicy(
    input_size=(32, 32), context=1.5, canvas_scale=1.5, min_side=8.0, white_percentile=97.0, nucleus_to_cell=1.3
)
AUG = AugmentConfig(
    rotation=180,
    shear=10,
    translate=0.05,
    scale=0.1,
    brightness=0.2,
    contrast=0.2,
    saturation=0.3,
    hue=0.05,
    blur_p=0.5,
)


def smear(height: int = 120, width: int = 160) -> np.ndarray:
    """Synthetic smear: light background, pink 'red cells', one purple 'nucleus' at (100, 40)."""
    image = np.full((height, width, 3), (225, 222, 228), np.uint8)
    yy, xx = np.mgrid[:height, :width]
    for cy, cx in [(90, 30), (30, 130), (95, 120)]:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 15**2] = (215, 150, 160)
    image[(yy - 40) ** 2 + (xx - 100) ** 2 < 12**2] = (110, 50, 170)
    return image


# ---- crops --------------------------------------------------------------------------------


def test_crop_is_centred_on_the_box():
    image = smear()
    out = crops.crop_window(image, (88, 28, 112, 52), out_size=(33, 33), context=1.5, min_side=4)
    assert out.shape == (33, 33, 3) and out.dtype == np.uint8
    assert tuple(out[16, 16]) == (110, 50, 170)  # the nucleus colour at the centre


@pytest.mark.parametrize("box", [(-10, -10, 15, 20), (150, 110, 175, 130), (0, 100, 40, 140), (-30, 50, 5, 60)])
def test_crop_at_image_borders_pads_with_background(box):
    image = smear()
    out = crops.crop_window(image, box, out_size=(24, 32), context=2.0, min_side=4)
    assert out.shape == (24, 32, 3)
    corners = [out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]]
    assert any(tuple(c) == (crops.WHITE,) * 3 for c in corners)


def test_tiny_and_huge_boxes_still_give_the_input_shape():
    image = smear()
    for box in [(50, 50, 50.5, 50.5), (10, 10, 11, 12), (-200, -200, 400, 400)]:
        canvas = POLICY.canvas(image, box)
        assert canvas.shape == (3, 48, 48) and canvas.dtype == torch.uint8
    tiny = crops.crop_window(image, (50, 50, 51, 51), out_size=(16, 16), context=1.0, min_side=8)
    assert tiny.shape == (16, 16, 3)


def test_bad_boxes_and_images_are_errors():
    image = smear()
    with pytest.raises(ValueError, match="degenerate"):
        crops.crop_window(image, (10, 10, 10, 20), out_size=(8, 8), context=1, min_side=1)
    with pytest.raises(ValueError, match="outside"):
        crops.crop_window(image, (500, 10, 520, 20), out_size=(8, 8), context=1, min_side=1)
    with pytest.raises(ValueError, match="uint8"):
        POLICY.canvas(image.astype(np.float32), (0, 0, 10, 10))
    with pytest.raises(ValueError, match="input_size"):
        crops.CropPolicy((4, 4), 1.5, 1.5, 8.0, 97.0, 1.3)


def test_locate_wbc_finds_the_purple_nucleus():
    box = crops.locate_wbc(smear(), nucleus_to_cell=1.0)
    assert box is not None
    x0, y0, x1, y1 = box
    assert abs((x0 + x1) / 2 - 100) <= 2 and abs((y0 + y1) / 2 - 40) <= 2
    assert 20 <= x1 - x0 <= 28
    assert crops.locate_wbc(np.full((60, 80, 3), 230, np.uint8)) is None


@pytest.mark.parametrize(
    "policy",
    [
        POLICY,  # canvas 48x48, even margins
        crops.CropPolicy((33, 47), 1.7, 1.33, 9.0, 96.0, 1.3),  # canvas 44x63: odd margins, rounded offsets
    ],
)
def test_classifier_inputs_are_the_canvas_centres_scaled_to_unit_range(policy):
    image = smear()
    boxes = np.array([(88, 28, 112, 52), (-10, -10, 15, 20), (150.4, 100.6, 170.2, 125.9)], np.float32)
    x = policy.classifier_inputs(image, boxes)
    assert x.shape == (3, 3, *policy.input_size) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    # independent references: the window of the module docstring from crop_window on the white-balanced
    # image, and torchvision's own centre crop and uint8 -> float conversion
    centre = v2.Compose([v2.CenterCrop(list(policy.input_size)), v2.ToDtype(torch.float32, scale=True)])
    balanced = crops.white_balance(image, policy.white_percentile)
    for box, got, canvas in zip(boxes, x, policy.canvases(image, boxes)):
        window = crops.crop_window(
            balanced,
            tuple(box),
            out_size=policy.canvas_size,
            context=policy.context * policy.canvas_scale,
            min_side=policy.min_side,
        )
        assert torch.equal(canvas, torch.from_numpy(window).permute(2, 0, 1))
        assert torch.equal(canvas, policy.canvas(image, tuple(box)))
        assert torch.equal(got, centre(canvas))
        assert torch.equal(got, eval_transform(policy.input_size)(canvas))
    assert policy.classifier_inputs(image, np.zeros((0, 4), np.float32)).shape == (0, 3, *policy.input_size)
    assert policy.canvas(image).shape == (3, *policy.canvas_size)  # no box: the colour localizer


def test_white_balance_maps_the_background_to_white():
    tinted = (smear().astype(np.float32) * np.array([0.8, 1.0, 0.9])).astype(np.uint8)
    balanced = crops.white_balance(tinted, 97.0)
    assert np.abs(balanced[0, 0].astype(int) - crops.WHITE).max() <= 2


# ---- augmentation --------------------------------------------------------------------------


def test_augmentation_keeps_labels_and_shapes():
    canvases = torch.stack([POLICY.canvas(smear(), (88, 28, 112, 52))] * 6)
    frame = pd.DataFrame({"label": list(data.CLASSES) + ["EOSINOPHIL", "MONOCYTE"], "group": range(6)})
    dataset = AugmentedCanvases(CanvasSet("t", frame, canvases), train_transform((32, 32), AUG))
    torch.manual_seed(0)
    items = [dataset[i] for i in range(6)]
    assert all(x.shape == (3, 32, 32) and x.dtype == torch.float32 for x, _ in items)
    assert all(0 <= float(x.min()) and float(x.max()) <= 1 for x, _ in items)
    assert [data.CLASSES[int(y)] for _, y in items] == list(frame["label"])
    assert not torch.equal(items[0][0], items[4][0])  # random: same canvas, different views


def test_balanced_weights_draw_classes_equally():
    labels = torch.tensor([0] * 90 + [1] * 9 + [2])
    draws = torch.multinomial(
        balanced_weights(labels), 30000, replacement=True, generator=torch.Generator().manual_seed(0)
    )
    share = torch.bincount(labels[draws], minlength=3) / 30000
    assert torch.allclose(share, torch.full((3,), 1 / 3), atol=0.02)


# ---- dataset2, source map, grouped split ---------------------------------------------------


def test_missing_source_map_names_the_expected_place(tmp_path):
    with pytest.raises(data.SourceMapMissingError, match=str(tmp_path / data.SOURCE_MAP)):
        data.load_source_map(tmp_path)


def test_near_duplicates_share_a_group():
    groups = data.near_duplicate_groups(np.array([204, 277, 165, 193, 166, 5]))
    assert groups[0] == groups[1] == 204
    assert len(set(groups[2:5])) == 1 and groups[5] == 5  # 165~193~166 chain into one group


def test_uncertain_sources_join_conservative_groups():
    sources = np.array([233, 254, 107, 108])
    assert data.near_duplicate_groups(sources).tolist() == [233, 233, 107, 107]
    assert data.near_duplicate_groups(sources, uncertain=False).tolist() == [233, 254, 107, 107]


def test_grouped_split_on_synthetic_groups():
    frame = pd.DataFrame(
        {
            "label": np.repeat(data.CLASSES, 50),
            "group": np.concatenate([np.repeat(np.arange(10) + 100 * k, 5) for k in range(4)]),
        }
    )
    out = data.grouped_split(frame, val_fraction=0.2, seed=1)
    assert set(out.loc[out.subset == "train", "group"]).isdisjoint(out.loc[out.subset == "val", "group"])
    assert (out[out.subset == "val"].groupby("label")["group"].nunique() == 2).all()
    again = data.grouped_split(frame, val_fraction=0.2, seed=1)
    assert again["subset"].equals(out["subset"])
    kept = set(out.loc[out.subset == "val", "group"])
    other = data.grouped_split(frame, val_fraction=0.2, seed=1, keep_in_train=kept)
    assert set(other.loc[other.subset == "val", "group"]).isdisjoint(kept)
    assert (other[other.subset == "val"].groupby("label")["group"].nunique() == 2).all()
    with pytest.raises(ValueError, match="val_fraction"):
        data.grouped_split(frame, val_fraction=1.0, seed=1)


@pytest.mark.usefixtures("data_root")
def test_grouped_split_of_the_real_train_set_never_shares_a_source():
    from bloodlib.data import locate

    index = data.dataset2_index(locate("blood-cells"))
    assert len(index) == 12515 and index["source"].notna().all()
    # TRAIN and TEST meet only in the two near-duplicate pairs SOURCE.md names (204~277, 230~257)
    shared = set(index.loc[index.split == "TRAIN", "group"]) & set(index.loc[index.split != "TRAIN", "group"])
    assert shared == {204, 230}
    test_groups = set(index.loc[index.split != "TRAIN", "group"])
    out = data.grouped_split(index[index.split == "TRAIN"], val_fraction=0.2, seed=0, keep_in_train=test_groups)
    train, val = out[out.subset == "train"], out[out.subset == "val"]
    assert set(train["source"]).isdisjoint(val["source"])
    assert set(train["group"]).isdisjoint(val["group"])
    assert set(val["group"]).isdisjoint(test_groups)
    assert set(val["label"]) == set(data.CLASSES) == set(train["label"])
    assert 0.1 < val["group"].nunique() / out["group"].nunique() < 0.3


# ---- BCCD ---------------------------------------------------------------------------------


def test_voc_parser_and_label_rule(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    objects = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>2</ymin>"
        f"<xmax>{a + 30}</xmax><ymax>40</ymax></bndbox></object>"
        for n, a in [("WBC", 10), ("RBC", 50), ("WBC", 100), ("WBC", 130)]
    )
    size = "<size><width>120</width><height>90</height></size>"
    for i in range(4):
        (tmp_path / "Annotations" / f"BloodImage_{i:05d}.xml").write_text(f"<annotation>{size}{objects}</annotation>")
        (tmp_path / "JPEGImages" / f"BloodImage_{i:05d}.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match="zero-size"):  # the box at x 130..160 lies outside the image
        boxes = bccd.read_voc_boxes(tmp_path / "Annotations" / "BloodImage_00000.xml")
    assert boxes == [(10, 2, 40, 40), (100, 2, 120, 40)]  # clipped to the 120 px wide image
    labels = tmp_path / "labels.csv"
    pd.DataFrame(
        {
            "Image": [0, 1, 2, 3, 9],
            "Category": ["NEUTROPHIL, NEUTROPHIL", "NEUTROPHIL", "EOSINOPHIL,NEUTROPHIL", None, "MONOCYTE"],
        }
    ).to_csv(labels)
    frame, skipped = bccd.bccd_wbc_index(tmp_path, labels)
    assert list(frame["image"]) == [0, 0] and set(frame["label"]) == {"NEUTROPHIL"}
    assert skipped == {"no label": 1, "mixed or other class": 1, "no annotation": 1, "box count != label count": 1}


@pytest.mark.usefixtures("data_root")
def test_real_bccd_boxes_and_the_localizer_agree():
    from bloodlib.data import locate

    frame, _ = bccd.bccd_wbc_index(locate("BCCD"), locate("blood-cells") / "dataset-master" / "labels.csv")
    assert 330 <= len(frame) <= 360 and set(frame["label"]) == set(data.CLASSES)
    hits = 0
    sample = frame.drop_duplicates("image").sample(25, random_state=0)
    for row in sample.itertuples():
        found = crops.locate_wbc(crops.read_rgb(row.path))
        cx, cy = (found[0] + found[2]) / 2, (found[1] + found[3]) / 2
        hits += row.x0 <= cx <= row.x1 and row.y0 <= cy <= row.y1
    assert hits >= 24
