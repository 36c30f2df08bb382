"""The eight WBC-subtype CNNs: forward/backward, aux logits, pretrained loading, feature maps, costs."""

from __future__ import annotations

import pytest
import torch
import torchvision

from bloodlib.classification.complexity import cost_table
from bloodlib.classification.features import layer1_feature_maps
from bloodlib.classification.models import MODEL_NAMES, build_model, split_outputs
from bloodlib.pretrained import PretrainedWeightsError, cached_weights_path
from bloodlib.torchutil import count_parameters


@pytest.fixture(autouse=True)
def two_threads():
    torch.set_num_threads(2)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward_on_a_tiny_batch(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=4)
    model.train()
    x = torch.rand(2, 3, 32, 40)
    logits, aux = split_outputs(model(x))
    assert logits.shape == (2, 4)
    assert (aux is not None) == (name == "inception_v3")
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3]))
    if aux is not None:
        assert aux.shape == (2, 4)
        loss = loss + 0.4 * torch.nn.functional.cross_entropy(aux, torch.tensor([0, 3]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4)
    maps = layer1_feature_maps(model, name, x)  # every model has a "layer 1"
    assert maps.ndim == 4 and maps.shape[0] == 2


def test_unknown_model_and_bad_class_count_are_errors():
    with pytest.raises(ValueError, match="unknown model 'alexnet'"):
        build_model("alexnet")
    with pytest.raises(ValueError, match="num_classes"):
        build_model("arch1", num_classes=1)


def test_pretrained_weights_come_from_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.mobilenet_v2(weights=None)
    path = cached_weights_path(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = build_model("mobilenet_v2", pretrained=True)
    ours = model.backbone.features.state_dict()
    assert all(torch.equal(v, reference.features.state_dict()[k]) for k, v in ours.items())
    assert model.backbone.classifier[-1].out_features == 4


def test_pretrained_offline_without_cache_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(PretrainedWeightsError, match="densenet121-a639ec97.pth"):
        build_model("densenet121", pretrained=True)

    import timm

    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: offline() if k.get("pretrained") else real(*a, **k))
    with pytest.raises(PretrainedWeightsError, match="xception-43020ad28.pth.*pretrained: false"):
        build_model("xception", pretrained=True)


@pytest.mark.parametrize("name,channels,stride", [("arch2", 32, 1), ("densenet121", 64, 2)])
def test_layer1_feature_map_shapes(name, channels, stride):
    model = build_model(name)
    maps = layer1_feature_maps(model, name, torch.rand(3, 3, 48, 64))
    assert maps.shape == (3, channels, 48 // stride, 64 // stride)
    assert (maps >= 0).all()  # after the ReLU


def test_cost_table_counts_parameters_and_flops():
    models = {"arch1": build_model("arch1"), "arch2": build_model("arch2")}
    table = cost_table(models, (32, 32), repeats=1)
    assert list(table["model"]) == ["arch1", "arch2"]
    assert table.loc[0, "params_M"] == pytest.approx(count_parameters(models["arch1"], trainable_only=True) / 1e6)
    assert (table["gflops"] > 0).all() and (table["infer_ms"] > 0).all()
    assert table.loc[1, "gflops"] > table.loc[0, "gflops"]


def test_layer_summary_accounts_for_every_parameter():
    from bloodlib.classification.complexity import layer_summary

    model = build_model("arch2")
    layers = layer_summary(model, (32, 32))
    assert layers["params"].sum() == count_parameters(model)
    assert layers.iloc[-1]["output"] == (4,)


def test_count_parameters_all_or_trainable_only():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))  # 8 + 3 parameters
    model[0].requires_grad_(False)
    assert count_parameters(model) == 11
    assert count_parameters(model, trainable_only=True) == 3
