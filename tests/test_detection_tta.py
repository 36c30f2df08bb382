"""Test-time augmentation of the detectors: flips, box mapping and the fusion of views."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bloodlib.detection.tta import FLIPS, flip_image, fuse_views, predict_tta, unflip_boxes
from bloodlib.params import load_params
from tests.paths import ROOT


def detection(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float).reshape(-1, 4),
        "scores": torch.tensor(scores),
        "labels": torch.tensor(labels, dtype=torch.long),
    }


class BrightSquareAndCorner(torch.nn.Module):
    """A fake detector: the bright square (label 2, score 0.9), and a 'cell' always in the top-left
    corner of whatever it is shown (label 1, score 0.8) -- which a real cell would not do."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for image in images:
            ys, xs = torch.nonzero(image.mean(0) > 0.5, as_tuple=True)
            square = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
            out.append(detection([square, [0, 0, 10, 10]], [0.9, 0.8], [2, 1]))
        return out


def image_with_square() -> torch.Tensor:
    image = torch.zeros(3, 48, 64)
    image[:, 5:15, 40:60] = 1.0  # x 40..60, y 5..15
    return image


@pytest.mark.parametrize(("horizontal", "vertical"), FLIPS)
def test_boxes_found_on_a_flipped_image_map_back_onto_the_original(horizontal, vertical):
    flipped = flip_image(image_with_square(), horizontal, vertical)
    found = BrightSquareAndCorner()([flipped])[0]["boxes"][:1]
    back = unflip_boxes(found, 64, 48, horizontal, vertical)
    assert back.tolist() == [[40.0, 5.0, 60.0, 15.0]]


def test_identical_views_fuse_to_the_same_detections():
    view = detection([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.6], [1, 2])
    fused = fuse_views([view] * 4, iou=0.5)
    assert torch.allclose(fused["boxes"], view["boxes"]) and torch.allclose(fused["scores"], view["scores"])
    assert fused["labels"].tolist() == [1, 2]


def test_fusion_averages_boxes_by_score_and_scores_over_views():
    a = detection([[0, 0, 10, 10]], [0.8], [1])
    b = detection([[1, 0, 11, 10]], [0.4], [1])
    only_once = detection([[50, 50, 60, 60]], [1.0], [1])
    other_class = detection([[0, 0, 10, 10]], [0.5], [2])  # same place, another class: kept apart
    fused = fuse_views([a, b, only_once, other_class], iou=0.5)
    by_label = {
        (lab, round(s, 4)): box
        for lab, s, box in zip(fused["labels"].tolist(), fused["scores"].tolist(), fused["boxes"].tolist(), strict=True)
    }
    assert set(by_label) == {(1, 0.3), (1, 0.25), (2, 0.125)}  # (0.8 + 0.4) / 4, 1.0 / 4, 0.5 / 4
    assert by_label[(1, 0.3)] == pytest.approx([1 / 3, 0, 10 + 1 / 3, 10])  # (0.8 * x + 0.4 * (x + 1)) / 1.2
    assert fused["scores"].tolist() == sorted(fused["scores"].tolist(), reverse=True)


def test_a_box_joins_only_the_cluster_that_suppressed_it():
    # x (view 1) suppresses z (view 2); y (view 1) overlaps x too little to be suppressed but z enough
    x, y, z = [0, 0, 10, 10], [0, 0, 10, 22], [0, 0, 10, 14]
    fused = fuse_views([detection([x, y], [0.9, 0.1], [1, 1]), detection([z], [0.8], [1])], iou=0.5)
    assert fused["scores"].tolist() == pytest.approx([0.85, 0.05])  # z lends its score to x only


def test_zero_scores_fuse_to_finite_boxes():
    fused = fuse_views([detection([[0, 0, 10, 10]], [0.0], [1]), detection([[2, 0, 12, 10]], [0.0], [1])], iou=0.5)
    assert fused["boxes"].tolist() == [[1.0, 0.0, 11.0, 10.0]] and fused["scores"].tolist() == [0.0]


def test_fusing_views_without_detections_gives_none():
    empty = detection([], [], [])
    fused = fuse_views([empty, empty], iou=0.5)
    assert fused["boxes"].shape == (0, 4) and len(fused["scores"]) == 0 and len(fused["labels"]) == 0


