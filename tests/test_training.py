"""The shared training scaffold: resume, seeding, schedule, selection, load-or-train -- for both deep tasks."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from bloodlib.modelcache import CorruptModelError, ModelRun
from bloodlib.training import LRFactor, TrainConfig, fit, histories, load_or_train, networks
from tests.training_helpers import classifier_task, detection_task, tiny_classifier, tiny_ssd

pytestmark = pytest.mark.usefixtures("one_thread")

DETECTION = TrainConfig(epochs=2, batch_size=2, lr=1e-3, weight_decay=1e-2, warmup_epochs=0.5, grad_clip=10.0, seed=3)
CLASSIFIER = TrainConfig(epochs=2, batch_size=16, lr=3e-3, final_lr_fraction=0.1, seed=3)


def _tasks(tmp_path):
    """(name, task, model factory, config) of each deep task."""
    return {
        "detection": (detection_task(tmp_path), tiny_ssd, DETECTION),
        "classification": (classifier_task(), tiny_classifier, CLASSIFIER),
    }


def _fresh(build):
    torch.manual_seed(0)
    return build()


@pytest.mark.slow
@pytest.mark.parametrize("task_name", ["detection", "classification"])
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, task_name):
    task, build, config = _tasks(tmp_path)[task_name]
    straight = fit(_fresh(build), task, config, run=ModelRun("t", {"a": 1}, {}, tmp_path / "A"), progress=False)

    run = ModelRun("t", {"a": 1}, {}, tmp_path / "B")

    def interrupt(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_fresh(build), task, config, run=run, progress=False, on_epoch=interrupt)
    assert run.load_checkpoint()["epoch"] == 1
    torch.manual_seed(12345)  # a new process: its global RNG state is whatever it is
    resumed = fit(_fresh(build), task, config, run=run, progress=False)

    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert resumed.history[1]["train_loss"] == pytest.approx(straight.history[1]["train_loss"], rel=1e-6, abs=1e-7)
    assert straight.history[1]["train_loss"] != straight.history[0]["train_loss"]
    assert resumed.best_epoch == straight.best_epoch
    for key, value in straight.state.items():
        torch.testing.assert_close(resumed.state[key], value, rtol=1e-5, atol=1e-6)
    assert any(key.startswith("val_") for key in straight.history[1])


def test_learning_rate_warms_up_then_decays_to_the_final_fraction():
    factor = LRFactor(warmup_steps=10, total_steps=110, final=0.01)
    assert factor(0) == pytest.approx(0.1) and factor(5) == pytest.approx(0.55)
    assert factor(10) == pytest.approx(1.0) and factor(60) == pytest.approx(0.505)
    assert factor(110) == pytest.approx(0.01) and factor(500) == pytest.approx(0.01)
    constant = LRFactor(warmup_steps=0, total_steps=50, final=1.0)
    assert {constant(s) for s in (0, 25, 50)} == {1.0}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"final_lr_fraction": 0.0}, "final_lr_fraction"),
        ({"warmup_epochs": -1.0}, "warmup_epochs"),
        ({"precision": "float16"}, "precision must be one of float32, bfloat16"),
    ],
)
def test_train_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{"epochs": 1, "batch_size": 2, "lr": 1e-3, **kwargs})


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_training_autocasts_only_where_the_cpu_has_it(monkeypatch, native):
    """bfloat16 runs the loss under CPU autocast (float32 weights) where the CPU supports it natively and is
    plain float32 elsewhere; run.json's launch says which one ran."""
    monkeypatch.setattr("bloodlib.torchutil.bf16_supported", lambda: native)
    task = classifier_task()
    config = dataclasses.replace(CLASSIFIER, epochs=1)
    plain = fit(_fresh(tiny_classifier), task, config, progress=False)
    bf16 = fit(_fresh(tiny_classifier), task, dataclasses.replace(config, precision="bfloat16"), progress=False)
    assert plain.launch["mixed_precision"] == "none"
    assert bf16.launch["mixed_precision"] == ("bf16" if native else "none")
    assert all(value.dtype in (torch.float32, torch.int64) for value in bf16.state.values())
    same = all(torch.equal(bf16.state[key], value) for key, value in plain.state.items())
    assert same != native  # bfloat16 arithmetic gives other weights; the fallback the same ones


