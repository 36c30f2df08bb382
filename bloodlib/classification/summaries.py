"""Tables that describe the data of the WBC-subtype report: sizes, leakage checks, the localizer."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bloodlib.classification.canvases import CanvasSet
from bloodlib.classification.crops import locate_wbc, read_rgb, white_balance
from bloodlib.classification.data import CLASSES


def set_overview(sets: dict[str, CanvasSet]) -> pd.DataFrame:
    """Images per class, source images and source groups of every set."""
    rows = []
    for name, data in sets.items():
        counts = data.frame["label"].value_counts()
        row = {"set": name, "images": len(data)}
        row |= {label: int(counts.get(label, 0)) for label in CLASSES}
        row |= {"sources": data.frame["source"].nunique(), "groups": data.frame["group"].nunique()}
        rows.append(row)
    return pd.DataFrame(rows)


def leakage_check(sets: dict[str, CanvasSet], training: tuple[str, ...] = ("train", "val")) -> pd.DataFrame:
    """Source images and near-duplicate groups each set shares with the training sets.

    ``train`` vs ``val`` must share nothing (the grouped split); official TEST shares the two
    near-duplicate pairs that straddle the upstream split (a property of the data set).
    """
    rows = []
    for first in training:
        for second, data in sets.items():
            if second == first or (second in training and training.index(second) < training.index(first)):
                continue
            a, b = sets[first].frame, data.frame
            rows.append(
                {
                    "training set": first,
                    "other set": second,
                    "shared sources": len(set(a["source"]) & set(b["source"])),
                    "shared groups": len(set(a["group"]) & set(b["group"])),
                }
            )
    return pd.DataFrame(rows)


def localizer_check(
    boxes: pd.DataFrame, *, white_percentile: float, scale: float = 0.5, limit: int | None = None
) -> pd.DataFrame:
    """The colour localizer against BCCD's WBC boxes, one row per single-WBC image.

    Images are resized by ``scale`` first (0.5 = dataset2's 320x240). Columns:
    ``centre_error`` (distance of the centres / box side), ``side_ratio`` (box side / nucleus
    side: what ``nucleus_to_cell`` should be), ``found``.
    """
    import cv2

    single = boxes.drop_duplicates("image", keep=False)
    if limit is not None:
        single = single.head(limit)
    rows = []
    for row in single.itertuples():
        image = read_rgb(row.path)
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = locate_wbc(white_balance(image, white_percentile), nucleus_to_cell=1.0)
        gt = np.array([row.x0, row.y0, row.x1, row.y1]) * scale
        side = max(gt[2] - gt[0], gt[3] - gt[1])
        if found is None:
            rows.append(
                {"image": row.image, "label": row.label, "found": False, "centre_error": np.nan, "side_ratio": np.nan}
            )
            continue
        f = np.array(found)
        centre = np.hypot(*((f[:2] + f[2:]) / 2 - (gt[:2] + gt[2:]) / 2))
        rows.append(
            {
                "image": row.image,
                "label": row.label,
                "found": True,
                "centre_error": centre / side,
                "side_ratio": side / max(f[2] - f[0], f[3] - f[1]),
            }
        )
    return pd.DataFrame(rows)


def training_summary(trained: dict) -> pd.DataFrame:
    """Per model: epochs, selected epoch, its validation scores, training time, cache state."""
    rows = []
    for name, t in trained.items():
        best = t.history.loc[t.history["epoch"] == t.best_epoch].iloc[0]
        rows.append(
            {
                "model": name,
                "epochs": int(t.history["epoch"].max()),
                "selected epoch": t.best_epoch,
                "val balanced acc": best["val_bacc"],
                "val acc": best["val_acc"],
                "train minutes": t.train_seconds / 60,
                "from cache": t.cached,
            }
        )
    return pd.DataFrame(rows)
