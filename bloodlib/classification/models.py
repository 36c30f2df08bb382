"""The paper's eight WBC-subtype CNNs from one factory, :func:`build_model`.

- ``arch1`` -- a plain small CNN (three conv/ReLU/max-pool stages, two dense layers), the
  paper's "customized architecture 1" (its figure is not in the text; this is our reading);
- ``arch2`` -- a deeper CNN with batch norm, dropout and global average pooling
  ("customized architecture 2");
- ``resnet50``, ``densenet121``, ``vgg16``, ``mobilenet_v2``, ``inception_v3`` (torchvision)
  and ``xception`` (timm ``legacy_xception``, the Keras port), each with a 4-class head.
  ``vgg16`` is torchvision's VGG16 *with batch norm* (``vgg16_bn``): the plain VGG16 diverged
  in its first epoch when trained from scratch with the ``cpu`` recipe (loss 25, then stuck at
  chance), and ImageNet weights exist for both.

Every model takes ``(N, 3, H, W)`` float images in ``[0, 1]`` (pixels / 255, as in the paper)
and returns ``(N, num_classes)`` logits; Inception-v3 in training mode returns
``(logits, aux_logits)`` (see :func:`split_outputs`). The six standard backbones normalise
their input with their ImageNet mean/std inside the model, so callers never need to know
which preprocessing a backbone expects (the paper fed Keras backbones 1/255-scaled pixels;
Keras' ResNet50 expects caffe-style inputs, which may explain its 0.35 accuracy).

Heads: the ImageNet classifier is replaced by global average pooling + one linear layer
(Keras' ``include_top=False, pooling="avg"`` + ``Dense(4)``); for VGG16 this drops the two
4096-unit layers (102 M parameters, pointless at 4 classes and small inputs).

``pretrained=True`` loads ImageNet weights through torchvision's cache
(:func:`bloodlib.pretrained.torchvision_state_dict`) or, for Xception, timm's Hugging Face
cache; offline with no cached file both raise :class:`~bloodlib.pretrained.PretrainedWeightsError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bloodlib.pretrained import PretrainedWeightsError, torchvision_state_dict

MODEL_NAMES = ("arch1", "arch2", "resnet50", "densenet121", "vgg16", "mobilenet_v2", "inception_v3", "xception")
CUSTOM_MODELS = ("arch1", "arch2")
STANDARD_MODELS = tuple(n for n in MODEL_NAMES if n not in CUSTOM_MODELS)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The module whose output is a model's "layer-1 feature maps" (first conv + activation).
FIRST_LAYER = {
    "arch1": "features.1",
    "arch2": "features.0.2",
    "resnet50": "backbone.relu",
    "densenet121": "backbone.features.relu0",
    "vgg16": "backbone.features.2",
    "mobilenet_v2": "backbone.features.0",
    "inception_v3": "backbone.Conv2d_1a_3x3",
    "xception": "backbone.act1",
}


class Arch1(nn.Module):
    """Plain small CNN: 3 x (conv3x3 -> ReLU -> maxpool) with 16/32/64 channels, 4x4 pooling,
    dense 1024 -> 128 -> classes. No batch norm, no dropout."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = [3, 16, 32, 64]
        for c_in, c_out in zip(channels, channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU(inplace=True), nn.Linear(128, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, num_classes)``."""
        return self.classifier(self.pool(self.features(x)))


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class Arch2(nn.Module):
    """Deeper CNN: 4 stages of 2 x (conv3x3 -> BN -> ReLU) with 32/64/128/256 channels, max-pool
    between stages, spatial dropout, global average pooling, dropout, linear head."""

    def __init__(self, num_classes: int, dropout: float = 0.3) -> None:
        super().__init__()
        widths = [32, 64, 128, 256]
        stages: list[nn.Module] = []
        c_in = 3
        for i, width in enumerate(widths):
            stage = _conv_bn(c_in, width) + _conv_bn(width, width)
            if i < len(widths) - 1:
                stage += [nn.MaxPool2d(2)]
            if i >= 2:
                stage += [nn.Dropout2d(dropout / 2)]
            stages.append(nn.Sequential(*stage))
            c_in = width
        self.features = nn.Sequential(*stages)  # features.0.2 = first ReLU = "layer 1"
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(widths[-1], num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, num_classes)``."""
        return self.head(self.features(x))


class AdaptiveInceptionAux(nn.Module):
    """Inception-v3's auxiliary classifier made size-agnostic.

    torchvision's ``InceptionAux`` average-pools with a fixed 5x5/stride-3 window, which needs
    the 17x17 maps of a 299x299 input. Here the pooling is adaptive (to 5x5), so the aux head
    works at any input size and keeps the layers (and ImageNet weights) of the original.
    """

    def __init__(self, aux: nn.Module) -> None:
        super().__init__()
        self.conv0, self.conv1, self.fc = aux.conv0, aux.conv1, aux.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 768, h, w)`` -> ``(N, num_classes)``."""
        x = self.conv1(self.conv0(F.adaptive_avg_pool2d(x, 5)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Backbone(nn.Module):
    """A standard backbone with its input normalisation and minimum input size.

    ``forward``: ``(N, 3, H, W)`` in ``[0, 1]`` -> logits ``(N, C)``, or ``(logits, aux)``
    for Inception-v3 in training mode. Inputs whose shorter side is below ``min_size``
    (Inception-v3 needs 75 px) are bilinearly upsampled first.
    """

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], min_size: int = 0) -> None:
        super().__init__()
        self.backbone = net
        self.min_size = min_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> Any:
        short = min(x.shape[-2:])
        if short < self.min_size:
            scale = self.min_size / short
            size = (max(self.min_size, round(x.shape[-2] * scale)), max(self.min_size, round(x.shape[-1] * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        out = self.backbone((x - self.mean) / self.std)
        if isinstance(out, tuple):  # torchvision InceptionOutputs(logits, aux_logits)
            return (out[0], out[1]) if out[1] is not None else out[0]
        return out


def split_outputs(outputs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logits, aux_logits or None)`` from whatever a model's forward returned."""
    if isinstance(outputs, tuple):
        return outputs[0], outputs[1]
    return outputs, None


