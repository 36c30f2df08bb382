"""SSD300 backbones and models: feature-map sizes, forward/backward with and without boxes, ImageNet mapping."""

from __future__ import annotations

import pytest
import torch
import torchvision

from bloodlib.detection.backbones import AlexNetBackbone, VGG16Backbone, build_backbone
from bloodlib.detection.model import build_ssd, feature_map_sizes
from bloodlib.pretrained import PretrainedWeightsError, cached_weights_path

SCALES = (0.06, 0.15, 0.22, 0.33, 0.45, 0.6, 0.75)


pytestmark = pytest.mark.usefixtures("one_thread")


def small_ssd(backbone: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_ssd(
        backbone=backbone, num_classes=4, width=0.125, batch_norm=True, scales=SCALES, aspect_ratios=(0.7,), **kwargs
    )


@pytest.mark.parametrize(
    "backbone,sizes",
    [
        ("vgg16", [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]),
        ("alexnet", [(36, 36), (17, 17), (9, 9), (5, 5), (3, 3), (1, 1)]),
    ],
)
def test_feature_map_sizes_at_300(backbone, sizes):
    model = small_ssd(backbone)
    assert feature_map_sizes(model) == sizes
    maps = model.backbone(torch.zeros(2, 3, 300, 300))
    assert [m.shape[1] for m in maps.values()] == model.backbone.out_channels


def test_full_width_vgg16_has_ssd300_channels():
    net = VGG16Backbone(width=1.0)
    assert net.out_channels == [512, 1024, 512, 256, 256, 256]
    assert [c.out_channels for c in net.conv_layers()] == [
        64,
        64,
        128,
        128,
        256,
        256,
        256,
        512,
        512,
        512,
        512,
        512,
        512,
    ]
    dilated = next(m for m in net.fc.modules() if isinstance(m, torch.nn.Conv2d))
    assert dilated.dilation == (6, 6) and dilated.out_channels == 1024
    assert AlexNetBackbone(width=1.0).out_channels == [192, 1024, 512, 256, 256, 256]


def synthetic_batch(n_boxes: list[int]) -> tuple[list[torch.Tensor], list[dict]]:
    g = torch.Generator().manual_seed(1)
    images, targets = [], []
    for n in n_boxes:
        images.append(torch.rand(3, 240, 320, generator=g))
        xy = torch.rand(n, 2, generator=g) * 200
        wh = 20 + torch.rand(n, 2, generator=g) * 60
        targets.append({"boxes": torch.cat([xy, xy + wh], dim=1), "labels": torch.randint(1, 4, (n,), generator=g)})
    return images, targets


@pytest.mark.parametrize("backbone", ["vgg16", "alexnet"])
def test_forward_backward_with_and_without_boxes(backbone):
    model = small_ssd(backbone).train()
    images, targets = synthetic_batch([3, 0])  # the second image has no boxes
    losses = model(images, targets)
    assert set(losses) == {"bbox_regression", "classification"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)

    only_empty = model([images[1]], [targets[1]])  # a batch with no box at all
    assert all(torch.isfinite(v) for v in only_empty.values())


@pytest.mark.parametrize("backbone", ["vgg16", "alexnet"])
def test_inference_output_shapes(backbone):
    model = small_ssd(backbone, score_thresh=0.0, detections_per_img=50).eval()
    images, _ = synthetic_batch([1, 1])
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det in out:
        n = det["boxes"].shape[0]
        assert det["boxes"].shape == (n, 4) and det["scores"].shape == (n,) and det["labels"].shape == (n,)
        assert 0 < n <= 50
        assert set(det["labels"].tolist()) <= {1, 2, 3}
        # boxes are in the input's pixels (320x240), not the network's 300x300
        assert det["boxes"][:, 2].max() <= 320 + 1e-3 and det["boxes"][:, 3].max() <= 240 + 1e-3


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="backbone 'resnet'"):
        build_backbone("resnet", width=1.0, batch_norm=False, pretrained=False)
    with pytest.raises(ValueError, match="width=0.5"):
        build_backbone("vgg16", width=0.5, batch_norm=False, pretrained=True)
    with pytest.raises(ValueError, match="scales"):
        build_ssd(backbone="vgg16", num_classes=4, width=0.125, scales=(0.1, 0.2))


@pytest.mark.parametrize(
    "backbone,factory,weights,indices",
    [
        (
            "vgg16",
            torchvision.models.vgg16,
            torchvision.models.VGG16_Weights.IMAGENET1K_V1,
            (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
        ),
        ("alexnet", torchvision.models.alexnet, torchvision.models.AlexNet_Weights.IMAGENET1K_V1, (0, 3, 6, 8, 10)),
    ],
)
def test_imagenet_weights_mapping_offline(tmp_path, monkeypatch, backbone, factory, weights, indices):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(PretrainedWeightsError, match="hub/checkpoints"):
        build_backbone(backbone, width=1.0, batch_norm=False, pretrained=True)

    torch.manual_seed(3)
    reference = factory(weights=None).state_dict()
    path = cached_weights_path(weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference, path)
    net = build_backbone(backbone, width=1.0, batch_norm=False, pretrained=True)
    convs = net.conv_layers()
    assert len(convs) == len(indices)
    for conv, index in zip(convs, indices):
        assert torch.equal(conv.weight, reference[f"features.{index}.weight"])
        assert torch.equal(conv.bias, reference[f"features.{index}.bias"])
    out = net(torch.zeros(1, 3, 300, 300))
    assert len(out) == 6
