"""Table 3 metrics with 95% bootstrap intervals that resample source images, not copies.

TEST holds 2,487 augmented copies of 71 source images (620 monocyte copies of only 4), so
its errors are not independent: resampling copies would give intervals far too narrow.
:func:`grouped_bootstrap` resamples whole groups (source images) with replacement. It works
on per-group confusion matrices, so a thousand resamples cost milliseconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bloodlib.progress import phase

METRICS = ("accuracy", "precision", "recall", "f1")


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` counts, rows = true class, columns = predicted."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def scores(cm: np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1 from a confusion matrix (``(C, C)`` or ``(B, C, C)``).

    Macro averages run over the classes present in the truth (a class with no true item and
    no prediction does not count); an undefined precision (never predicted) is 0, as in
    scikit-learn's ``zero_division=0``.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    true_n, pred_n = cm.sum(-1), cm.sum(-2)
    present = true_n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pred_n > 0, tp / pred_n, 0.0)
        recall = np.where(present, tp / true_n, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        n_present = present.sum(-1)
        out = {
            "accuracy": tp.sum(-1) / cm.sum((-2, -1)),
            "precision": (precision * present).sum(-1) / n_present,
            "recall": (recall * present).sum(-1) / n_present,
            "f1": (f1 * present).sum(-1) / n_present,
        }
    return {k: v if np.ndim(v) else float(v) for k, v in out.items()}


def grouped_bootstrap(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, *, n_classes: int, n_boot: int, seed: int
) -> dict[str, tuple[float, float]]:
    """95% percentile interval of each metric, resampling groups with replacement."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    _, group_index = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = group_index.max() + 1
    per_group = np.zeros((n_groups, n_classes * n_classes), dtype=np.int64)
    np.add.at(per_group, (group_index, np.asarray(y_true) * n_classes + np.asarray(y_pred)), 1)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    counts = np.stack([np.bincount(d, minlength=n_groups) for d in draws])  # (B, G)
    cms = (counts @ per_group).reshape(n_boot, n_classes, n_classes)
    boot = scores(cms)
    return {k: (float(np.nanpercentile(boot[k], 2.5)), float(np.nanpercentile(boot[k], 97.5))) for k in METRICS}


@phase("bootstrap")
def metrics_table(predictions: pd.DataFrame, *, n_classes: int, n_boot: int, seed: int) -> pd.DataFrame:
    """Table 3: one row per (model, set): metrics, their CI bounds, images and groups.

    ``predictions`` has columns ``model, set, y_true, y_pred, group``.
    """
    rows = []
    for (model, name), part in predictions.groupby(["model", "set"], sort=False):
        y_true, y_pred, groups = part["y_true"].to_numpy(), part["y_pred"].to_numpy(), part["group"].to_numpy()
        point = scores(confusion(y_true, y_pred, n_classes))
        ci = grouped_bootstrap(y_true, y_pred, groups, n_classes=n_classes, n_boot=n_boot, seed=seed)
        row = {"model": model, "set": name, "images": len(part), "groups": len(np.unique(groups))}
        for metric in METRICS:
            row[metric] = point[metric]
            row[f"{metric}_lo"], row[f"{metric}_hi"] = ci[metric]
        rows.append(row)
    return pd.DataFrame(rows)
