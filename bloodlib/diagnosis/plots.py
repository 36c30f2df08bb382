"""Figures of Task 3: confusion matrix (paper Fig. 11), ROC curves, calibration curve.

Each function returns a new :class:`matplotlib.figure.Figure` (no ``plt.show``), so the
notebook decides whether to display or save it.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import auc, confusion_matrix, roc_curve

from bloodlib import plots as shared_plots
from bloodlib.diagnosis.models import DISPLAY_NAMES

_LABELS = ("negative", "positive")


def confusion_matrix_figure(y_true: np.ndarray, y_pred: np.ndarray, *, title: str | None = None) -> Figure:
    """The 2x2 confusion matrix of binary predictions (:func:`bloodlib.plots.confusion_figure`).

    Rows are the true class, columns the predicted class; colour = row percentage, so the
    diagonal reads as specificity (top) and sensitivity (bottom).
    """
    cm = confusion_matrix(y_true, y_pred, labels=[0, 1])
    return shared_plots.confusion_figure(cm, title=title or f"Confusion matrix (n = {cm.sum()})", labels=_LABELS)


def mean_roc(oof: pd.DataFrame, *, grid_points: int = 101) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr grid, mean tpr, sd tpr) over the (repeat, fold) groups of one classifier's OOF rows.

    Each fold's ROC curve is interpolated on a common FPR grid (vertical averaging);
    folds with a single class are skipped.
    """
    grid = np.linspace(0.0, 1.0, grid_points)
    tprs = []
    for _, part in oof.groupby(["repeat", "fold"]):
        if part["y_true"].nunique() < 2:
            continue
        fpr, tpr, _ = roc_curve(part["y_true"], part["proba"])
        t = np.interp(grid, fpr, tpr)
        t[0] = 0.0
        tprs.append(t)
    tprs_a = np.array(tprs)
    mean = tprs_a.mean(axis=0)
    mean[-1] = 1.0
    return grid, mean, tprs_a.std(axis=0)


def roc_figure(oof: pd.DataFrame, *, summary: pd.DataFrame | None = None, title: str | None = None) -> Figure:
    """Mean out-of-fold ROC curve of every classifier on one axes, AUC in the legend.

    Args:
        oof: :attr:`HonestResult.oof` (columns ``classifier``, ``repeat``, ``fold``, ``y_true``, ``proba``).
        summary: :attr:`HonestResult.summary`; if given, the legend shows ``auc_mean`` and its
            CI, else the mean per-fold AUC computed here.
        title: axes title.
    """
    fig, ax = plt.subplots(figsize=(6.0, 5.4))
    stats = summary.set_index("classifier") if summary is not None else None
    names = list(summary["classifier"]) if summary is not None else list(pd.unique(oof["classifier"]))
    for name in names:
        part = oof[oof["classifier"] == name]
        grid, mean, _ = mean_roc(part)
        if stats is not None:
            s = stats.loc[name]
            label = (
                f"{DISPLAY_NAMES.get(name, name)}: {s['auc_mean']:.3f} [{s['auc_ci_low']:.3f}, {s['auc_ci_high']:.3f}]"
            )
        else:
            label = f"{DISPLAY_NAMES.get(name, name)}: {auc(grid, mean):.3f}"
        ax.plot(grid, mean, lw=1.5, label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title or "Mean out-of-fold ROC curves")
    ax.legend(
        title="AUC" + (" (mean [CI])" if stats is not None else ""), fontsize=7, title_fontsize=8, loc="lower right"
    )
    fig.tight_layout()
    return fig


def calibration_figure(y_true: np.ndarray, proba: np.ndarray, *, n_bins: int = 10, title: str | None = None) -> Figure:
    """Reliability diagram (top) and histogram of predicted probabilities (bottom).

    Bins are uniform on [0, 1]; empty bins are left out of the diagram. Pass pooled
    out-of-fold probabilities (e.g. ``HonestResult.oof_for(best)``).
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(proba)
    frac_pos, mean_pred = calibration_curve(y_true, proba, n_bins=n_bins, strategy="uniform")
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(5.0, 6.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    ax.plot(mean_pred, frac_pos, marker="o", label="model")
    ax.set_ylabel("observed fraction positive")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="upper left")
    ax.set_title(title or "Calibration (out-of-fold)")
    bins = np.linspace(0, 1, n_bins + 1)
    hx.hist([proba[y_true == 0], proba[y_true == 1]], bins=bins, stacked=True, label=list(_LABELS))
    hx.set_xlabel("predicted P(positive)")
    hx.set_ylabel("count")
    hx.set_xlim(0, 1)
    hx.legend(fontsize=8)
    fig.tight_layout()
    return fig


def seeds_figure(
    over_seeds: pd.DataFrame, *, paper_accuracy: dict[str, float] | None = None, title: str | None = None
) -> Figure:
    """Test accuracy of every split of :func:`~bloodlib.diagnosis.faithful.faithful_over_seeds`, one row of
    dots per classifier (the box spans the 5-95 % range, the bar the median), the paper's accuracy as a
    red cross."""
    names = list(dict.fromkeys(over_seeds["classifier"]))
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(names) + 1.4))
    rng = np.random.default_rng(0)
    labelled = False
    for i, name in enumerate(names):
        acc = over_seeds.loc[over_seeds["classifier"] == name, "accuracy"].to_numpy(dtype=float)
        low, median, high = np.quantile(acc, [0.05, 0.5, 0.95])
        ax.add_patch(plt.Rectangle((low, i - 0.3), high - low, 0.6, color="#cfe0f3", zorder=1))
        ax.plot([median, median], [i - 0.3, i + 0.3], color="#1f4e79", lw=2, zorder=2)
        ax.scatter(acc, i + rng.uniform(-0.15, 0.15, len(acc)), s=12, color="#1f77b4", alpha=0.7, zorder=3)
        paper = (paper_accuracy or {}).get(name)
        if paper is not None:
            ax.scatter([paper], [i], marker="x", s=60, color="#b00020", zorder=4, label=None if labelled else "paper")
            labelled = True
    ax.set_yticks(range(len(names)), [DISPLAY_NAMES.get(n, n) for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy of one 75/25 split")
    ax.set_title(title or f"Faithful protocol over {over_seeds['seed'].nunique()} random splits")
    if labelled:
        ax.legend(loc="lower left")
    fig.tight_layout()
    return fig
