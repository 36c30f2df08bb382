"""One training scaffold for every model: :func:`fit`, :func:`train_one_epoch` and :func:`load_or_train`.

Shaped like torchvision's ``references/``: a task supplies only its *epoch body* -- a
:class:`TrainingTask` that builds the epoch's data loader, computes a batch's loss and scores the
model on the validation split -- and this module does the rest, the same way for every task:

- AdamW/Adam/SGD from one :class:`TrainConfig`, a linear warm-up then a cosine decay per step
  (:class:`LRFactor`), optional gradient clipping;
- seeding: every RNG is seeded with ``config.seed`` before training starts and each epoch's
  sampler gets its own generator seeded with :func:`epoch_seed`; the RNG states are saved with
  every checkpoint, so a resumed run repeats exactly the epochs an uninterrupted run would do;
- a checkpoint after every epoch through :class:`~bloodlib.modelcache.ModelRun` (weights, optimizer,
  scheduler, RNG states, history, best weights so far), resumed automatically;
- validation every ``eval_every`` epochs and after the last; the weights kept are those of the
  epoch the task ranks best (:meth:`TrainingTask.rank`, validation split only);
- a history row per epoch: ``epoch``, ``lr`` (at the epoch's start), ``train_<name>`` for each
  number the loss reports, ``val_<name>`` for each validation metric, ``seconds`` of that epoch;
- DistributedDataParallel when the default process group has more than one process (torchrun,
  see :mod:`bloodlib.distributed`): ``config.batch_size`` is the batch *per process*, the global
  batch ``batch_size x processes`` (stated in the log and in ``run.json``); each process trains
  on its share of the epoch's draws (the task's sampler, :class:`~bloodlib.distributed.ShardedSampler`)
  with its own augmentation RNG (seeded ``seed + rank``); rank 0 alone validates (every process
  keeps the epoch it ranks best), writes checkpoints, histories and the model cache, and the
  checkpoint holds every process's RNG states, so all processes resume from it exactly;
- ``config.precision == "bfloat16"``: the loss under bf16 autocast (bfloat16 matrix products,
  float32 weights and accumulation) on CUDA, and on a CPU that supports bfloat16 natively (on a
  2-core AVX512-BF16 CPU: steps 1.7-1.9x faster, whole trainings ~1.3x, data handling and validation
  being float32 as before; other CPUs train in float32, since emulated bfloat16 is many times
  slower); ``launch`` in ``run.json`` records which one ran;
- on CUDA, ``channels_last`` weights. A single float32 process on the CPU runs none of this: its
  results are those of the plain loop.

:func:`load_or_train` is every task's "from the model cache, or trained and cached" entry and
returns a :class:`TrainedModel`.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bloodlib import distributed
from bloodlib.distributed import World
from bloodlib.modelcache import CorruptModelError, ModelRun, rebuild_damaged, seed_everything
from bloodlib.params import precision_check
from bloodlib.progress import computed, epoch_event, phase, reused_event
from bloodlib.torchutil import effective_precision

OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe of one model.

    Attributes:
        epochs: number of epochs (>= 1).
        batch_size: mini-batch size (>= 1); per process in a distributed run.
        lr: peak learning rate (> 0).
        optimizer: ``"adamw"``, ``"adam"`` or ``"sgd"``.
        momentum: Adam's beta1 or SGD's momentum.
        beta2: Adam's beta2.
        weight_decay: (decoupled for AdamW) weight decay.
        warmup_epochs: linear warm-up from ``lr / 10`` to ``lr`` over this many epochs (0 = none).
        final_lr_fraction: cosine decay from ``lr`` to ``lr * final_lr_fraction`` at the end
            (1.0 = a constant learning rate).
        grad_clip: cap on the gradients' global L2 norm (0 = off).
        eval_every: validate every this many epochs (and after the last).
        seed: seeds initialisation, sampling and augmentation.
        precision: ``"float32"``, or ``"bfloat16"`` autocast where the device supports it natively
            (:func:`bloodlib.torchutil.effective_precision`; float32 elsewhere).
    """

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "adamw"
    momentum: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    warmup_epochs: float = 0.0
    final_lr_fraction: float = 0.01
    grad_clip: float = 0.0
    eval_every: int = 1
    seed: int = 0
    precision: str = "float32"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0 < self.final_lr_fraction <= 1:
            raise ValueError(f"final_lr_fraction must be in (0, 1], got {self.final_lr_fraction!r}")
        if self.warmup_epochs < 0 or self.grad_clip < 0:
            raise ValueError(f"warmup_epochs and grad_clip must be >= 0, got {self.warmup_epochs}, {self.grad_clip}")
        ok, problem = precision_check(self.precision)
        if not ok:
            raise ValueError(problem)


