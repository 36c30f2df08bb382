"""Layer-1 feature maps (the paper's Figures 8 and 9): the output of a model's first conv layer."""

from __future__ import annotations

import torch
from torch import nn

from bloodlib.classification.models import FIRST_LAYER


@torch.no_grad()
def layer1_feature_maps(model: nn.Module, name: str, inputs: torch.Tensor) -> torch.Tensor:
    """``(N, 3, h, w)`` inputs -> ``(N, C, h', w')`` activations of ``FIRST_LAYER[name]``.

    Raises:
        ValueError: ``name`` has no first layer registered, or the module is not found.
    """
    if name not in FIRST_LAYER:
        raise ValueError(f"no first layer known for model {name!r}; known: {', '.join(FIRST_LAYER)}")
    modules = dict(model.named_modules())
    if FIRST_LAYER[name] not in modules:
        raise ValueError(f"model {name!r} has no module {FIRST_LAYER[name]!r}")
    captured: list[torch.Tensor] = []
    handle = modules[FIRST_LAYER[name]].register_forward_hook(lambda _m, _i, out: captured.append(out.detach().clone()))
    try:
        model.eval()
        model(inputs.to(next(model.parameters()).device))
    finally:
        handle.remove()
    return captured[0].cpu()
