"""SSD300 backbones written here: VGG16 and AlexNet with the SSD changes and extra layers.

Both return six feature maps (an ``OrderedDict`` ``"0"``..``"5"``) for torchvision's
:class:`~torchvision.models.detection.SSD`, and carry ``out_channels`` (one per map).

VGG16 (Liu et al. 2016, Fig. 2), for a 3x300x300 input::

    conv1_1..conv4_3 (pool3 in ceil mode)        -> L2-normalised, learned scale 20   38x38
    pool4, conv5_1..conv5_3, pool5 3x3/1/1,
    conv6 3x3 dilation 6 -> 1024, conv7 1x1 1024                                     19x19
    conv8  1x1 256, 3x3/2 512                                                        10x10
    conv9  1x1 128, 3x3/2 256                                                          5x5
    conv10 1x1 128, 3x3   256                                                          3x3
    conv11 1x1 128, 3x3   256                                                          1x1

AlexNet (Krizhevsky et al. 2012, torchvision's single-tower variant) with the same
recipe: conv1 11x11/4, pool1, conv2 5x5 (L2-normalised, 36x36 -- the stride-8 map that
VGG's conv4_3 provides), pool2, conv3..conv5, pool5 3x3/1/1, dilated conv6 and conv7
(17x17), then the same four extra blocks (9, 5, 3, 1).

``width`` multiplies every channel count (1.0 = the real architecture) so that a CPU can
train it; ``batch_norm`` inserts BatchNorm after every convolution but the one producing the 1x1
map (helps training from scratch; the published architectures have none). With ``width=1.0`` and
``batch_norm=False`` the convolutions of conv1..conv5 have exactly torchvision's shapes
and :func:`load_imagenet_weights` copies torchvision's ImageNet weights into them
(conv6/conv7 and the extra layers are initialised fresh, as in torchvision's SSD).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BACKBONES = ("vgg16", "alexnet")

# VGG16 conv1_1 .. conv5_3 channels; "M" = 2x2/2 max pool ("C" = the same in ceil mode).
_VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512)
_VGG16_CONV5: tuple[int, ...] = (512, 512, 512)
# Indices of the convolutions in torchvision's ``vgg16().features``, in order.
_TV_VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_TV_ALEXNET_CONVS = (0, 3, 6, 8, 10)


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 4."""
    return max(4, round(channels * width))


def _conv(cin: int, cout: int, batch_norm: bool, **kwargs) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, **kwargs)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale (init 20), as SSD's conv4_3."""

    def __init__(self, channels: int, scale: float = 20.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), scale))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C, H, W)
        return self.weight.view(1, -1, 1, 1) * F.normalize(x, dim=1)


def _fc_block(cin: int, width: float, batch_norm: bool) -> nn.Sequential:
    """pool5 3x3/1/1, conv6 3x3 dilation 6 (1024), conv7 1x1 (1024): SSD's fc6/fc7 replacement."""
    c = scaled(1024, width)
    return nn.Sequential(
        nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
        *_conv(cin, c, batch_norm, kernel_size=3, padding=6, dilation=6),
        *_conv(c, c, batch_norm, kernel_size=1),
    )


def _extra_blocks(cin: int, width: float, batch_norm: bool) -> nn.ModuleList:
    """SSD300's conv8..conv11 blocks (1x1 reduce, then 3x3 stride 2, 2, 1, 1)."""
    spec = ((256, 512, 2, 1), (128, 256, 2, 1), (128, 256, 1, 0), (128, 256, 1, 0))
    blocks = []
    for i, (mid, out, stride, padding) in enumerate(spec):
        mid_c, out_c = scaled(mid, width), scaled(out, width)
        last = i == len(spec) - 1  # conv11_2 -> 1x1: BatchNorm would see one value per channel for one image
        blocks.append(
            nn.Sequential(
                *_conv(cin, mid_c, batch_norm, kernel_size=1),
                *_conv(mid_c, out_c, batch_norm and not last, kernel_size=3, stride=stride, padding=padding),
            )
        )
        cin = out_c
    return nn.ModuleList(blocks)


def _init_fresh(module: nn.Module) -> None:
    """Xavier-uniform convolutions, zero biases, unit BatchNorm (torchvision's SSD init)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


class SSDBackbone(nn.Module):
    """Common forward: ``stem`` -> L2Norm'd map 0; ``fc`` -> map 1; extra blocks -> maps 2..5.

    Input ``(B, 3, 300, 300)``; output ``OrderedDict`` of six ``(B, C_k, H_k, W_k)`` maps.
    """

    name = "base"

    def __init__(
        self, stem: nn.Sequential, middle: nn.Sequential, stem_channels: int, fc_in: int, width: float, batch_norm: bool
    ) -> None:
        super().__init__()
        self.stem = stem
        self.l2norm = L2Norm(stem_channels)
        self.middle = middle
        self.fc = _fc_block(fc_in, width, batch_norm)
        self.extras = _extra_blocks(scaled(1024, width), width, batch_norm)
        self.width = width
        self.batch_norm = batch_norm
        _init_fresh(self)
        self.out_channels = [stem_channels, scaled(1024, width)] + [
            [m for m in block if isinstance(m, nn.Conv2d)][-1].out_channels for block in self.extras
        ]

    def conv_layers(self) -> list[nn.Conv2d]:
        """The backbone's own convolutions in order (conv1 .. conv5), those with ImageNet weights."""
        return [m for m in list(self.stem.modules()) + list(self.middle.modules()) if isinstance(m, nn.Conv2d)]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        x = self.stem(x)
        maps = [self.l2norm(x)]
        x = self.fc(self.middle(x))
        maps.append(x)
        for block in self.extras:
            x = block(x)
            maps.append(x)
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