class TrainingTask(Protocol):
    """What a task supplies to :func:`fit`: its data, its loss and its validation."""

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch (sizes the learning-rate schedule)."""

    def train_loader(self, generator: torch.Generator) -> Iterable[Any]:
        """The batches of one epoch; shuffling/sampling draws from ``generator``."""

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss to minimise on ``batch`` and the numbers to log (means over the batch)."""

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Metrics of ``model`` on the validation split (``{}`` if there is none)."""

    def rank(self, metrics: dict[str, float]) -> tuple[float, ...]:
        """How good ``metrics`` are: the epoch with the largest rank is kept."""


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    kind = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return kind(params, lr=config.lr, betas=(config.momentum, config.beta2), weight_decay=config.weight_decay)


class LRFactor:
    """Learning-rate factor per optimizer step: linear warm-up from 0.1, then cosine to ``final``."""

    def __init__(self, warmup_steps: int, total_steps: int, final: float) -> None:
        self.warmup, self.total, self.final = warmup_steps, max(total_steps, 1), final

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return 0.1 + 0.9 * step / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    factor = LRFactor(
        round(config.warmup_epochs * steps_per_epoch), config.epochs * steps_per_epoch, config.final_lr_fraction
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` (1-based) of a run seeded with ``seed``."""
    return seed * 1000 + epoch


