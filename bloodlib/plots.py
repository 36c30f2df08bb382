"""Figures shared by the tasks: the confusion matrix (WBC subtypes, the pipeline's chain, COVID-19).

Each figure function returns a new :class:`matplotlib.figure.Figure` (no ``plt.show``), so the
notebook decides whether to display or save it.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def _axis_labels(
    counts: np.ndarray | pd.DataFrame, labels: Sequence[str] | None, predicted_labels: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """Row and column labels: given, else the DataFrame's index and columns."""
    if labels is None and not isinstance(counts, pd.DataFrame):
        raise ValueError("labels are required when counts is not a pandas DataFrame")
    rows = list(labels) if labels is not None else list(counts.index)
    if predicted_labels is not None:
        columns = list(predicted_labels)
    elif labels is not None:
        columns = rows
    else:
        columns = list(counts.columns)
    return [str(label) for label in rows], [str(label) for label in columns]


def confusion_axes(
    ax: Axes,
    counts: np.ndarray | pd.DataFrame,
    *,
    title: str,
    labels: Sequence[str] | None = None,
    predicted_labels: Sequence[str] | None = None,
    xlabel: str = "predicted",
    ylabel: str = "true",
    fontsize: float = 8,
) -> None:
    """A confusion matrix on ``ax``: colour = share of the row, each cell ``"<count>\\n(<share>%)"``.

    Args:
        ax: the axes to draw on.
        counts: ``(R, C)`` counts, rows the true class, columns the predicted one; a DataFrame
            brings its labels (index: rows, columns: columns).
        title: axes title.
        labels: row labels (and column labels unless ``predicted_labels`` is given).
        predicted_labels: column labels when the columns differ from the rows (e.g. ``missed``).
        xlabel, ylabel: axis titles.
        fontsize: size of the cell texts (tick labels one point larger).

    Raises:
        ValueError: ``counts`` is not 2-D, or the labels do not match its shape.
    """
    values = np.asarray(counts, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"counts must be a 2-D matrix, got shape {values.shape}")
    rows, columns = _axis_labels(counts, labels, predicted_labels)
    if (len(rows), len(columns)) != values.shape:
        raise ValueError(f"{len(rows)} row and {len(columns)} column labels for a {values.shape} matrix")
    totals = values.sum(axis=1, keepdims=True)
    shares = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            colour = "white" if shares[i, j] > 0.6 else "black"
            text = f"{int(values[i, j])}\n({100 * shares[i, j]:.1f}%)"
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=colour)
    crowded = len(columns) * max(len(c) for c in columns) > 40  # long column labels would overlap
    ax.set_xticks(
        range(len(columns)),
        columns,
        fontsize=fontsize + 1,
        rotation=30 if crowded else 0,
        ha="right" if crowded else "center",
    )
    ax.set_yticks(range(len(rows)), rows, fontsize=fontsize + 1)
    ax.set_xlabel(xlabel, fontsize=fontsize + 1)
    ax.set_ylabel(ylabel, fontsize=fontsize + 1)
    ax.set_title(title, fontsize=fontsize + 2)


def confusion_figure(
    counts: np.ndarray | pd.DataFrame,
    *,
    title: str,
    labels: Sequence[str] | None = None,
    predicted_labels: Sequence[str] | None = None,
    xlabel: str = "predicted",
    ylabel: str = "true",
) -> Figure:
    """One confusion matrix (:func:`confusion_axes`), sized to its number of classes."""
    n_rows, n_columns = np.shape(counts)
    fig, ax = plt.subplots(figsize=(0.9 * n_columns + 1.8, 0.8 * n_rows + 1.4))
    confusion_axes(
        ax, counts, title=title, labels=labels, predicted_labels=predicted_labels, xlabel=xlabel, ylabel=ylabel
    )
    fig.tight_layout()
    return fig


def confusion_grid(
    matrices: dict[str, np.ndarray | pd.DataFrame],
    *,
    title: str,
    labels: Sequence[str] | None = None,
    ncols: int = 4,
) -> Figure:
    """One confusion matrix (:func:`confusion_axes`) per entry of ``matrices``, titled with its key."""
    if not matrices:
        raise ValueError("matrices is empty")
    nrows = int(np.ceil(len(matrices) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.3 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, counts) in zip(axes.flat, matrices.items()):
        ax.axis("on")
        confusion_axes(ax, counts, title=name, labels=labels, fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
