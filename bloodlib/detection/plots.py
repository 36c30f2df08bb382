"""Figures of the detection report: boxes on images (Figure 5), PR curves, count scatter, loss curves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from bloodlib.detection.data import CLASSES, Annotation, read_image
from bloodlib.detection.metrics import above_threshold

COLORS = {"RBC": "#d62728", "WBC": "#1f77b4", "Platelets": "#2ca02c"}


def draw_boxes(
    ax: Any, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray | None = None, title: str = ""
) -> None:
    """``image`` (H, W, 3) uint8 with XYXY ``boxes`` (N, 4) coloured by class ``labels`` (1..3)."""
    ax.imshow(image)
    for box, label in zip(boxes, labels):
        color = COLORS[CLASSES[int(label) - 1]]
        x1, y1, x2, y2 = (float(v) for v in box)
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=1.5))
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _kept(pred: dict[str, torch.Tensor], threshold: float | dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(N, 4)`` and labels ``(N,)`` of :func:`~bloodlib.detection.metrics.above_threshold`."""
    kept = above_threshold(pred, threshold)
    return kept["boxes"].numpy(), kept["labels"].numpy()


def detection_grid(
    annotations: Sequence[Annotation],
    columns: dict[str, Sequence[dict[str, torch.Tensor]]],
    thresholds: dict[str, float | dict[str, float]],
) -> Any:
    """Rows = images; first column the ground truth, then one column per model's detections
    (kept above ``thresholds[model]``), with per-class counts in the titles."""
    n_rows, n_cols = len(annotations), 1 + len(columns)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 2.5 * n_rows), squeeze=False)
    for r, a in enumerate(annotations):
        image = read_image(a.image_path).permute(1, 2, 0).numpy()
        counts = " ".join(f"{k[0]}{v}" for k, v in a.counts().items())
        draw_boxes(axes[r, 0], image, a.boxes, a.labels, title=f"{a.image_id[-5:]} truth: {counts}")
        for c, (name, preds) in enumerate(columns.items(), start=1):
            boxes, labels = _kept(preds[r], thresholds[name])
            n = " ".join(f"{k[0]}{int((labels == i + 1).sum())}" for i, k in enumerate(CLASSES))
            draw_boxes(axes[r, c], image, boxes, labels, title=f"{name}: {n}")
    handles = [plt.Line2D([], [], color=c, label=k) for k, c in COLORS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def pr_curve_figure(
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], classes_of: dict[str, Sequence[str]] | None = None
) -> Any:
    """One panel per class; ``curves[model][class] = (recall, precision)``; ``classes_of`` limits
    a model to some classes (e.g. the WBC-only HSV baseline)."""
    fig, axes = plt.subplots(1, len(CLASSES), figsize=(4 * len(CLASSES), 3.6), sharey=True)
    for ax, cls in zip(axes, CLASSES):
        for model, per_class in curves.items():
            if cls in per_class and cls in (classes_of or {}).get(model, CLASSES):
                recall, precision = per_class[cls]
                ax.plot(recall, precision, label=model)
        ax.set_title(cls)
        ax.set_xlabel("recall")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("precision (IoU 0.5)")
    axes[-1].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def count_scatter(frames: dict[str, Any], classes_of: dict[str, Sequence[str]] | None = None) -> Any:
    """Predicted vs true count per image, one panel per class, one colour per model
    (``frames[model]`` from :func:`bloodlib.detection.metrics.count_frame`); jittered.
    ``classes_of`` limits a model to some classes."""
    fig, axes = plt.subplots(1, len(CLASSES), figsize=(4 * len(CLASSES), 3.8))
    rng = np.random.default_rng(0)
    for ax, cls in zip(axes, CLASSES):
        top = 1
        for model, frame in frames.items():
            rows = frame[frame["class"] == cls]
            if rows.empty or cls not in (classes_of or {}).get(model, CLASSES):
                continue
            jitter = rng.uniform(-0.15, 0.15, size=(2, len(rows)))
            ax.scatter(rows["true"] + jitter[0], rows["predicted"] + jitter[1], s=12, alpha=0.6, label=model)
            top = max(top, rows["true"].max(), rows["predicted"].max())
        ax.plot([0, top], [0, top], color="grey", linewidth=1)
        ax.set_title(cls)
        ax.set_xlabel("true count")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("predicted count")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def loss_curves(histories: dict[str, list[dict[str, float]]]) -> Any:
    """Training loss (left) and validation mAP@0.5 (right) per epoch, one line per model."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for model, history in histories.items():
        epochs = [h["epoch"] for h in history]
        left.plot(epochs, [h["train_loss"] for h in history], label=f"{model} total")
        left.plot(epochs, [h["train_bbox_regression"] for h in history], linestyle=":", label=f"{model} box")
        evaluated = [h for h in history if "val_mAP" in h]
        right.plot([h["epoch"] for h in evaluated], [h["val_mAP"] for h in evaluated], marker="o", label=model)
    left.set_xlabel("epoch")
    left.set_ylabel("training loss (SSD: classification + box)")
    left.set_yscale("log")
    right.set_xlabel("epoch")
    right.set_ylabel("validation mAP@0.5")
    right.set_ylim(0, 1)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def hsv_failures(
    annotations: Sequence[Annotation], preds: Sequence[dict[str, torch.Tensor]], thresholds: Any, score_threshold: float
) -> Any:
    """Rows = images; columns: true WBC boxes, the HSV baseline's boxes, its colour mask
    (``thresholds``: :class:`~bloodlib.detection.baseline.HSVThresholds`); a line saying so for no images."""
    from bloodlib.detection.baseline import wbc_mask

    if not annotations:
        fig, ax = plt.subplots(figsize=(6, 0.8))
        ax.text(0.5, 0.5, "The HSV baseline found every annotated WBC and no other box.", ha="center", va="center")
        ax.axis("off")
        return fig
    wbc = CLASSES.index("WBC") + 1
    fig, axes = plt.subplots(len(annotations), 3, figsize=(9.6, 2.5 * len(annotations)), squeeze=False)
    for r, (a, p) in enumerate(zip(annotations, preds)):
        image = read_image(a.image_path).permute(1, 2, 0).numpy()
        truth = a.labels == wbc
        draw_boxes(
            axes[r, 0], image, a.boxes[truth], a.labels[truth], title=f"{a.image_id[-5:]}: {truth.sum()} true WBC"
        )
        boxes, labels = _kept(p, score_threshold)
        draw_boxes(axes[r, 1], image, boxes, labels, title=f"HSV: {len(boxes)} box(es)")
        axes[r, 2].imshow(wbc_mask(image, thresholds), cmap="gray")
        axes[r, 2].set_title("HSV mask after morphology", fontsize=9)
        axes[r, 2].set_xticks([])
        axes[r, 2].set_yticks([])
    fig.tight_layout()
    return fig
