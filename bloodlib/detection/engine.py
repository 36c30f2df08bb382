"""Training and inference loops: ``train_one_epoch``, ``predict``, ``evaluate`` and ``fit``.

``fit`` checkpoints after every epoch through :class:`bloodlib.modelcache.ModelRun` and
resumes from the last checkpoint; each epoch re-seeds every RNG from ``(seed, epoch)``, so
a resumed run repeats exactly the epochs an uninterrupted run would have done. The model
kept is the one with the best validation mAP@0.5 (evaluated every ``eval_every`` epochs and
after the last): selection uses the validation split only.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from bloodlib.detection.data import Annotation, BCCDDetection, collate, float_image
from bloodlib.detection.metrics import Prediction, average_precision
from bloodlib.modelcache import ModelRun, seed_everything

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """How to train one detector.

    ``lr`` is the peak learning rate, reached after ``warmup_epochs`` of linear warm-up from
    ``lr / 10``; ``"cosine"`` then decays it to ``lr / 100`` at the end, ``"constant"`` keeps it.
    ``momentum`` is Adam's beta1 (beta2 is ``beta2``) or SGD's momentum. ``grad_clip`` (0 = off)
    caps the gradients' global L2 norm.
    """

    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    momentum: float
    beta2: float
    weight_decay: float
    schedule: str
    warmup_epochs: float
    grad_clip: float
    eval_every: int
    seed: int
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError(f"epochs, batch_size and eval_every must be >= 1: {self}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    kind = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return kind(params, lr=cfg.lr, betas=(cfg.momentum, cfg.beta2), weight_decay=cfg.weight_decay)


class LRFactor:
    """Learning-rate factor per optimizer step: linear warm-up, then constant or cosine."""

    def __init__(self, schedule: str, warmup_steps: int, total_steps: int) -> None:
        self.schedule, self.warmup, self.total = schedule, warmup_steps, max(total_steps, 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return 0.1 + 0.9 * step / self.warmup
        if self.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    factor = LRFactor(cfg.schedule, round(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_one_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    *,
    grad_clip: float = 0.0,
    progress: bool = True,
    desc: str = "train",
) -> dict[str, float]:
    """One pass over ``loader`` (batches of ``(images, targets)``); per-step scheduler.

    Returns the mean ``loss``, ``bbox_regression`` and ``classification`` losses over batches.

    Raises:
        FloatingPointError: a loss became NaN or infinite (names the step).
    """
    model.train()
    totals: dict[str, float] = {}
    steps = 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress)
    for images, targets in bar:
        targets = [{"boxes": t["boxes"].as_subclass(torch.Tensor), "labels": t["labels"]} for t in targets]
        images = [img.as_subclass(torch.Tensor) for img in images]
        losses = model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{desc}: loss is {loss.item()} at step {steps} ({ {k: v.item() for k, v in losses.items()} })"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for key, value in {"loss": loss, **losses}.items():
            totals[key] = totals.get(key, 0.0) + float(value.detach())
        steps += 1
        bar.set_postfix(loss=f"{totals['loss'] / steps:.3f}")
    return {key: value / max(steps, 1) for key, value in totals.items()}


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    images: Sequence[torch.Tensor] | Sequence[Annotation],
    *,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "predict",
) -> list[Prediction]:
    """Detections for each image: float ``(3, H, W)`` tensors in [0, 1], or annotations (read from disk).

    Returns torchvision's dicts (``boxes`` (N, 4) in the image's pixels, ``scores``, ``labels``).
    """
    model.eval()
    out: list[Prediction] = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, leave=False, disable=not progress):
        batch = [float_image(x) for x in images[start : start + batch_size]]
        out += [{k: v.detach() for k, v in d.items()} for d in model(batch)]
    return out


def evaluate(
    model: torch.nn.Module, annotations: Sequence[Annotation], *, batch_size: int = 8, progress: bool = False
) -> dict[str, float]:
    """AP@0.5 per class and mAP of ``model`` on ``annotations`` (see :func:`~bloodlib.detection.metrics.average_precision`)."""
    return average_precision(predict(model, annotations, batch_size=batch_size, progress=progress), annotations)


@dataclass
class FitResult:
    """Outcome of :func:`fit`: the selected weights, their epoch and the per-epoch history."""

    state: dict[str, torch.Tensor]
    best_epoch: int
    history: list[dict[str, float]]
    seconds: float


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def fit(
    model: torch.nn.Module,
    train_set: BCCDDetection,
    val_annotations: Sequence[Annotation],
    cfg: TrainConfig,
    *,
    run: ModelRun | None = None,
    progress: bool = True,
    name: str = "ssd",
    stop_after: int | None = None,
    log: Callable[[str], None] | None = None,
) -> FitResult:
    """Train ``model`` for ``cfg.epochs``, checkpointing each epoch into ``run`` and resuming from it.

    ``stop_after`` (tests) stops after that many epochs of this call, as an interruption would.
    Returns the weights with the best validation mAP (the last epoch's if ``val_annotations``
    is empty).
    """
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = max(1, len(train_set) // cfg.batch_size)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    history: list[dict[str, float]] = []
    best: dict[str, Any] | None = None
    start, seconds = 0, 0.0
    checkpoint = run.load_checkpoint() if run is not None else None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        start, history, best = checkpoint["epoch"], checkpoint["history"], checkpoint["best"]
        seconds = checkpoint.get("seconds", 0.0)
        if log:
            log(f"{name}: resuming after epoch {start}")
    epochs = tqdm(range(start, cfg.epochs), desc=name, disable=not progress, initial=start, total=cfg.epochs)
    for done, epoch in enumerate(epochs):
        if stop_after is not None and done >= stop_after:
            break
        began = time.perf_counter()
        seed_everything(_epoch_seed(cfg.seed, epoch))
        loader = DataLoader(
            train_set,
            batch_size=cfg.batch_size,
            shuffle=True,
            drop_last=len(train_set) > cfg.batch_size,
            collate_fn=collate,
            num_workers=cfg.num_workers,
        )
        record: dict[str, float] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        record.update(
            train_one_epoch(
                model,
                loader,
                optimizer,
                scheduler,
                grad_clip=cfg.grad_clip,
                progress=progress,
                desc=f"{name} epoch {epoch + 1}",
            )
        )
        last = epoch + 1 == cfg.epochs
        if val_annotations and ((epoch + 1) % cfg.eval_every == 0 or last):
            ap = evaluate(model, val_annotations)
            record.update({f"val_{k}": v for k, v in ap.items()})
            score = -1.0 if math.isnan(ap["mAP"]) else ap["mAP"]
            if best is None or score > best["score"]:
                best = {"score": score, "epoch": epoch + 1, "state": copy.deepcopy(model.state_dict())}
        elif not val_annotations and last:
            best = {"score": math.nan, "epoch": epoch + 1, "state": copy.deepcopy(model.state_dict())}
        seconds += time.perf_counter() - began
        record["seconds"] = seconds
        history.append(record)
        epochs.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k in ("loss", "val_mAP")})
        if log:
            log(f"{name}: " + ", ".join(f"{k}={v:.4g}" for k, v in record.items()))
        if run is not None:
            run.save_checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "best": best,
                    "seconds": seconds,
                    "config": asdict(cfg),
                }
            )
    if best is None:  # stopped before any evaluation (only with stop_after)
        best = {"score": math.nan, "epoch": len(history), "state": copy.deepcopy(model.state_dict())}
    return FitResult(state=best["state"], best_epoch=best["epoch"], history=history, seconds=seconds)