class VGG16Backbone(SSDBackbone):
    """VGG16 with SSD's changes; see the module docstring."""

    name = "vgg16"

    def __init__(self, *, width: float = 1.0, batch_norm: bool = False) -> None:
        layers: list[nn.Module] = []
        cin = 3
        for item in _VGG16_CFG:
            if item in ("M", "C"):
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=item == "C"))
            else:
                cout = scaled(int(item), width)
                layers += _conv(cin, cout, batch_norm, kernel_size=3, padding=1)
                cin = cout
        stem_channels = cin
        middle: list[nn.Module] = [nn.MaxPool2d(kernel_size=2, stride=2)]  # pool4
        for channels in _VGG16_CONV5:
            cout = scaled(channels, width)
            middle += _conv(cin, cout, batch_norm, kernel_size=3, padding=1)
            cin = cout
        super().__init__(nn.Sequential(*layers), nn.Sequential(*middle), stem_channels, cin, width, batch_norm)


class AlexNetBackbone(SSDBackbone):
    """AlexNet's five convolutions with SSD's changes; see the module docstring."""

    name = "alexnet"

    def __init__(self, *, width: float = 1.0, batch_norm: bool = False) -> None:
        c1, c2, c3, c4, c5 = (scaled(c, width) for c in (64, 192, 384, 256, 256))
        stem = nn.Sequential(
            *_conv(3, c1, batch_norm, kernel_size=11, stride=4, padding=2),
            nn.MaxPool2d(kernel_size=3, stride=2),
            *_conv(c1, c2, batch_norm, kernel_size=5, padding=2),
        )
        middle = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=2),
            *_conv(c2, c3, batch_norm, kernel_size=3, padding=1),
            *_conv(c3, c4, batch_norm, kernel_size=3, padding=1),
            *_conv(c4, c5, batch_norm, kernel_size=3, padding=1),
        )
        super().__init__(stem, middle, c2, c5, width, batch_norm)


def build_backbone(name: str, *, width: float, batch_norm: bool, pretrained: bool) -> SSDBackbone:
    """A backbone by name (``"vgg16"`` or ``"alexnet"``), optionally with ImageNet weights.

    Raises:
        ValueError: unknown name, ``width <= 0``, or ``pretrained`` with ``width != 1``
            or ``batch_norm`` (torchvision's weights fit only the real architecture).
        bloodlib.pretrained.PretrainedWeightsError: pretrained, offline and not cached.
    """
    if name not in BACKBONES:
        raise ValueError(f"backbone {name!r} is not one of {', '.join(BACKBONES)}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    if pretrained and (width != 1.0 or batch_norm):
        raise ValueError(
            f"pretrained {name} weights need width=1.0 and batch_norm=false (got width={width}, "
            f"batch_norm={batch_norm})"
        )
    backbone = (VGG16Backbone if name == "vgg16" else AlexNetBackbone)(width=width, batch_norm=batch_norm)
    if pretrained:
        load_imagenet_weights(backbone)
    return backbone


def load_imagenet_weights(backbone: SSDBackbone) -> None:
    """Copy torchvision's ImageNet conv1..conv5 weights into ``backbone`` (width 1, no BatchNorm).

    Uses ``VGG16_Weights.IMAGENET1K_V1`` / ``AlexNet_Weights.IMAGENET1K_V1`` through
    :func:`bloodlib.pretrained.torchvision_state_dict` (torchvision's cache, else a download).
    """
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    from bloodlib.pretrained import torchvision_state_dict

    weights, indices = {
        "vgg16": (VGG16_Weights.IMAGENET1K_V1, _TV_VGG16_CONVS),
        "alexnet": (AlexNet_Weights.IMAGENET1K_V1, _TV_ALEXNET_CONVS),
    }[backbone.name]
    state = torchvision_state_dict(weights)
    convs = backbone.conv_layers()
    if len(convs) != len(indices):
        raise ValueError(f"{backbone.name}: {len(convs)} convolutions, torchvision has {len(indices)}")
    with torch.no_grad():
        for conv, index in zip(convs, indices):
            weight, bias = state[f"features.{index}.weight"], state[f"features.{index}.bias"]
            if conv.weight.shape != weight.shape:
                raise ValueError(
                    f"{backbone.name} conv features.{index}: shape {tuple(conv.weight.shape)} does not fit "
                    f"torchvision's {tuple(weight.shape)} (pretrained weights need width=1.0)"
                )
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)
