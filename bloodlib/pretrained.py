"""ImageNet weights for torchvision backbones, from torchvision's cache or a download.

torchvision keeps downloaded weights in ``$TORCH_HOME/hub/checkpoints/`` (default
``~/.cache/torch``). Offline with no cached file, :func:`torchvision_state_dict`
raises :class:`PretrainedWeightsError` saying which file to put where.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Any


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights are neither cached nor downloadable."""


def cached_weights_path(weights: Any) -> Path:
    """Where torchvision looks for ``weights`` (a ``WeightsEnum`` member) before downloading."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def torchvision_state_dict(weights: Any) -> dict[str, Any]:
    """The state dict of ``weights`` (e.g. ``torchvision.models.VGG16_Weights.IMAGENET1K_V1``).

    Raises:
        PretrainedWeightsError: offline and not cached; the message names the URL and the file.
    """
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as err:
        raise PretrainedWeightsError(
            f"cannot load ImageNet weights {weights}: {err}. Download {weights.url} on a machine with "
            f"internet and put it at {cached_weights_path(weights)} (or set TORCH_HOME to a folder whose "
            "hub/checkpoints/ holds it), or use pretrained: false"
        ) from err
