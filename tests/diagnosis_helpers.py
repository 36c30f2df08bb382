"""A small synthetic cohort shaped like OSR's blood-count table, for the diagnosis tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification

COLUMNS = ["sex", "age", "wbc", "platelets", "neutrophils", "lymphocytes", "monocytes", "eosinophils", "basophils"]


def synthetic_cohort(n: int, *, negative_share: float, seed: int, pairs: bool = False) -> pd.DataFrame:
    """``n`` patients with the nine ``COLUMNS`` (4 informative), ``covid`` (about ``1 - negative_share`` positive)
    and ``duplicate_group`` (every record its own; with ``pairs`` every second record duplicates the one before)."""
    X, y = make_classification(
        n_samples=n, n_features=len(COLUMNS), n_informative=4, weights=[negative_share], random_state=seed
    )
    df = pd.DataFrame(X, columns=COLUMNS)
    df["covid"] = y
    df["duplicate_group"] = np.arange(n) // 2 * 2 if pairs else np.arange(n)
    return df