class _Scripted:
    """A task whose validation metrics follow a script, to test which epoch is kept."""

    def __init__(self, scores: list[float], loss: float = 1.0) -> None:
        self.scores, self.loss_value, self.epoch = scores, loss, 0
        self.data = [(torch.ones(2, 1), torch.zeros(2, 1))]

    steps_per_epoch = 1

    def train_loader(self, generator):
        return self.data

    def loss(self, model, batch):
        x, y = batch
        loss = ((model(x) - y) ** 2).mean() * self.loss_value
        return loss, {"loss": float(loss.detach())}

    def validate(self, model):
        self.epoch += 1
        return {"score": self.scores[self.epoch - 1]} if self.scores else {}

    def rank(self, metrics):
        return (metrics["score"],)


def test_the_best_validation_epoch_is_kept_and_ties_keep_the_earlier():
    result = fit(torch.nn.Linear(1, 1), _Scripted([0.2, 0.7, 0.7, 0.1]), TrainConfig(4, 2, 0.1), progress=False)
    assert result.best_epoch == 2 and [row["val_score"] for row in result.history] == [0.2, 0.7, 0.7, 0.1]


def test_without_validation_the_last_epoch_is_kept():
    config = TrainConfig(epochs=3, batch_size=2, lr=0.1, eval_every=2)
    result = fit(torch.nn.Linear(1, 1), _Scripted([]), config, progress=False)
    assert result.best_epoch == 3 and len(result.history) == 3


def test_a_nan_loss_stops_training_with_a_message():
    with pytest.raises(FloatingPointError, match="loss is nan at step 0"):
        fit(torch.nn.Linear(1, 1), _Scripted([0.5], loss=math.nan), TrainConfig(1, 2, 0.1), progress=False)


def test_load_or_train_caches_weights_and_history(tmp_path):
    run = ModelRun("t/linear", {"lr": 0.1}, {"data": "x"}, tmp_path)
    calls = []

    def train(model):
        calls.append(1)
        return fit(model, _Scripted([0.1, 0.9]), TrainConfig(2, 2, 0.1, seed=5), run=run, progress=False)

    first = load_or_train(run, lambda: torch.nn.Linear(1, 1), train, name="linear", seed=5)
    again = load_or_train(run, lambda: torch.nn.Linear(1, 1), train, name="linear", seed=5)
    assert calls == [1] and not first.cached and again.cached
    assert again.best_epoch == first.best_epoch == 2 and again.history == first.history
    assert torch.equal(again.model.weight, first.model.weight) and not again.model.training
    assert again.best_row["val_score"] == 0.9 and not run.checkpoint_path.exists()
    assert again.launch == first.launch and again.precision == first.precision == "float32"
    assert networks({"linear": again}) == {"linear": again.model} and histories({"l": again}) == {"l": again.history}

    run.final_path.write_bytes(run.final_path.read_bytes()[:-7])  # an interrupted copy
    with pytest.raises(CorruptModelError, match="final.pt is damaged"):
        load_or_train(run, lambda: torch.nn.Linear(1, 1), train, name="linear", seed=5)


def test_load_or_train_seeds_the_initial_weights(tmp_path):
    def train(model):
        return fit(model, _Scripted([]), TrainConfig(1, 2, 1e-9), progress=False)

    initial = []

    def build():
        model = torch.nn.Linear(1, 3)
        initial.append(model.weight.detach().clone())
        return model

    for folder in ("a", "b"):
        torch.manual_seed(ord(folder))  # whatever the global RNG held before
        load_or_train(ModelRun("t", {}, {}, tmp_path / folder), build, train, name="x", seed=7)
    assert torch.equal(initial[0], initial[1])