def _torchvision(name: str, pretrained: bool) -> nn.Module:
    """A torchvision ImageNet model (1000 classes), with ImageNet weights if ``pretrained``."""
    from torchvision.models import (
        DenseNet121_Weights,
        Inception_V3_Weights,
        MobileNet_V2_Weights,
        ResNet50_Weights,
        VGG16_BN_Weights,
        densenet121,
        inception_v3,
        mobilenet_v2,
        resnet50,
        vgg16_bn,
    )

    constructors = {
        "resnet50": (resnet50, ResNet50_Weights.IMAGENET1K_V1, {}),
        "densenet121": (densenet121, DenseNet121_Weights.IMAGENET1K_V1, {}),
        "vgg16": (vgg16_bn, VGG16_BN_Weights.IMAGENET1K_V1, {}),
        "mobilenet_v2": (mobilenet_v2, MobileNet_V2_Weights.IMAGENET1K_V1, {}),
        "inception_v3": (
            inception_v3,
            Inception_V3_Weights.IMAGENET1K_V1,
            {"aux_logits": True, "transform_input": False, "init_weights": True},
        ),
    }
    constructor, weights, kwargs = constructors[name]
    net = constructor(weights=None, **kwargs)
    if pretrained:
        state = torchvision_state_dict(weights)
        net.load_state_dict(state)
    return net


def _xception(num_classes: int, pretrained: bool) -> tuple[nn.Module, tuple, tuple]:
    import timm

    try:
        net = timm.create_model("legacy_xception", pretrained=pretrained, num_classes=num_classes)
    except Exception as err:  # offline: urllib / huggingface_hub raise various connection errors
        if not pretrained:
            raise
        cfg = timm.models.get_pretrained_cfg("legacy_xception")
        where = (
            f"download {cfg.url} on a machine with internet and put it at "
            f"{Path(torch.hub.get_dir()) / 'checkpoints' / Path(cfg.url).name} (timm reads torch's hub cache)"
            if cfg.url
            else f"fetch the Hugging Face repo {cfg.hf_hub_id} into the HF cache (HF_HOME) on a machine with internet"
        )
        raise PretrainedWeightsError(
            f"cannot load ImageNet weights for timm 'legacy_xception': {type(err).__name__}: {err}. "
            f"To use them offline, {where}; or use pretrained: false"
        ) from err
    cfg = net.pretrained_cfg
    return net, tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))


def build_model(name: str, *, num_classes: int = 4, pretrained: bool = False) -> nn.Module:
    """One of :data:`MODEL_NAMES` with a ``num_classes`` head (see the module docstring).

    ``pretrained`` is ignored for the custom nets (there are no ImageNet weights for them).

    Raises:
        ValueError: unknown ``name`` or fewer than two classes.
        PretrainedWeightsError: ``pretrained`` and the weights are neither cached nor downloadable.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if name == "arch1":
        return Arch1(num_classes)
    if name == "arch2":
        return Arch2(num_classes)
    if name == "xception":
        net, mean, std = _xception(num_classes, pretrained)
        return Backbone(net, mean, std)
    net = _torchvision(name, pretrained)
    min_size = 0
    if name == "resnet50":
        net.fc = nn.Linear(net.fc.in_features, num_classes)
    elif name == "densenet121":
        net.classifier = nn.Linear(net.classifier.in_features, num_classes)
    elif name == "vgg16":
        net.avgpool = nn.AdaptiveAvgPool2d(1)
        net.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(512, num_classes))
    elif name == "mobilenet_v2":
        net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, num_classes)
    elif name == "inception_v3":
        net.fc = nn.Linear(net.fc.in_features, num_classes)
        net.AuxLogits.fc = nn.Linear(net.AuxLogits.fc.in_features, num_classes)
        net.AuxLogits = AdaptiveInceptionAux(net.AuxLogits)
        min_size = 75
    return Backbone(net, IMAGENET_MEAN, IMAGENET_STD, min_size=min_size)
