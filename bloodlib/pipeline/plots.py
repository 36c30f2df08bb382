"""Figures of the pipeline notebook: counts vs truth, the chain's confusion matrix, feature shift, examples."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bloodlib import plots as shared_plots
from bloodlib.detection.data import CLASSES
from bloodlib.detection.metrics import count_errors


def count_scatter(images: pd.DataFrame, per_sample: pd.DataFrame) -> Figure:
    """Predicted vs annotated counts per class: top row per image, bottom row per pseudo-sample;
    the title gives the MAPE (images with at least one annotated cell of the class)."""
    fig, axes = plt.subplots(2, len(CLASSES), figsize=(4 * len(CLASSES), 7.5))
    for row, (level, frame) in enumerate((("image", images), ("pseudo-sample", per_sample))):
        for col, cls in enumerate(CLASSES):
            ax = axes[row, col]
            part = frame[frame["class"] == cls]
            true, pred = part["true"].to_numpy(), part["predicted"].to_numpy()
            top = max(1, int(max(true.max(initial=0), pred.max(initial=0))))
            ax.plot([0, top], [0, top], color="0.7", lw=1)
            jitter = np.random.default_rng(0).uniform(-0.15, 0.15, size=(2, len(true))) if level == "image" else 0
            ax.scatter(
                true + (jitter[0] if level == "image" else 0),
                pred + (jitter[1] if level == "image" else 0),
                s=14 if level == "image" else 30,
                alpha=0.6,
            )
            mape = count_errors(true, pred)["mape"]
            ax.set_title(f"{cls} per {level}: MAPE {mape:.1f}%", fontsize=10)
            ax.set_xlabel("annotated")
            ax.set_ylabel("pipeline")
    fig.tight_layout()
    return fig


def confusion_figure(table: pd.DataFrame, *, title: str) -> Figure:
    """The chain's count table (rows annotated, columns pipeline incl. ``missed``; from
    :func:`bloodlib.pipeline.evaluation.chain_confusion`) as :func:`bloodlib.plots.confusion_figure`."""
    return shared_plots.confusion_figure(
        table, title=title, xlabel="detected + classified by the pipeline", ylabel="annotated (labels.csv)"
    )


def feature_shift_figure(osr: pd.DataFrame, samples: pd.DataFrame, features: Sequence[str]) -> Figure:
    """OSR's distribution of each model feature (histogram) with the pseudo-samples' values (red ticks)."""
    fig, axes = plt.subplots(1, len(features), figsize=(3.2 * len(features), 3))
    for ax, name in zip(np.atleast_1d(axes), features):
        values = osr[name].dropna().to_numpy()
        ax.hist(values, bins=30, color="0.6")
        for v in samples[name].dropna():
            ax.axvline(v, color="#d62728", lw=1, alpha=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_yticks([])
    fig.suptitle("Grey: OSR patients (training data); red: BCCD pseudo-samples", fontsize=10)
    fig.tight_layout()
    return fig


def examples_figure(images: Sequence[np.ndarray], titles: Sequence[str]) -> Figure:
    """Annotated images (from :func:`bloodlib.pipeline.annotate.annotate`) side by side."""
    fig, axes = plt.subplots(1, len(images), figsize=(6.4 * len(images), 5.6), squeeze=False)
    for ax, image, title in zip(axes[0], images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    return fig


def auc_figure(table: pd.DataFrame) -> Figure:
    """Nested-CV AUC with its interval per classifier (rows) and feature set (colours)."""
    sets = list(dict.fromkeys(table["features"]))
    classifiers = list(dict.fromkeys(table["classifier"]))
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(classifiers) * len(sets) + 1))
    for k, name in enumerate(sets):
        part = table[table["features"] == name].set_index("classifier")
        y = np.arange(len(classifiers)) * (len(sets) + 1) + k
        mean = part.loc[classifiers, "auc_mean"].to_numpy()
        low, high = part.loc[classifiers, "auc_ci_low"].to_numpy(), part.loc[classifiers, "auc_ci_high"].to_numpy()
        ax.errorbar(mean, y, xerr=[mean - low, high - mean], fmt="o", capsize=3, label=name)
    ax.set_yticks(np.arange(len(classifiers)) * (len(sets) + 1) + (len(sets) - 1) / 2, classifiers)
    ax.axvline(0.5, color="0.7", lw=1)
    ax.set_xlabel("nested-CV AUC (95% corrected-t interval)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