def rng_state() -> dict[str, Any]:
    """Python's, NumPy's and torch's RNG states, as plain types and tensors (loadable with ``weights_only``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_one_epoch(
    model: nn.Module,
    task: TrainingTask,
    batches: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    *,
    grad_clip: float = 0.0,
    progress: bool = True,
    desc: str = "train",
) -> dict[str, float]:
    """One pass over ``batches``: loss, backward, clip, step, per-step scheduler.

    Returns the mean over batches of each number ``task.loss`` reports.

    Raises:
        FloatingPointError: the loss became NaN or infinite (names the step and the loss terms).
    """
    model.train()
    totals: dict[str, float] = {}
    steps = 0
    bar = tqdm(batches, desc=desc, leave=False, disable=not progress)
    for batch in bar:
        loss, logs = task.loss(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss is {loss.item()} at step {steps} ({logs})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        for key, value in logs.items():
            totals[key] = totals.get(key, 0.0) + float(value)
        steps += 1
        bar.set_postfix(loss=f"{totals.get('loss', 0.0) / steps:.3f}")
    return {key: value / max(steps, 1) for key, value in totals.items()}


@dataclass
class FitResult:
    """Outcome of :func:`fit`: the kept weights (CPU), their epoch, the history, the training seconds
    and how it was trained (:func:`launch_record`)."""

    state: dict[str, torch.Tensor]
    best_epoch: int
    history: list[dict[str, float]]
    seconds: float
    launch: dict[str, Any] = field(default_factory=dict)


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}


@phase("training")
def fit(
    model: nn.Module,
    task: TrainingTask,
    config: TrainConfig,
    *,
    run: ModelRun | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    desc: str = "train",
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Train ``model`` in place for ``config.epochs`` (see the module docstring).

    Every process of a distributed run calls it alike (torchrun; :mod:`bloodlib.distributed`).

    Args:
        run: where to checkpoint after every epoch; training resumes from its checkpoint.
        device: default this process's GPU when CUDA is available (the ``paper`` profile's), else the CPU.
        progress: progress bars (on rank 0 only).
        on_epoch: called (on every process) with each epoch's history row after its checkpoint is written.

    Each epoch is also sent to the report runner, when it runs the notebook, as a line with the epoch,
    the losses and metrics and the time left (:func:`bloodlib.progress.epoch_event`); its time counts
    as the ``training`` phase.

    Raises:
        ValueError: the checkpoint was written by a run with another number of processes.
    """
    where = distributed.world()
    device = torch.device(device or distributed.default_device(where))
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, task.steps_per_epoch)
    history: list[dict[str, float]] = []
    best: dict[str, Any] | None = None
    done, seconds = 0, 0.0
    saved = _load_checkpoint(run, where)
    if saved is None:
        seed_everything(config.seed + where.rank)
    else:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng_per_rank"][where.rank] if where.distributed else saved["rng"])
        done, history, best, seconds = saved["epoch"], saved["history"], saved["best"], saved["seconds"]
    launch = launch_record(config, where, device)
    train_model, train_task = _launched(model, task, where, device, autocast=launch["mixed_precision"] == "bf16")
    progress = progress and where.is_main
    if progress and (where.distributed or device.type == "cuda"):
        tqdm.write(f"{desc}: {describe_launch(launch)}")
    epochs = tqdm(
        range(done + 1, config.epochs + 1), desc=desc, disable=not progress, initial=done, total=config.epochs
    )
    for epoch in epochs:
        started = time.perf_counter()
        row: dict[str, float] = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        generator = torch.Generator().manual_seed(epoch_seed(config.seed, epoch))
        logs = train_one_epoch(
            train_model,
            train_task,
            task.train_loader(generator),
            optimizer,
            scheduler,
            grad_clip=config.grad_clip,
            progress=progress,
            desc=f"{desc} epoch {epoch}/{config.epochs}",
        )
        row.update({f"train_{k}": v for k, v in distributed.mean(logs).items()})
        distributed.broadcast_buffers(model)  # every process keeps rank 0's weights
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            metrics = distributed.from_main(lambda: task.validate(model))
            row.update({f"val_{k}": v for k, v in metrics.items()})
            rank = list(task.rank(metrics)) if metrics else [float(epoch)]  # no validation: the last epoch
            if best is None or rank > best["rank"]:
                best = {"rank": rank, "epoch": epoch, "state": _cpu_copy(model)}
        row["seconds"] = time.perf_counter() - started
        seconds += row["seconds"]
        history.append(row)
        epochs.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k in ("train_loss", "val_mAP", "val_bacc")})
        if run is not None:
            _save_checkpoint(
                run,
                where,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng_state(),
                    "epoch": epoch,
                    "history": history,
                    "best": best,
                    "seconds": seconds,
                    "config": asdict(config),
                    "world_size": where.size,
                },
            )
        if where.is_main:  # a line for the report runner's terminal (nothing outside it)
            epoch_event(
                desc=desc,
                epoch=epoch,
                epochs=config.epochs,
                seconds=row["seconds"],
                mean_seconds=seconds / len(history),
                metrics={k: v for k, v in row.items() if k.startswith(("train_", "val_"))},
            )
        if on_epoch is not None:
            on_epoch(row)
    if best is None:
        raise RuntimeError(f"{desc}: no epoch was trained")
    return FitResult(
        state=best["state"], best_epoch=int(best["epoch"]), history=history, seconds=seconds, launch=launch
    )


# -- distributed (DDP) and CUDA additions to fit: identities for a single process on the CPU --


def launch_record(config: TrainConfig, where: World, device: torch.device) -> dict[str, Any]:
    """How :func:`fit` trains: processes, batch per process and global batch, device, precision
    (stored in ``run.json`` as ``launch``)."""
    cuda = device.type == "cuda"
    return {
        "processes": where.size,
        "batch_per_process": config.batch_size,
        "global_batch": config.batch_size * where.size,
        "device": device.type,
        "mixed_precision": "bf16" if _autocast(config, device) else "none",
        "channels_last": cuda,
    }


