"""The compute environment: applied on request only, a user's own setting wins, threads checked."""

from __future__ import annotations

import os

import pytest
import torch

from bloodlib import runtime


def test_configure_fills_in_unset_variables_only(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    runtime.configure()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    runtime.configure()
    assert os.environ["OMP_WAIT_POLICY"] == runtime.COMPUTE_ENV["OMP_WAIT_POLICY"] == "PASSIVE"


def test_configure_sets_torch_threads(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    before = torch.get_num_threads()
    try:
        runtime.configure(threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        runtime.configure(threads=0)
