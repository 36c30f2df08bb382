"""DistributedDataParallel in the training scaffold, on the CPU: Gloo, 2 processes started by torchrun's
launcher, tiny synthetic data (the slow tests); sharding, launch and single-process rules (the fast ones)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.utils.data import WeightedRandomSampler

from bloodlib import distributed
from bloodlib.cli import main
from bloodlib.distributed import ShardedSampler, World, launched_world, torchrun_args
from bloodlib.modelcache import ModelRun
from bloodlib.training import TrainConfig, describe_launch, fit, train_one_epoch
from tests.distributed_helpers import (
    EQUAL_STEPS,
    Interrupted,
    ddp_equal_steps,
    ddp_resume,
    ddp_straight_then_interrupted,
    deterministic_classifier_task,
    run_on_processes,
    tiny_convnet,
)
from tests.paths import ROOT
from tests.training_helpers import classifier_task, detection_task

pytestmark = pytest.mark.usefixtures("one_thread")


def _as_rank(monkeypatch: pytest.MonkeyPatch, rank: int, size: int) -> None:
    """Make the tasks see process ``rank`` of ``size`` (their loaders and step counts ask :func:`world`)."""
    monkeypatch.setattr(distributed, "world", lambda: World(rank=rank, size=size))


# -- sharding: the union over processes is the single-process epoch --


def test_sharded_draws_are_disjoint_equal_and_together_the_single_process_draws():
    def draws():
        return WeightedRandomSampler(torch.ones(10), 11, generator=torch.Generator().manual_seed(7))

    shards = [list(ShardedSampler(draws(), rank=rank, size=3)) for rank in range(3)]
    single = list(draws())
    assert [len(s) for s in shards] == [3, 3, 3]  # 11 draws: the last 2 are left out
    assert [shards[k % 3][k // 3] for k in range(9)] == single[:9]


def test_sharded_sampler_rejects_more_processes_than_draws():
    with pytest.raises(ValueError, match="fewer than the 3 processes"):
        ShardedSampler(range(2), rank=0, size=3)
    with pytest.raises(ValueError, match="rank"):
        ShardedSampler(range(8), rank=3, size=3)


def test_detection_steps_of_two_processes_see_the_single_process_batches(tmp_path, monkeypatch):
    task = detection_task(tmp_path)  # 4 training images, batch 2
    single = [[t["image_id"] for t in targets] for _, targets in task.train_loader(torch.Generator().manual_seed(5))]
    task.batch_size = 1
    per_rank = []
    for rank in range(2):
        _as_rank(monkeypatch, rank, 2)
        assert task.steps_per_epoch == 2
        loader = task.train_loader(torch.Generator().manual_seed(5))
        per_rank.append([[t["image_id"] for t in targets] for _, targets in loader])
    assert len(single) == 2 and all(len(batch) == 2 for batch in single)
    assert [sorted(a + b) for a, b in zip(*per_rank)] == [sorted(batch) for batch in single]


def test_classifier_steps_of_two_processes_see_the_single_process_batches(monkeypatch):
    task = deterministic_classifier_task(batch_size=8)  # 32 class-balanced draws
    single = [inputs for inputs, _ in task.train_loader(torch.Generator().manual_seed(5))]
    task.batch_size = 4
    per_rank = []
    for rank in range(2):
        _as_rank(monkeypatch, rank, 2)
        assert task.steps_per_epoch == 4
        per_rank.append([inputs for inputs, _ in task.train_loader(torch.Generator().manual_seed(5))])
    assert len(single) == 4
    for batch, a, b in zip(single, *per_rank):  # rank r holds draws r, r + 2, ... of the global batch
        torch.testing.assert_close(torch.stack([a, b], 1).flatten(0, 1), batch, rtol=0, atol=0)


def test_a_classifier_shard_smaller_than_a_batch_is_an_error(monkeypatch):
    task = classifier_task(samples_per_epoch=32)  # batch 16
    _as_rank(monkeypatch, 0, 4)
    with pytest.raises(ValueError, match="shared by 4 processes is less than batch_size"):
        task.steps_per_epoch  # noqa: B018


# -- launching --


def test_torchrun_environment_is_parsed_and_checked():
    assert launched_world({}) == World()
    assert launched_world({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    with pytest.raises(ValueError, match="integers"):
        launched_world({"RANK": "a", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="rank < size"):
        launched_world({"RANK": "2", "WORLD_SIZE": "2"})


def test_a_single_process_initialises_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.process_group() as where:
        assert where == World() and not dist.is_initialized()
    result = fit(torch.nn.Linear(2, 1), _OneBatch(), TrainConfig(1, 2, 0.1), device="cpu", progress=False)
    assert not dist.is_initialized()
    assert result.launch == {
        "processes": 1,
        "batch_per_process": 2,
        "global_batch": 2,
        "device": "cpu",
        "mixed_precision": "none",
        "channels_last": False,
    }
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc-per-node 1: still one process
    with distributed.process_group() as where:
        assert not where.distributed and not dist.is_initialized()


def test_nproc_runs_bloodlib_under_torchruns_launcher(monkeypatch, capsys):
    args = torchrun_args(4, ["train", "wbc", "--profile", "paper"])
    assert args == ["--standalone", "--nproc-per-node", "4", "-m", "bloodlib", "train", "wbc", "--profile", "paper"]
    from torch.distributed.run import parse_args

    parsed = parse_args(args)
    assert (parsed.nproc_per_node, parsed.module, parsed.training_script) == ("4", True, "bloodlib")
    assert main(["train", "detection", "--nproc", "0"]) == 2
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "detection", "--nproc", "2"]) == 2
    assert "leave out --nproc" in capsys.readouterr().err


def test_the_launch_is_stated_with_the_global_batch():
    launch = {"processes": 4, "batch_per_process": 8, "global_batch": 32, "device": "cuda"}
    line = describe_launch({**launch, "mixed_precision": "bf16", "channels_last": True})
    assert line == "DDP over 4 processes: batch 8 per process = global batch 32 (cuda, bf16 autocast, channels_last)"


def test_a_loss_that_is_not_finite_on_another_process_stops_this_one_too(monkeypatch):
    from bloodlib.training import _LaunchedTask

    _as_rank(monkeypatch, 0, 2)
    monkeypatch.setattr(distributed, "all_finite", lambda loss: False)  # another process's loss was NaN
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    task = _LaunchedTask(_OneBatch(), autocast=None)
    with pytest.raises(FloatingPointError, match="loss is nan at step 0"):
        train_one_epoch(model, task, task.train_loader(None), optimizer, scheduler, progress=False)


def test_a_checkpoint_resumes_only_with_as_many_processes(tmp_path):
    run = ModelRun("t", {}, {}, tmp_path)

    def stop(row):
        raise Interrupted

    with pytest.raises(Interrupted):
        fit(torch.nn.Linear(2, 1), _OneBatch(), TrainConfig(2, 2, 0.1), run=run, progress=False, on_epoch=stop)
    saved = run.load_checkpoint()
    assert saved["world_size"] == 1
    run.save_checkpoint({**saved, "world_size": 2})
    with pytest.raises(ValueError, match="written by a run of 2 process"):
        fit(torch.nn.Linear(2, 1), _OneBatch(), TrainConfig(2, 2, 0.1), run=run, progress=False)


class _OneBatch:
    steps_per_epoch = 1

    def train_loader(self, generator):
        return [(torch.ones(2, 2), torch.zeros(2, 1))]

    def loss(self, model, batch):
        loss = ((model(batch[0]) - batch[1]) ** 2).mean()
        return loss, {"loss": float(loss.detach())}

    def validate(self, model):
        return {}

    def rank(self, metrics):
        return ()


# -- two processes (Gloo) --


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_one_ddp_epoch_equals_the_single_process_epoch_on_the_global_batch():
    """2 processes x batch 4 vs one process x batch 8, same draws; a model without batch norm (its
    statistics would be per process), deterministic inputs (augmentation RNGs are per process)."""
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    by_rank = run_on_processes(ddp_equal_steps)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    task = deterministic_classifier_task(2 * EQUAL_STEPS.batch_size)
    torch.manual_seed(0)
    single = fit(tiny_convnet(), task, EQUAL_STEPS, device="cpu", progress=False)

    assert by_rank[0]["steps"] == task.steps_per_epoch == 4
    assert by_rank[0]["launch"]["global_batch"] == 8 and by_rank[0]["launch"]["processes"] == 2
    torch.manual_seed(0)
    initial = tiny_convnet().state_dict()
    for key, value in single.state.items():
        assert not torch.equal(value, initial[key])  # it trained
        for rank in (0, 1):
            np.testing.assert_allclose(by_rank[rank]["state"][key], value.numpy(), rtol=1e-5, atol=1e-6)
    ddp_row, single_row = by_rank[0]["history"][0], single.history[0]
    assert ddp_row["train_loss"] == pytest.approx(single_row["train_loss"], rel=1e-5)
    assert ddp_row["val_loss"] == pytest.approx(single_row["val_loss"], rel=1e-5)
    assert {k: v for k, v in by_rank[1]["history"][0].items() if k != "seconds"} == {
        k: v for k, v in ddp_row.items() if k != "seconds"
    }


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("task_name", ["detection", "classification"])
def test_an_interrupted_ddp_run_resumes_exactly_and_only_rank_0_writes(tmp_path, task_name):
    first = run_on_processes(ddp_straight_then_interrupted, task_name, str(tmp_path))
    resumed = run_on_processes(ddp_resume, task_name, str(tmp_path))

    assert first[1]["written"] == []
    assert sorted(set(first[0]["written"])) == ["checkpoint.pt", "final.pt", "run.json"]
    assert first[0]["written"].count("checkpoint.pt") == 3  # run A: epochs 1 and 2; run B: epoch 1
    info = json.loads((tmp_path / "A" / "t" / ModelRun("t", {"a": 1}, {}).key / "run.json").read_text())
    assert info["launch"]["processes"] == 2
    assert info["launch"]["global_batch"] == 2 * info["launch"]["batch_per_process"]

    assert first[0]["history"][1]["train_loss"] != first[0]["history"][0]["train_loss"]
    for rank in (0, 1):  # every process resumes to what it held in the uninterrupted run: rank 0's weights
        straight = first[rank]
        assert [row["epoch"] for row in resumed[rank]["history"]] == [1, 2]
        assert resumed[rank]["best_epoch"] == straight["best_epoch"] == first[0]["best_epoch"]
        assert resumed[rank]["history"][1]["train_loss"] == pytest.approx(
            straight["history"][1]["train_loss"], rel=1e-6, abs=1e-7
        )
        for key, value in straight["state"].items():
            np.testing.assert_allclose(resumed[rank]["state"][key], value, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(value, first[0]["state"][key])


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_bloodlib_train_nproc_2_trains_the_quick_detectors_into_the_cache_once(data_root, tmp_path):
    """The command end to end: torchrun's launcher, 2 Gloo processes, the quick profile's BCCD images."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.update(BLOODLIB_MODELS=str(tmp_path / "models"), BLOODLIB_CACHE=str(tmp_path / "cache"))
    args = [sys.executable, "-m", "bloodlib", "train", "detection", "--profile", "quick", "--nproc", "2"]
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]

    lines = done.stdout.splitlines()  # rank 0's alone
    assert lines.count("VGG16-SSD300: DDP over 2 processes: batch 4 per process = global batch 8 (cpu)") == 1
    assert sum(line.startswith("AlexNet-SSD300: trained in") for line in lines) == 1
    infos = [json.loads(path.read_text()) for path in sorted((tmp_path / "models").glob("detection/*/*/run.json"))]
    assert [info["task"] for info in infos] == ["detection/ssd_alexnet", "detection/ssd_vgg16"]
    assert all(info["launch"]["processes"] == 2 and info["launch"]["global_batch"] == 8 for info in infos)


def test_the_launcher_leaves_this_processs_signal_handlers_as_they_were():
    """torchrun's launcher, run in-process, installs its own SIGINT/SIGTERM handlers; a report or
    test run later in the same process must still get KeyboardInterrupt on Ctrl-C."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with distributed.kept_signal_handlers():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
