"""Figures of notebook 05: the scale estimate, the source x source table, colour scores."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bloodlib.general.evaluation import SOURCE_ORDER


def scale_figure(errors: pd.DataFrame) -> Figure:
    """Estimated against labelled RBC diameter, one colour per source, one panel per scale factor."""
    factors = sorted(errors["scale"].unique())
    fig, axes = plt.subplots(1, len(factors), figsize=(4.2 * len(factors), 4), squeeze=False)
    for ax, factor in zip(axes[0], factors):
        part = errors[errors["scale"] == factor]
        for k, source in enumerate(s for s in SOURCE_ORDER if s in set(part["source"])):
            rows = part[part["source"] == source]
            ax.scatter(rows["truth_px"], rows["diameter_px"], s=8, alpha=0.6, color=f"C{k}", label=source)
        top = float(np.nanmax(part[["truth_px", "diameter_px"]].to_numpy())) * 1.05
        ax.plot([0, top], [0, top], color="grey", lw=1)
        ax.fill_between([0, top], [0, 0.7 * top], [0, 1.3 * top], color="grey", alpha=0.12, label="+-30 %")
        ax.set(xlim=(0, top), ylim=(0, top), xlabel="labelled RBC diameter (px)", title=f"fields x{factor:g}")
    axes[0][0].set_ylabel("estimated RBC diameter (px)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def cross_source_figure(table: pd.DataFrame, *, value: str = "mAP50") -> Figure:
    """Heat map of ``value``: rows the training sources, columns the tested source."""
    grid = table.pivot(index="trained on", columns="tested on", values=value)
    grid = grid[[s for s in SOURCE_ORDER if s in grid.columns]]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * grid.shape[1], 0.8 + 0.6 * grid.shape[0]))
    ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
        ax.text(
            j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black"
        )
    ax.set_xticks(range(grid.shape[1]), grid.columns)
    ax.set_yticks(range(grid.shape[0]), grid.index)
    ax.set(xlabel="tested on (validation fields)", ylabel="trained on", title=value)
    fig.tight_layout()
    return fig


def colour_score_figure(scores: pd.DataFrame, limit: float) -> Figure:
    """Distribution of the colour score per source and version; the flag limit as a line."""
    groups = list(scores.groupby(["source", "version"], sort=False))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(groups) + 1.2))
    for k, ((_, version), part) in enumerate(groups):
        values = np.clip(part["score"].to_numpy(dtype=float), 0, 4 * limit)
        ax.scatter(
            values,
            np.full(len(values), k) + np.random.default_rng(k).uniform(-0.2, 0.2, len(values)),
            s=5,
            alpha=0.5,
            color="C3" if version != "as is" else "C0",
        )
    ax.axvline(limit, color="black", lw=1, ls="--")
    ax.set_yticks(range(len(groups)), [f"{s} ({v})" for (s, v), _ in groups])
    ax.set(xlabel=f"colour score (robust z, clipped at {4 * limit:g}); dashed: flag limit", xlim=(0, 4 * limit))
    fig.tight_layout()
    return fig
