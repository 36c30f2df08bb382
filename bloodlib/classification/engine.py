"""Training with class-balanced on-the-fly augmentation, per-epoch checkpoints, and prediction.

An *epoch* here is ``samples_per_epoch`` draws from the training canvases with replacement,
each class equally likely (:func:`balanced_weights`): dataset2's TRAIN holds ~10k augmented
copies of 277 source images, so a full pass mostly repeats itself, and the budget is better
spent on more, differently augmented draws. Every epoch ends with a validation pass on the
grouped validation split; the epoch with the best validation balanced accuracy (ties: lower loss)
gives the final weights -- *balanced* accuracy, because the validation sources are as
unbalanced as BCCD (few monocyte and lymphocyte sources). Nothing here looks at a test set.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from tqdm.auto import tqdm

from bloodlib.classification.canvases import CanvasSet
from bloodlib.classification.crops import CropPolicy
from bloodlib.classification.models import split_outputs
from bloodlib.classification.transforms import AugmentConfig, eval_transform, train_transform
from bloodlib.modelcache import ModelRun


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation recipe of one model.

    Attributes:
        epochs: number of epochs (>= 1).
        samples_per_epoch: class-balanced draws per epoch (>= batch_size; a last incomplete batch is
            dropped, a batch of one would break batch norm).
        batch_size: mini-batch size.
        lr: Adam(W) learning rate at the start.
        final_lr_fraction: cosine decay to ``lr * final_lr_fraction`` (1.0 = constant, the paper).
        weight_decay: AdamW decoupled weight decay (0 = Adam).
        label_smoothing: cross-entropy label smoothing.
        aux_loss_weight: weight of Inception-v3's auxiliary loss.
        seed: seeds sampling and augmentation.
    """

    epochs: int
    samples_per_epoch: int
    batch_size: int
    lr: float
    final_lr_fraction: float
    weight_decay: float
    label_smoothing: float
    aux_loss_weight: float
    seed: int

    def __post_init__(self) -> None:
        for name in ("epochs", "samples_per_epoch", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.samples_per_epoch < self.batch_size:
            raise ValueError(f"samples_per_epoch ({self.samples_per_epoch}) must be >= batch_size ({self.batch_size})")
        if self.lr <= 0 or not 0 < self.final_lr_fraction <= 1:
            raise ValueError(f"need lr > 0 and 0 < final_lr_fraction <= 1, got {self.lr}, {self.final_lr_fraction}")


class AugmentedCanvases(Dataset):
    """``(input (3, h, w) float, label)`` pairs: ``transform`` applied to each canvas on access."""

    def __init__(self, data: CanvasSet, transform: Any) -> None:
        self.canvases, self.labels, self.transform = data.canvases, data.labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.canvases[i]), self.labels[i]


def balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Sampling weight per item, ``1 / count(its class)``: every class is drawn equally often."""
    counts = torch.bincount(labels)
    if (counts[labels] == 0).any():
        raise ValueError("labels contain a class with zero count")
    return 1.0 / counts[labels].double()


def _cosine(total_steps: int, final_fraction: float):
    def factor(step: int) -> float:
        progress = min(1.0, step / max(1, total_steps))
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _loss(outputs: Any, targets: torch.Tensor, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    logits, aux = split_outputs(outputs)
    loss = F.cross_entropy(logits, targets, label_smoothing=config.label_smoothing)
    if aux is not None:
        loss = loss + config.aux_loss_weight * F.cross_entropy(aux, targets, label_smoothing=config.label_smoothing)
    return loss, logits


def symmetry_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The views test-time augmentation averages over, each ``(B, 3, h, w)`` like ``x``.

    A blood cell has no orientation: a square input gives its 8 dihedral views (rotations by
    0/90/180/270 degrees and their mirror images), a non-square one the 4 that keep its shape
    (identity, both mirror images, 180 degrees).
    """
    if x.shape[-1] == x.shape[-2]:
        rotations = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
        return rotations + [torch.flip(r, dims=(-1,)) for r in rotations]
    return [x, torch.flip(x, dims=(-1,)), torch.flip(x, dims=(-2,)), torch.flip(x, dims=(-2, -1))]


def _forward(model: nn.Module, x: torch.Tensor, tta: bool) -> torch.Tensor:
    if not tta:
        return model(x).float()
    probs = torch.stack([F.softmax(model(v).float(), dim=1) for v in symmetry_views(x)]).mean(0)
    return probs.clamp_min(1e-12).log()