def test_bad_fusion_arguments_are_refused():
    with pytest.raises(ValueError, match="at least one view"):
        fuse_views([], iou=0.5)
    with pytest.raises(ValueError, match="iou"):
        fuse_views([detection([], [], [])], iou=0.0)


def test_predict_tta_keeps_what_every_view_sees_and_discounts_what_one_view_sees():
    model, image = BrightSquareAndCorner(), image_with_square()
    plain = predict_tta(model, [image], views=1, iou=0.5)[0]
    assert plain["scores"].tolist() == pytest.approx([0.9, 0.8])
    for views in (2, 4):
        fused = predict_tta(model, [image, image], views=views, iou=0.5)
        assert len(fused) == 2
        squares = fused[0]["boxes"][fused[0]["labels"] == 2]
        assert squares.tolist() == [[40.0, 5.0, 60.0, 15.0]] and fused[0]["scores"][0].item() == pytest.approx(0.9)
        corners = fused[0]["scores"][fused[0]["labels"] == 1]
        assert len(corners) == views and corners.tolist() == pytest.approx([0.8 / views] * views)


def test_predict_tta_refuses_other_view_counts():
    with pytest.raises(ValueError, match="views must be 1, 2 or 4"):
        predict_tta(BrightSquareAndCorner(), [image_with_square()], views=3, iou=0.5)


def test_detection_params_check_the_tta_fields():
    p = load_params("01_detection", "quick", ROOT)
    assert p.tta_views in (1, 2, 4)
    with pytest.raises(ValueError, match="tta_views"):
        dataclasses.replace(p, tta_views=3)
    with pytest.raises(ValueError, match="tta_iou"):
        dataclasses.replace(p, tta_iou=1.5)


def test_trained_detectors_predict_each_field_once_per_weights(tmp_path):
    """A trained model's flipped views are kept in the model cache: the same weights on the same image
    files give the stored detections (exactly what predicting again gives); another file predicts."""
    import numpy as np
    from PIL import Image

    from bloodlib.detection.cached import from_array, to_array
    from bloodlib.detection.data import Annotation
    from bloodlib.detection.evaluation import tta_predictions
    from bloodlib.detection.tta import view_predictions
    from bloodlib.modelcache import ModelRun
    from bloodlib.training import TrainedModel

    class Counting(BrightSquareAndCorner):
        calls = 0

        def forward(self, images):
            Counting.calls += len(images)
            return super().forward(images)

    fields = []
    for name, shift in (("a", 0), ("b", 3)):
        pixels = (image_with_square().roll(shift, dims=-1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
        fields.append(Annotation(name, tmp_path / f"{name}.png", 64, 48, np.zeros((0, 4), np.float32), np.zeros(0)))
    network = Counting()
    run = ModelRun("detection/fake", {"seed": 0}, {"data": "d"}, tmp_path / "models")
    run.save_final(network.state_dict(), history=[], best_epoch=1, train_seconds=1.0)
    trained = TrainedModel("fake", network, [], 1, 1.0, True, run)

    plain = view_predictions(network, fields, views=4)
    assert Counting.calls == 8
    first = view_predictions(trained, fields, views=4)
    again = view_predictions(trained, fields, views=4)
    assert Counting.calls == 16  # the second call read the cache
    for a, b, c in zip(plain, first, again):
        for x, y, z in zip(a, b, c):
            assert all(torch.equal(x[k], y[k]) and torch.equal(x[k], z[k]) and x[k].dtype == z[k].dtype for k in x)
    fused = tta_predictions({"fake": trained}, fields, views=4, iou=0.5)["fake"]
    direct = predict_tta(network, fields, views=4, iou=0.5)
    assert Counting.calls == 16 + 8  # predict_tta ran; tta_predictions read the cache
    assert all(
        torch.equal(f["boxes"], d["boxes"]) and torch.equal(f["scores"], d["scores"]) for f, d in zip(fused, direct)
    )
    view_predictions(trained, fields[:1], views=4)  # other fields: predicted
    assert Counting.calls == 24 + 4
    assert to_array([[]]).shape == (0, 8) and from_array(to_array(plain), 2, 4)[1][3]["labels"].dtype == torch.int64
    with pytest.raises(ValueError, match="array of detections"):
        from_array(np.zeros((2, 3)), 1, 1)
