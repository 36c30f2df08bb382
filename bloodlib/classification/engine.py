"""Task 2's epoch body (:class:`ClassifierTask`: class-balanced on-the-fly augmentation) and prediction.

An *epoch* here is ``samples_per_epoch`` draws from the training canvases with replacement,
each class equally likely (:func:`balanced_weights`): dataset2's TRAIN holds ~10k augmented
copies of 277 source images, so a full pass mostly repeats itself, and the budget is better
spent on more, differently augmented draws. Every epoch ends with a validation pass on the
grouped validation split; the epoch with the best validation balanced accuracy (ties: lower loss)
gives the final weights -- *balanced* accuracy, because the validation sources are as
unbalanced as BCCD (few monocyte and lymphocyte sources). Nothing here looks at a test set.
The loop itself (seeding, checkpoints, resume) is :func:`bloodlib.training.fit`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from bloodlib import distributed
from bloodlib.classification.canvases import CanvasSet
from bloodlib.classification.models import split_outputs
from bloodlib.classification.transforms import AugmentConfig, eval_transform, train_transform
from bloodlib.progress import phase


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


def _loss(
    outputs: Any, targets: torch.Tensor, label_smoothing: float, aux_loss_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    logits, aux = split_outputs(outputs)
    loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    if aux is not None:
        loss = loss + aux_loss_weight * F.cross_entropy(aux, targets, label_smoothing=label_smoothing)
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


@phase("evaluation")
@torch.no_grad()
def predict_logits(
    model: nn.Module, canvases: torch.Tensor, input_size: tuple[int, int], batch_size: int = 128, *, tta: bool = False
) -> torch.Tensor:
    """``(N, 3, Hc, Wc)`` uint8 canvases -> ``(N, C)`` float logits on the CPU (eval mode, centre
    crop; computed on the model's device). With ``tta`` the logits are the log of the class
    probabilities averaged over :func:`symmetry_views` (test-time augmentation).

    The model runs in ``channels_last`` memory format for the call (its weights are put back
    afterwards): the same sums in another order, so the 8-view log-probabilities of the eight trained
    cpu-profile models differ from the default layout's by at most 3e-5 (same argmax on 640 TEST
    images), and their evaluation is 1.4x faster (2 AVX512 cores: DenseNet121 1.2x ... arch1 2.2x)."""
    model.eval()
    device = next(model.parameters()).device
    transform = eval_transform(input_size)
    model.to(memory_format=torch.channels_last)
    try:
        outs = [
            _forward(model, transform(canvases[i : i + batch_size]).to(device, memory_format=torch.channels_last), tta)
            .cpu()
            .contiguous()
            for i in range(0, len(canvases), batch_size)
        ]
    finally:
        model.to(memory_format=torch.contiguous_format)
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


class ClassifierTask:
    """Class-balanced training draws and validation on the grouped split (see :mod:`bloodlib.training`).

    Args:
        train, val: canvases of the training and validation sets.
        input_size: ``(h, w)`` of the classifier's input.
        augment: on-the-fly augmentation of the training canvases.
        samples_per_epoch: class-balanced draws (with replacement) per epoch; the last incomplete
            batch is dropped (a batch of one would break batch norm).
        batch_size: mini-batch size (per process in a distributed run).
        label_smoothing: cross-entropy label smoothing.
        aux_loss_weight: weight of Inception-v3's auxiliary loss.

    In a distributed run (:mod:`bloodlib.distributed`) every process draws the epoch's
    ``samples_per_epoch`` indices alike and trains on its share of them
    (:class:`~bloodlib.distributed.ShardedSampler`): together, step ``k`` of all processes sees the
    single-process epoch's ``k``-th batch of ``batch_size x processes`` draws.
    """

    def __init__(
        self,
        train: CanvasSet,
        val: CanvasSet,
        *,
        input_size: tuple[int, int],
        augment: AugmentConfig,
        samples_per_epoch: int,
        batch_size: int,
        label_smoothing: float = 0.0,
        aux_loss_weight: float = 0.4,
    ) -> None:
        if samples_per_epoch < batch_size:
            raise ValueError(f"samples_per_epoch ({samples_per_epoch}) must be >= batch_size ({batch_size})")
        self.val, self.input_size = val, input_size
        self.dataset = AugmentedCanvases(train, train_transform(input_size, augment))
        self.weights = balanced_weights(train.labels)
        self.samples_per_epoch, self.batch_size = samples_per_epoch, batch_size
        self.label_smoothing, self.aux_loss_weight = label_smoothing, aux_loss_weight

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (per process in a distributed run).

        Raises:
            ValueError: a distributed run's processes draw fewer than ``batch_size`` each.
        """
        size = distributed.world().size
        steps = distributed.shard_length(self.samples_per_epoch, size) // self.batch_size
        if steps == 0:
            raise ValueError(
                f"samples_per_epoch ({self.samples_per_epoch}) shared by {size} processes is less than "
                f"batch_size ({self.batch_size}) per process"
            )
        return steps

    def train_loader(self, generator: torch.Generator) -> DataLoader:
        sampler = WeightedRandomSampler(self.weights, self.samples_per_epoch, replacement=True, generator=generator)
        where = distributed.world()
        if not where.distributed:
            return DataLoader(self.dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True)
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=distributed.ShardedSampler(sampler, rank=where.rank, size=where.size),
            drop_last=True,
        )

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy (plus Inception's auxiliary term) and the batch's accuracy."""
        device = next(model.parameters()).device
        inputs, targets = batch[0].to(device), batch[1].to(device)
        loss, logits = _loss(model(inputs), targets, self.label_smoothing, self.aux_loss_weight)
        return loss, {"loss": loss.item(), "acc": float((logits.argmax(1) == targets).float().mean())}

    def validate(self, model: nn.Module) -> dict[str, float]:
        return evaluate(model, self.val, self.input_size)

    def rank(self, metrics: dict[str, float]) -> tuple[float, ...]:
        """Balanced accuracy first (the validation sources are unbalanced), then the lower loss."""
        return (metrics["bacc"], -metrics["loss"])