def _autocast(config: TrainConfig, device: torch.device) -> bool:
    """Whether :func:`fit` computes the loss under bf16 autocast on ``device``."""
    if config.precision != "bfloat16":
        return False
    return device.type == "cuda" or effective_precision(config.precision) == "bfloat16"


def describe_launch(launch: dict[str, Any]) -> str:
    """One line for the log, e.g. ``DDP over 4 processes: batch 8 per process = global batch 32 (cuda, bf16 autocast, channels_last)``."""
    how = [launch["device"]] + (["bf16 autocast"] if launch["mixed_precision"] == "bf16" else [])
    how += ["channels_last"] if launch["channels_last"] else []
    if launch["processes"] == 1:
        return f"1 process, batch {launch['batch_per_process']} ({', '.join(how)})"
    return (
        f"DDP over {launch['processes']} processes: batch {launch['batch_per_process']} per process = "
        f"global batch {launch['global_batch']} ({', '.join(how)})"
    )


class _LaunchedTask:
    """``task`` as :func:`fit` trains it in a distributed, CUDA or bfloat16 run: its loss under bf16
    autocast on ``autocast`` (a device type, or None), and not finite on every process when it is not
    finite on one (so that all stop together)."""

    def __init__(self, task: TrainingTask, *, autocast: str | None) -> None:
        self.task, self.autocast = task, autocast

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        if self.autocast:
            with torch.autocast(self.autocast, dtype=torch.bfloat16):
                loss, logs = self.task.loss(model, batch)
        else:
            loss, logs = self.task.loss(model, batch)
        if distributed.world().distributed and not distributed.all_finite(loss):
            loss = loss.detach() + math.nan
        return loss, logs


def _launched(
    model: nn.Module, task: TrainingTask, where: World, device: torch.device, *, autocast: bool
) -> tuple[nn.Module, TrainingTask]:
    """What :func:`train_one_epoch` trains and whose loss it calls: ``model`` and ``task`` for a single
    float32 process on the CPU; DistributedDataParallel and :class:`_LaunchedTask` otherwise."""
    if not where.distributed and device.type != "cuda" and not autocast:
        return model, task
    if where.distributed:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model)
    return model, _LaunchedTask(task, autocast=device.type if autocast else None)


def _load_checkpoint(run: ModelRun | None, where: World) -> dict[str, Any] | None:
    """The checkpoint every process resumes from: read by rank 0 and sent to all (a damaged one is
    warned about, set aside, and training starts over)."""
    if run is None:
        return None
    saved = distributed.from_main(run.resume_checkpoint)
    if saved is not None and saved.get("world_size", 1) != where.size:
        raise ValueError(
            f"{run.checkpoint_path} was written by a run of {saved.get('world_size', 1)} process(es); "
            f"resume it with as many (this run has {where.size}) or remove it to start again"
        )
    return saved


def _save_checkpoint(run: ModelRun, where: World, state: dict[str, Any]) -> None:
    """Rank 0 writes ``state``; distributed, it also holds every process's RNG states (``rng_per_rank``)."""
    if where.distributed:
        state = {**state, "rng_per_rank": distributed.gather(state["rng"])}
    if where.is_main:
        run.save_checkpoint(state)


