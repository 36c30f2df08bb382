"""Helpers for torch modules that the tasks share."""

from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (elements) of ``model``; with ``trainable_only`` only those with ``requires_grad``."""
    return sum(param.numel() for param in model.parameters() if param.requires_grad or not trainable_only)
