"""Hyper-parameter tuning of one classifier on one training set (shared by both protocols)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from bloodlib.diagnosis.models import make_classifier, param_grid
from bloodlib.diagnosis.warnings_util import count_convergence_warnings


def tune(
    name: str,
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    cv: object,
    grid_size: str,
    scoring: str,
    random_state: int,
    groups: np.ndarray | None = None,
) -> tuple[Pipeline, dict, float, int]:
    """Grid-search ``name`` on (X, y) only; (refitted best pipeline, best params, best CV score, #ConvergenceWarnings).

    With an empty grid the defaults are fitted directly (no CV; the score is NaN).
    BLAS is limited to one thread: the models are tiny, parallelism comes from joblib
    tasks, and a multi-threaded OpenBLAS on a busy machine makes e.g. the Gaussian process
    up to 100x slower.
    """
    grid = param_grid(name, size=grid_size)
    with count_convergence_warnings() as n_warn, threadpool_limits(limits=1):
        if not grid:
            model = make_classifier(name, random_state=random_state).fit(X, y)
            return model, {}, float("nan"), n_warn()
        search = GridSearchCV(
            make_classifier(name, random_state=random_state), grid, scoring=scoring, cv=cv, n_jobs=1, refit=True
        )
        search.fit(X, y, groups=groups)
        return search.best_estimator_, search.best_params_, float(search.best_score_), n_warn()


def format_params(params: dict) -> str:
    """Readable ``key=value`` list without the ``clf__`` prefixes."""
    items = [f"{k.replace('clf__estimator__', '').replace('clf__', '')}={v}" for k, v in sorted(params.items())]
    return ", ".join(items) if items else "defaults"