@dataclass
class TrainedModel:
    """A trained model (eval mode, CPU) and how it got there.

    Attributes:
        name: the model's display name.
        model: the network with the kept weights.
        history: one row per epoch (see the module docstring).
        best_epoch: the epoch whose weights were kept.
        train_seconds: training time of the run that made the weights (also when loaded from the cache).
        cached: loaded from the model cache instead of trained now.
        run: the cache entry.
        launch: how the weights were trained (:func:`launch_record`; ``{}`` for runs cached before it
            was recorded).
    """

    name: str
    model: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    train_seconds: float
    cached: bool
    run: ModelRun
    launch: dict[str, Any] = field(default_factory=dict)

    @property
    def precision(self) -> str:
        """The arithmetic the weights were trained in: ``"bfloat16"`` (autocast) or ``"float32"``."""
        return "bfloat16" if self.launch.get("mixed_precision") == "bf16" else "float32"

    @property
    def key(self) -> str:
        return self.run.key

    @property
    def best_row(self) -> dict[str, float]:
        """The history row of the kept epoch."""
        return next(row for row in self.history if row["epoch"] == self.best_epoch)

    @classmethod
    def from_cache(cls, run: ModelRun, model: nn.Module, *, name: str) -> TrainedModel:
        """``model`` with the weights of the finished ``run``.

        Raises:
            bloodlib.modelcache.ModelNotTrainedError: ``run`` has not finished training.
        """
        weights, info = run.load_final()
        model.load_state_dict(weights)
        model.cpu().eval()
        history, best_epoch, seconds = info["history"], int(info["best_epoch"]), float(info["train_seconds"])
        return cls(name, model, history, best_epoch, seconds, True, run, dict(info.get("launch") or {}))


def networks(trained: Mapping[str, TrainedModel]) -> dict[str, nn.Module]:
    """Name -> the network of each of ``trained``."""
    return {name: t.model for name, t in trained.items()}


def histories(trained: Mapping[str, TrainedModel]) -> dict[str, list[dict[str, float]]]:
    """Name -> the per-epoch history of each of ``trained``."""
    return {name: t.history for name, t in trained.items()}


def load_or_train(
    run: ModelRun,
    build: Callable[[], nn.Module],
    train: Callable[[nn.Module], FitResult],
    *,
    name: str,
    seed: int,
) -> TrainedModel:
    """The model of ``run`` from the cache, or built with ``seed`` and trained by ``train`` (which
    calls :func:`fit` with ``run=run``), then cached.

    Training holds the key's lock (:meth:`ModelRun.lock`): a second process waits, then loads the
    model the first one cached. In a distributed run every process calls it; rank 0 decides whether
    the cache holds the model, alone locks and writes it (the models folder must be shared by all
    machines of a multi-node run).

    Raises:
        bloodlib.modelcache.CorruptModelError: the cache entry is damaged or unsafe (names the file);
            under ``bloodlib train`` (:func:`bloodlib.modelcache.rebuilding_damaged`) it is instead
            moved aside with a warning and trained again.
    """
    if distributed.from_main(run.is_complete):  # reading needs no lock (a read-only models folder works)
        try:
            return _reused(TrainedModel.from_cache(run, build(), name=name))
        except CorruptModelError:
            if not rebuild_damaged():
                raise
    with run.lock() if distributed.world().is_main else contextlib.nullcontext():
        return _load_or_train_locked(run, build, train, name=name, seed=seed)


def _reused(trained: TrainedModel) -> TrainedModel:
    """``trained``, taken from the cache, reported as reused training (:func:`bloodlib.progress.reused_event`)."""
    reused_event(phase="training", seconds=trained.train_seconds, what=trained.name, item=trained.run.folder)
    return trained


def _load_or_train_locked(
    run: ModelRun, build: Callable[[], nn.Module], train: Callable[[nn.Module], FitResult], *, name: str, seed: int
) -> TrainedModel:
    import warnings

    if distributed.from_main(run.is_complete):  # finished by another process while this one waited, or damaged
        try:
            return _reused(TrainedModel.from_cache(run, build(), name=name))
        except CorruptModelError as err:
            if not rebuild_damaged():
                raise
            if distributed.world().is_main:
                aside = run.set_aside()
                warnings.warn(f"{err.reason}; the entry was moved to {aside}, training {name} again", stacklevel=3)
            distributed.barrier()
    seed_everything(seed)
    model = build()
    result = train(model)
    if distributed.world().is_main:
        run.save_final(
            result.state,
            history=result.history,
            best_epoch=result.best_epoch,
            train_seconds=result.seconds,
            launch=result.launch,
        )
    distributed.barrier()  # the cache is complete when any process returns
    computed(run.folder)  # loading it again in this process is not reused work
    model.load_state_dict(result.state)
    model.cpu().eval()
    return TrainedModel(name, model, result.history, result.best_epoch, result.seconds, False, run, result.launch)