@torch.no_grad()
def predict_logits(
    model: nn.Module, canvases: torch.Tensor, input_size: tuple[int, int], batch_size: int = 128, *, tta: bool = False
) -> torch.Tensor:
    """``(N, 3, Hc, Wc)`` uint8 canvases -> ``(N, C)`` float logits on the CPU (eval mode, centre
    crop; computed on the model's device). With ``tta`` the logits are the log of the class
    probabilities averaged over :func:`symmetry_views` (test-time augmentation)."""
    model.eval()
    device = next(model.parameters()).device
    transform = eval_transform(input_size)
    outs = [
        _forward(model, transform(canvases[i : i + batch_size]).to(device), tta).cpu()
        for i in range(0, len(canvases), batch_size)
    ]
    return torch.cat(outs) if outs else torch.zeros((0, 0))


def evaluate(model: nn.Module, data: CanvasSet, input_size: tuple[int, int], batch_size: int = 128) -> dict[str, float]:
    """``{"loss", "acc", "bacc"}`` of ``model`` on ``data``: cross-entropy (no smoothing),
    accuracy, balanced accuracy (mean per-class recall over the classes present)."""
    logits = predict_logits(model, data.canvases, input_size, batch_size)
    labels = data.labels
    hits = (logits.argmax(1) == labels).double()
    recalls = [hits[labels == c].mean() for c in labels.unique()]
    return {
        "loss": float(F.cross_entropy(logits, labels)),
        "acc": float(hits.mean()),
        "bacc": float(torch.stack(recalls).mean()),
    }


def fit(
    model: nn.Module,
    train: CanvasSet,
    val: CanvasSet,
    *,
    config: TrainConfig,
    augment: AugmentConfig,
    input_size: tuple[int, int],
    run: ModelRun | None = None,
    progress: bool = True,
    desc: str = "train",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place; returns ``{"history", "best_epoch", "best_state", "train_seconds"}``.

    With ``run``, the state is checkpointed after every epoch but the last (the caller stores
    the final weights with :meth:`ModelRun.save_final`), and an interrupted run resumes from its
    last checkpoint with the same result as an uninterrupted one. ``on_epoch`` is called with
    each epoch's history row after its checkpoint is written. ``device`` defaults to CUDA when
    available (the ``paper`` profile's GPU), else the CPU; ``best_state`` is always on the CPU.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = config.samples_per_epoch // config.batch_size  # incomplete last batches are dropped
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _cosine(config.epochs * steps_per_epoch, config.final_lr_fraction)
    )
    state: dict[str, Any] = {"epoch": 0, "history": [], "best": None, "best_state": None, "seconds": 0.0}
    saved = run.load_checkpoint() if run is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        state = saved["state"]
    dataset = AugmentedCanvases(train, train_transform(input_size, augment))
    weights = balanced_weights(train.labels)
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        sampler = WeightedRandomSampler(weights, config.samples_per_epoch, replacement=True, generator=generator)
        loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, drop_last=True)
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        for inputs, targets in tqdm(loader, desc=f"{desc} {epoch}/{config.epochs}", leave=False, disable=not progress):
            inputs, targets = inputs.to(device), targets.to(device)
            loss, logits = _loss(model(inputs), targets, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(targets)
            correct += int((logits.argmax(1) == targets).sum())
            seen += len(targets)
        scores = evaluate(model, val, input_size)
        state["seconds"] += time.perf_counter() - started
        row = {
            "epoch": epoch,
            "train_loss": total_loss / seen,
            "train_acc": correct / seen,
            "val_loss": scores["loss"],
            "val_acc": scores["acc"],
            "val_bacc": scores["bacc"],
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
        }
        state["history"].append(row)
        rank = (row["val_bacc"], -row["val_loss"])
        if state["best"] is None or rank > tuple(state["best"]):
            state["best"], state["best_epoch"] = rank, epoch
            state["best_state"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        state["epoch"] = epoch
        if run is not None and epoch < config.epochs:  # after the last epoch the caller saves the final weights
            run.save_checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(),
                    "state": state,
                }
            )
        if on_epoch is not None:
            on_epoch(row)
    return {
        "history": state["history"],
        "best_epoch": state["best_epoch"],
        "best_state": state["best_state"],
        "train_seconds": state["seconds"],
    }


@torch.no_grad()
def classify_boxes(
    model: nn.Module, policy: CropPolicy, image: np.ndarray, boxes: list[tuple[float, float, float, float]]
) -> torch.Tensor:
    """Class probabilities ``(N, C)`` of the WBC boxes ``(x0, y0, x1, y1)`` in an ``(H, W, 3)``
    uint8 RGB smear image, through the training crop policy: what the smear pipeline calls."""
    if not boxes:
        return torch.zeros((0, 0))
    inputs = torch.stack([policy.classifier_input(image, box) for box in boxes])
    model.eval()
    device = next(model.parameters()).device
    return torch.softmax(model(inputs.to(device)).float().cpu(), dim=1)
