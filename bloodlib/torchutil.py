"""Helpers for torch modules that the tasks share."""

from __future__ import annotations

import torch
from torch import nn

from bloodlib.params import precision_check


def bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (oneDNN with AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def effective_precision(precision: str) -> str:
    """The precision that runs on this CPU for the requested ``precision``: ``"bfloat16"`` only where
    the CPU supports it natively (emulated bfloat16 is many times slower than float32), else
    ``"float32"``.

    Raises:
        ValueError: ``precision`` is not one of :data:`bloodlib.params.PRECISIONS`.
    """
    ok, problem = precision_check(precision)
    if not ok:
        raise ValueError(problem)
    return "bfloat16" if precision == "bfloat16" and bf16_supported() else "float32"


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (elements) of ``model``; with ``trainable_only`` only those with ``requires_grad``."""
    return sum(param.numel() for param in model.parameters() if param.requires_grad or not trainable_only)
