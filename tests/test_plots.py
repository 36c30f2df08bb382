"""The one confusion-matrix figure, as the three tasks call it."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from bloodlib import plots


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].texts]


def test_cells_show_counts_and_row_shares():
    fig = plots.confusion_figure(np.array([[3, 1], [0, 0]]), title="t", labels=["neg", "pos"])
    assert texts(fig) == ["3\n(75.0%)", "1\n(25.0%)", "0\n(0.0%)", "0\n(0.0%)"]  # an empty row stays 0%
    ax = fig.axes[0]
    assert (
        [t.get_text() for t in ax.get_xticklabels()] == ["neg", "pos"] == [t.get_text() for t in ax.get_yticklabels()]
    )
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("predicted", "true", "t")
    plt.close(fig)


def test_a_dataframe_brings_its_labels_and_may_have_more_columns():
    table = pd.DataFrame([[5, 0, 1], [2, 2, 0]], index=["a", "b"], columns=["a", "b", "missed"])
    fig = plots.confusion_figure(table, title="chain", xlabel="pipeline", ylabel="annotated")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "missed"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert texts(fig)[:3] == ["5\n(83.3%)", "0\n(0.0%)", "1\n(16.7%)"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("pipeline", "annotated")
    plt.close(fig)


def test_grid_draws_one_matrix_per_entry():
    cms = {f"m{i}": np.eye(3, dtype=int) * (i + 1) for i in range(5)}
    fig = plots.confusion_grid(cms, title="all", labels=["x", "y", "z"], ncols=4)
    shown = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in shown] == list(cms) and len(fig.axes) == 8
    assert "2\n(100.0%)" in [t.get_text() for t in shown[1].texts]
    plt.close(fig)


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="labels are required"):
        plots.confusion_figure(np.eye(2), title="t")
    with pytest.raises(ValueError, match="2 row and 2 column labels"):
        plots.confusion_figure(np.eye(3), title="t", labels=["a", "b"])
