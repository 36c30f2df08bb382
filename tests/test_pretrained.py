"""Pretrained loading goes through torchvision's cache; offline without it is a clear error."""

from __future__ import annotations

import pytest
import torch
import torchvision

from bloodlib.pretrained import PretrainedWeightsError, cached_weights_path, torchvision_state_dict

WEIGHTS = torchvision.models.AlexNet_Weights.IMAGENET1K_V1


def test_loads_checkpoint_from_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.alexnet(weights=None).state_dict()
    path = cached_weights_path(WEIGHTS)
    assert path.parent == tmp_path / "hub" / "checkpoints"
    path.parent.mkdir(parents=True)
    torch.save(reference, path)
    loaded = torchvision_state_dict(WEIGHTS)
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def test_offline_without_cache_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(PretrainedWeightsError, match="hub/checkpoints/alexnet-owt-7be5be79.pth"):
        torchvision_state_dict(WEIGHTS)
