"""The fast inference path equals the plain models; batches survive bad files; outputs stay in order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import box_iou

from bloodlib.classification.crops import read_rgb
from bloodlib.pipeline.infer import Classifier, Detector, detect_paths, fuse_conv_bn, run_fields
from tests.pipeline_helpers import bccd_images, colour_image, quick_params, tiny_models


def test_fuse_conv_bn_is_equivalent():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Sequential(nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4))
    )
    for bn in (net[1], net[3][1]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 2)
    net.eval()
    fused = fuse_conv_bn(net)
    x = torch.randn(2, 3, 16, 16)
    assert isinstance(fused[1], nn.Identity) and isinstance(fused[3][1], nn.Identity)
    assert torch.allclose(net(x), fused(x), atol=1e-5)
    assert isinstance(net[1], nn.BatchNorm2d)  # the original is untouched


def test_ssd_input_matches_torchvision_transform():
    models = tiny_models()
    rgb = read_rgb(bccd_images(1)[0])
    image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    reference, _ = models.detector.transform([image])
    detector = Detector(models.detector)
    ours = detector.prepare(rgb)
    assert ours.shape == reference.tensors.shape[1:]
    assert torch.allclose(ours, reference.tensors[0], atol=1e-4)


def test_fast_detector_equals_the_model():
    models = tiny_models()
    paths = bccd_images(3)
    images = [torch.from_numpy(read_rgb(p)).permute(2, 0, 1).float() / 255 for p in paths]
    detector = Detector(models.detector)
    batch = torch.stack([detector.prepare(read_rgb(p)) for p in paths])
    with torch.no_grad():  # fused, channels-last backbone + head == the model's own
        reference = models.detector.head(list(models.detector.backbone(batch).values()))
        ours = detector.head(list(detector.backbone(batch.contiguous(memory_format=torch.channels_last)).values()))
    for key in ("cls_logits", "bbox_regression"):
        assert torch.allclose(reference[key], ours[key], atol=1e-4)
    # end to end: an untrained model's scores nearly tie, so compare the detections as sets
    with torch.no_grad():
        expected = models.detector(images)
    got = detect_paths(detector, paths, batch_size=2)
    for e, g in zip(expected, got):
        iou = box_iou(e["boxes"], g["boxes"])
        same = (iou > 0.99) & (e["labels"][:, None] == g["labels"][None, :])
        assert same.any(dim=1).float().mean() >= 0.95


def test_fused_classifier_equals_the_model_on_the_policy_inputs():
    models = tiny_models()
    rgb = read_rgb(bccd_images(1)[0])
    boxes = np.array([[100, 80, 220, 200], [600, 400, 660, 500], [-10, -10, 40, 40]], dtype=np.float32)
    inputs = models.policy.classifier_inputs(rgb, boxes)  # the one crop path (tested in test_classification_data)
    assert inputs.shape == (3, 3, *models.policy.input_size)
    classifier = Classifier(models.classifier, models.policy)
    with torch.no_grad():
        expected = torch.softmax(models.classifier(inputs), dim=1)
    assert torch.allclose(classifier(inputs), expected, atol=1e-5)
    assert classifier(models.policy.classifier_inputs(rgb, boxes[:0])).shape == (0, 4)


def test_run_fields_keeps_order_and_reports_bad_files(tmp_path):
    models = tiny_models()
    good = bccd_images(3)
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    paths = [good[0], bad, good[1], good[2]]
    detector, classifier = Detector(models.detector), Classifier(models.classifier, models.policy)
    results = list(
        run_fields(
            paths, detector, classifier, models.thresholds, batch_size=3, num_workers=1, max_side=4000, min_side=32
        )
    )
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert [r.ok for r in results] == [True, False, True, True] and "not an image" in results[1].error
    r = results[0]
    wbc = r.labels == 2
    assert wbc.any() and (r.subtype[wbc] >= 0).all() and (r.subtype[~wbc] == -1).all()
    assert np.allclose(r.subtype_prob[wbc].sum(axis=1), 1, atol=1e-5) and (r.subtype_prob[~wbc] == 0).all()
    assert (r.width, r.height) == (640, 480) and r.boxes.shape == (len(r.labels), 4)


def test_bfloat16_request_falls_back_or_runs():
    detector = Detector(tiny_models().detector, "bfloat16")
    assert detector.precision in ("bfloat16", "float32")
    out = detector(torch.zeros(1, 3, 300, 300), [(480, 640)])
    assert out[0]["boxes"].dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        Detector(tiny_models().detector, "float16")


def test_png_writer_round_trips():
    import io

    from PIL import Image

    from bloodlib.pipeline import NOTICE
    from bloodlib.pipeline.annotate import png_bytes

    rgb = colour_image(37, 53)
    with Image.open(io.BytesIO(png_bytes(rgb, text={"Source": "x.jpg"}))) as image:
        assert np.array_equal(np.asarray(image), rgb)
        assert image.text == {"Disclaimer": NOTICE, "Source": "x.jpg"}


@pytest.mark.slow
def test_bench_measures_both_pipelines_on_real_images():
    """The bench's two measurements run end to end (speed itself is a benchmark, not a test)."""
    from bloodlib.pipeline.speed import pipeline_images_per_s, torchvision_images_per_s

    paths = bccd_images(4)
    rate, precision = pipeline_images_per_s(paths, tiny_models(), quick_params(), "float32")
    assert rate > 0 and precision == "float32"
    reference, model = torchvision_images_per_s(paths[:2], batch_size=2, num_workers=0)
    assert reference > 0 and model.head.classification_head.num_columns == 4
