"""Figures of the WBC-subtype report (each returns a matplotlib Figure)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from bloodlib import plots as shared_plots
from bloodlib.classification.classes import CLASSES

SHORT = [c[:3].title() for c in CLASSES]


def _image(tensor: torch.Tensor) -> np.ndarray:
    """``(3, h, w)`` uint8 or float in [0, 1] -> ``(h, w, 3)`` float for imshow."""
    array = tensor.detach().float()
    if tensor.dtype == torch.uint8:
        array = array / 255
    return array.clamp(0, 1).permute(1, 2, 0).numpy()


def image_grid(images: list[torch.Tensor], titles: list[str], *, ncols: int, title: str, size: float = 1.6) -> Figure:
    """Images (``(3, h, w)``) in a grid with one title each."""
    nrows = max(1, int(np.ceil(len(images) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, text in zip(axes.flat, images, titles):
        ax.imshow(_image(image))
        ax.set_title(text, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def boxes_figure(images: list[np.ndarray], boxes: list[tuple], titles: list[str], *, title: str) -> Figure:
    """Whole images (``(H, W, 3)`` uint8) with one box drawn on each."""
    fig, axes = plt.subplots(1, len(images), figsize=(3.2 * len(images), 2.8), squeeze=False)
    for ax, image, box, text in zip(axes[0], images, boxes, titles):
        ax.imshow(image)
        if box is not None:
            x0, y0, x1, y1 = box
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.5))
        ax.set_title(text, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def learning_curves(histories: dict[str, pd.DataFrame], *, title: str) -> Figure:
    """Loss and accuracy per epoch; train dashed, validation solid, one colour per model."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (name, history) in enumerate(histories.items()):
        colour = f"C{i}"
        ax_loss.plot(history["epoch"], history["train_loss"], "--", color=colour, alpha=0.7)
        ax_loss.plot(history["epoch"], history["val_loss"], "-", color=colour, label=name)
        ax_acc.plot(history["epoch"], history["train_acc"], "--", color=colour, alpha=0.7)
        ax_acc.plot(history["epoch"], history["val_bacc"], "-", color=colour, label=name)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss (dashed: train, solid: validation)")
    ax_acc.set(
        xlabel="epoch",
        ylabel="accuracy",
        ylim=(0, 1.02),
        title="train accuracy (dashed), validation balanced accuracy (solid)",
    )
    ax_acc.legend(fontsize=8, loc="lower right")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def feature_maps_figure(
    inputs: torch.Tensor, maps: torch.Tensor, labels: list[str], *, n_maps: int, title: str
) -> Figure:
    """Per sample: the input, then its ``n_maps`` most active layer-1 channels.

    Args:
        inputs: ``(N, 3, h, w)`` in [0, 1].
        maps: ``(N, C, h', w')`` activations.
    """
    n = len(inputs)
    fig, axes = plt.subplots(n, n_maps + 1, figsize=(1.4 * (n_maps + 1), 1.5 * n + 0.4), squeeze=False)
    for row in range(n):
        axes[row, 0].imshow(_image(inputs[row]))
        axes[row, 0].set_title(labels[row], fontsize=7)
        strongest = maps[row].abs().mean((1, 2)).argsort(descending=True)[:n_maps]
        for col, channel in enumerate(strongest.tolist(), start=1):
            axes[row, col].imshow(maps[row, channel].numpy(), cmap="viridis")
            axes[row, col].set_title(f"ch {channel}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def confusion_figure(cm: np.ndarray, *, title: str) -> Figure:
    """One model's ``(4, 4)`` confusion matrix (rows true, columns predicted; :func:`bloodlib.plots.confusion_figure`)."""
    return shared_plots.confusion_figure(cm, title=title, labels=SHORT)


def confusion_grid(cms: dict[str, np.ndarray], *, title: str, ncols: int = 4) -> Figure:
    """One confusion matrix per model (:func:`bloodlib.plots.confusion_grid`)."""
    return shared_plots.confusion_grid(cms, title=title, labels=SHORT, ncols=ncols)


def metric_bars(table: pd.DataFrame, *, metric: str, paper: dict[str, float], title: str) -> Figure:
    """``metric`` with its CI per model and evaluation set, the paper's value as a black tick."""
    sets = list(dict.fromkeys(table["set"]))
    models = list(dict.fromkeys(table["model"]))
    width = 0.8 / len(sets)
    fig, ax = plt.subplots(figsize=(11, 3.8))
    x = np.arange(len(models))
    for k, name in enumerate(sets):
        part = table[table["set"] == name].set_index("model").reindex(models)
        err = np.vstack([part[metric] - part[f"{metric}_lo"], part[f"{metric}_hi"] - part[metric]])
        ax.bar(x + (k - (len(sets) - 1) / 2) * width, part[metric], width, yerr=err, capsize=2, label=name)
    for i, name in enumerate(models):
        if paper.get(name) is not None:
            ax.plot([i - 0.4, i + 0.4], [paper[name]] * 2, color="black", lw=2, label="paper" if i == 0 else None)
    ax.set_xticks(x, models, fontsize=8)
    ax.set(ylim=(0, 1.02), ylabel=metric, title=title)
    ax.legend(fontsize=8, ncol=len(sets) + 1, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
