"""Task 1's epoch body (:class:`DetectionTask`) and inference: ``predict``, ``evaluate``.

Training itself is :func:`bloodlib.training.fit`, shared with every task: it calls
:meth:`DetectionTask.loss` on each batch and :meth:`DetectionTask.validate` every
``eval_every`` epochs; the weights kept are those with the best validation mAP@0.5
(selection uses the validation split only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
from torch.utils.data import DataLoader, RandomSampler
from tqdm.auto import tqdm

from bloodlib import distributed
from bloodlib.detection.data import Annotation, BCCDDetection, collate, float_image
from bloodlib.detection.metrics import Prediction, average_precision
from bloodlib.progress import phase


class DetectionTask:
    """SSD training on ``train_set`` with validation mAP on ``val_annotations`` (see :mod:`bloodlib.training`).

    Args:
        train_set: augmented training images and targets.
        val_annotations: validation images (may be empty: the last epoch is kept).
        batch_size: images per step (per process in a distributed run); the last incomplete batch
            is dropped when there is more than one.
        num_workers: data-loader processes.

    In a distributed run (:mod:`bloodlib.distributed`) each process trains on its share of the
    epoch's permutation (:class:`~bloodlib.distributed.ShardedSampler`): together, step ``k`` of
    all processes sees the single-process epoch's ``k``-th batch of ``batch_size x processes`` images.
    """

    def __init__(
        self, train_set: BCCDDetection, val_annotations: Sequence[Annotation], *, batch_size: int, num_workers: int = 0
    ) -> None:
        if len(train_set) == 0:
            raise ValueError("train_set is empty")
        self.train_set, self.val_annotations = train_set, list(val_annotations)
        self.batch_size, self.num_workers = batch_size, num_workers

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self._images_per_process // self.batch_size)

    @property
    def _images_per_process(self) -> int:
        return distributed.shard_length(len(self.train_set), distributed.world().size)

    def train_loader(self, generator: torch.Generator) -> DataLoader:
        where = distributed.world()
        if not where.distributed:
            return DataLoader(
                self.train_set,
                batch_size=self.batch_size,
                shuffle=True,
                drop_last=len(self.train_set) > self.batch_size,
                collate_fn=collate,
                num_workers=self.num_workers,
                generator=generator,
            )
        order = RandomSampler(self.train_set, generator=generator)  # the single-process epoch's permutation
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=distributed.ShardedSampler(order, rank=where.rank, size=where.size),
            drop_last=self._images_per_process > self.batch_size,
            collate_fn=collate,
            num_workers=self.num_workers,
            generator=generator,
            worker_init_fn=partial(distributed.seed_worker_for_rank, rank=where.rank) if self.num_workers else None,
        )

    def loss(self, model: torch.nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        """SSD's multibox loss (box regression + classification with hard-negative mining)."""
        images, targets = batch
        device = next(model.parameters()).device
        targets = [
            {"boxes": t["boxes"].as_subclass(torch.Tensor).to(device), "labels": t["labels"].to(device)}
            for t in targets
        ]
        losses = model([img.as_subclass(torch.Tensor).to(device) for img in images], targets)
        loss = sum(losses.values())
        return loss, {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in losses.items()}}

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        return evaluate(model, self.val_annotations) if self.val_annotations else {}

    def rank(self, metrics: dict[str, float]) -> tuple[float, ...]:
        return (-1.0 if math.isnan(metrics["mAP"]) else metrics["mAP"],)


@torch.no_grad()
@phase("evaluation")
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
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    out: list[Prediction] = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, leave=False, disable=not progress):
        batch = [float_image(x).to(device) for x in images[start : start + batch_size]]
        out += [{k: v.detach().cpu() for k, v in d.items()} for d in model(batch)]
    return out


def evaluate(
    model: torch.nn.Module, annotations: Sequence[Annotation], *, batch_size: int = 8, progress: bool = False
) -> dict[str, float]:
    """AP@0.5 per class and mAP of ``model`` on ``annotations`` (see :func:`~bloodlib.detection.metrics.average_precision`)."""
    return average_precision(predict(model, annotations, batch_size=batch_size, progress=progress), annotations)
