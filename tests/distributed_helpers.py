"""Distributed training on the CPU for tests: functions run in 2 local processes by torchrun's own
launcher (``elastic_launch``, the machinery behind ``torchrun``) over the Gloo backend.

Each ``ddp_*`` function runs in every process: it joins the process group with
:func:`bloodlib.distributed.process_group` (torchrun's environment), trains on tiny synthetic data
and returns plain values (NumPy weights, histories, the files it wrote) by rank.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bloodlib import distributed
from bloodlib.classification.engine import ClassifierTask
from bloodlib.classification.transforms import eval_transform
from bloodlib.modelcache import ModelRun
from bloodlib.training import TrainConfig, fit, load_or_train
from tests.training_helpers import classifier_task, detection_task, tiny_classifier, tiny_ssd

#: one epoch of the equality test: batch 4 per process on 2 processes = global batch 8
EQUAL_STEPS = TrainConfig(epochs=1, batch_size=4, lr=3e-3, final_lr_fraction=0.1, grad_clip=1.0, seed=3)
RESUME = {
    "detection": TrainConfig(epochs=2, batch_size=1, lr=1e-3, weight_decay=1e-2, warmup_epochs=0.5, seed=3),
    "classification": TrainConfig(epochs=2, batch_size=8, lr=3e-3, final_lr_fraction=0.1, seed=3),
}


def run_on_processes(function: Callable[..., Any], *args: Any, nproc: int = 2) -> dict[int, Any]:
    """``function(*args)`` in ``nproc`` fresh local processes (torchrun's launcher); results by rank."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        run_id=uuid.uuid4().hex,
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
    )
    with distributed.kept_signal_handlers():  # the launcher's handlers would outlive it in pytest's process
        return elastic_launch(config, function)(*args)


def tiny_convnet() -> nn.Module:
    """Four classes from a ``(B, 3, h, w)`` input; no batch norm and no dropout, so that gradients
    averaged over processes are those of the whole batch."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)
    )


def deterministic_classifier_task(batch_size: int) -> ClassifierTask:
    """:func:`~tests.training_helpers.classifier_task` with the evaluation transform in place of the
    random augmentation: one process and two draw their augmentations differently (each process
    has its own RNG), so only inputs without randomness can give equal weights."""
    task = classifier_task(train_size=48, samples_per_epoch=32)
    task.batch_size = batch_size
    task.dataset.transform = eval_transform(task.input_size)
    return task


def numpy_state(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {key: value.numpy().copy() for key, value in state.items()}


def _join() -> distributed.World:
    torch.set_num_threads(1)
    return distributed.world()


def ddp_equal_steps() -> dict[str, Any]:
    """One epoch of :data:`EQUAL_STEPS` on every process; the kept weights and the history."""
    with distributed.process_group(backend="gloo"):
        _join()
        task = deterministic_classifier_task(EQUAL_STEPS.batch_size)
        torch.manual_seed(0)
        result = fit(tiny_convnet(), task, EQUAL_STEPS, device="cpu", progress=False)
        return {
            "state": numpy_state(result.state),
            "history": result.history,
            "steps": task.steps_per_epoch,
            "launch": result.launch,
        }


def _task(name: str, folder: Path, rank: int):
    if name == "detection":
        images = folder / f"images{rank}"  # each process writes its own copy of the synthetic images
        images.mkdir(parents=True, exist_ok=True)
        return detection_task(images), tiny_ssd
    return classifier_task(train_size=48, samples_per_epoch=32), tiny_classifier


class Interrupted(Exception):
    """Raised after the first epoch: a run stopped by a signal or a crash."""


def _record_writes(into: list[str]) -> None:
    """Record every file the model cache writes from now on in this process."""
    from bloodlib import modelcache

    for name in ("atomic_write_bytes", "atomic_write_text"):
        original = getattr(modelcache, name)

        def recording(path, data, _original=original):
            into.append(Path(path).name)
            return _original(path, data)

        setattr(modelcache, name, recording)


def ddp_straight_then_interrupted(task_name: str, folder: str) -> dict[str, Any]:
    """Train run A to the end (through the model cache), then run B interrupted after epoch 1."""
    with distributed.process_group(backend="gloo"):
        where = _join()
        written: list[str] = []
        _record_writes(written)
        task, build = _task(task_name, Path(folder), where.rank)
        config = RESUME[task_name]
        run = ModelRun("t", {"a": 1}, {}, Path(folder) / "A")

        def train(model):
            return fit(model, task, config, run=run, device="cpu", progress=False)

        straight = load_or_train(run, build, train, name="straight", seed=config.seed)

        def interrupt(row):
            if row["epoch"] == 1:
                raise Interrupted

        torch.manual_seed(config.seed)  # the initial weights of load_or_train's
        try:
            run_b = ModelRun("t", {"a": 1}, {}, Path(folder) / "B")
            fit(build(), task, config, run=run_b, device="cpu", progress=False, on_epoch=interrupt)
        except Interrupted:
            pass
        distributed.barrier()
        return {
            "state": numpy_state(straight.model.state_dict()),
            "history": straight.history,
            "best_epoch": straight.best_epoch,
            "written": written,
        }


def ddp_resume(task_name: str, folder: str) -> dict[str, Any]:
    """Resume run B in new processes (whose global RNGs hold anything)."""
    with distributed.process_group(backend="gloo"):
        where = _join()
        task, build = _task(task_name, Path(folder), where.rank)
        torch.manual_seed(12345 + where.rank)
        result = fit(
            build(),
            task,
            RESUME[task_name],
            run=ModelRun("t", {"a": 1}, {}, Path(folder) / "B"),
            device="cpu",
            progress=False,
        )
        return {"state": numpy_state(result.state), "history": result.history, "best_epoch": result.best_epoch}
