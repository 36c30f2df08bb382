"""Model cost: parameters, FLOPs and single-image inference time on this machine's CPU."""

from __future__ import annotations

import statistics
import time

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bloodlib.torchutil import count_parameters


@torch.no_grad()
def flops(model: nn.Module, input_size: tuple[int, int]) -> int:
    """FLOPs (2 x multiply-adds) of one forward pass of a ``(1, 3, h, w)`` input in eval mode."""
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, 3, *input_size))
    return int(counter.get_total_flops())


@torch.no_grad()
def inference_ms(model: nn.Module, input_size: tuple[int, int], *, repeats: int) -> float:
    """Median wall time (ms) of ``repeats`` single-image forward passes after one warm-up."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    model.eval()
    x = torch.rand(1, 3, *input_size)
    model(x)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def cost_table(models: dict[str, nn.Module], input_size: tuple[int, int], *, repeats: int) -> pd.DataFrame:
    """One row per model: ``params_M``, ``gflops`` at ``input_size``, ``infer_ms`` (batch 1)."""
    rows = [
        {
            "model": name,
            "params_M": count_parameters(model, trainable_only=True) / 1e6,
            "gflops": flops(model, input_size) / 1e9,
            "infer_ms": inference_ms(model, input_size, repeats=repeats),
        }
        for name, model in models.items()
    ]
    return pd.DataFrame(rows)


@torch.no_grad()
def layer_summary(model: nn.Module, input_size: tuple[int, int]) -> pd.DataFrame:
    """One row per leaf module that runs in a forward pass: ``layer, type, output shape, params``."""
    rows: list[dict] = []
    hooks = []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue

        def hook(mod: nn.Module, _inputs: tuple, output: torch.Tensor, name: str = name) -> None:
            shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else None
            rows.append(
                {
                    "layer": name,
                    "type": type(mod).__name__,
                    "output": shape,
                    "params": count_parameters(mod),  # a leaf: its own parameters
                }
            )

        hooks.append(module.register_forward_hook(hook))
    try:
        model.eval()
        model(torch.zeros(1, 3, *input_size))
    finally:
        for handle in hooks:
            handle.remove()
    return pd.DataFrame(rows)
