"""The honest protocol: repeated, grouped, stratified nested cross-validation.

- All rows are used; missing values are imputed inside each pipeline (fitted on training
  rows only, see :mod:`bloodlib.diagnosis.models`).
- Outer loop: ``repeats`` x ``folds`` :class:`~sklearn.model_selection.StratifiedGroupKFold`
  splits (reshuffled per repeat) with ``groups`` = ``duplicate_group``, so both records of a
  duplicate pair are always on the same side.
- Inner loop: grid search with ``StratifiedGroupKFold(inner_folds)`` on the outer-training
  part only; the refitted best pipeline predicts the outer test fold once.
- Per outer fold and classifier: AUC, accuracy, sensitivity, specificity (threshold on
  P(positive), default 0.5) and Brier score; out-of-fold probabilities are kept for ROC and
  calibration plots.

Confidence intervals (``<metric>_ci_low`` / ``<metric>_ci_high``): the corrected resampled
t-interval of Nadeau & Bengio (2003) over the J = repeats x folds per-fold values:
``mean +/- t_{J-1, (1+level)/2} * sqrt((1/J + n_test/n_train) * s^2)``, ``s^2`` the sample
variance of the per-fold values. The ``n_test/n_train`` term corrects for the overlap of
training sets between folds, which makes the naive t-interval far too narrow. Bounds are
clipped to [0, 1]. With a single outer fold no interval exists (NaN).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy import stats
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from bloodlib.diagnosis.data import xy_groups
from bloodlib.diagnosis.tuning import format_params, tune

#: Per-fold metrics summarised with a mean and a CI.
METRICS: tuple[str, ...] = ("auc", "accuracy", "sensitivity", "specificity", "brier")
CI_METHOD = "nadeau_bengio_corrected_t"


@dataclass
class HonestResult:
    """Outcome of :func:`run_honest`.

    Attributes:
        name: cohort label, e.g. ``"osr_table1"``.
        n, n_positive: rows and positives used.
        settings: the keyword arguments of the run (repeats, folds, grid size, ...).
        folds: one row per (``repeat``, ``fold``, ``classifier``): ``n_train``, ``n_test``,
            the :data:`METRICS`, ``inner_score`` (best inner-CV score), ``best_params``,
            ``n_convergence_warnings``.
        summary: one row per classifier: ``<metric>_mean``, ``<metric>_sd``,
            ``<metric>_ci_low``, ``<metric>_ci_high`` for each metric, ``n_outer_folds``,
            ``ci_method``, ``ci_level``; in the order of the ``classifiers`` argument.
        oof: out-of-fold predictions, one row per (``repeat``, ``fold``, ``classifier``,
            ``row``): ``y_true``, ``proba`` (P(positive)); ``row`` is the 0-based row of X.
        splits: ``(repeat, fold, train_rows, test_rows)`` of every outer fold.
        estimators: ``{(repeat, fold, classifier): fitted pipeline}`` if requested, else None.
    """

    name: str
    n: int
    n_positive: int
    settings: dict
    folds: pd.DataFrame
    summary: pd.DataFrame
    oof: pd.DataFrame = field(repr=False)
    splits: list[tuple[int, int, np.ndarray, np.ndarray]] = field(repr=False)
    estimators: dict[tuple[int, int, str], Pipeline] | None = field(default=None, repr=False)

    def best_classifier(self, metric: str = "auc") -> str:
        """The classifier with the highest mean ``metric`` (lowest for ``brier``)."""
        col = self.summary.set_index("classifier")[f"{metric}_mean"]
        return str(col.idxmin() if metric == "brier" else col.idxmax())

    def oof_for(self, classifier: str) -> pd.DataFrame:
        """Out-of-fold rows of one classifier."""
        return self.oof[self.oof["classifier"] == classifier].reset_index(drop=True)


def corrected_t_interval(values: np.ndarray, *, test_train_ratio: float, level: float) -> tuple[float, float, float]:
    """(mean, low, high): Nadeau-Bengio corrected resampled t-interval of per-fold values.

    NaN values are dropped; fewer than two values give NaN bounds.
    """
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if len(v) < 2:
        return mean, float("nan"), float("nan")
    se = np.sqrt((1.0 / len(v) + test_train_ratio) * v.var(ddof=1))
    half = float(stats.t.ppf((1.0 + level) / 2.0, len(v) - 1) * se)
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def outer_splits(
    y: np.ndarray, groups: np.ndarray, *, repeats: int, folds: int, random_state: int
) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(repeat, fold, train_rows, test_rows)`` of repeated StratifiedGroupKFold (seed ``random_state + repeat``)."""
    out = []
    for r in range(repeats):
        cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=random_state + r)
        for f, (train, test) in enumerate(cv.split(np.zeros(len(y)), y, groups)):
            out.append((r, f, train, test))
    return out


def _fold_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    pred = (proba >= threshold).astype(int)
    pos, neg = y_true == 1, y_true == 0
    return {
        "auc": roc_auc_score(y_true, proba) if pos.any() and neg.any() else float("nan"),
        "accuracy": float((pred == y_true).mean()),
        "sensitivity": float(pred[pos].mean()) if pos.any() else float("nan"),
        "specificity": float(1 - pred[neg].mean()) if neg.any() else float("nan"),
        "brier": float(brier_score_loss(y_true, proba, labels=[0, 1])),
    }


def _outer_task(
    split: tuple[int, int, np.ndarray, np.ndarray],
    X: pd.DataFrame,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    classifiers: list[str],
    inner_folds: int,
    grid_size: str,
    scoring: str,
    random_state: int,
    threshold: float,
    return_estimators: bool,
) -> tuple[list[dict], list[pd.DataFrame], dict]:
    """Tune and evaluate every classifier on one outer fold."""
    repeat, fold, train, test = split
    inner = StratifiedGroupKFold(
        n_splits=inner_folds, shuffle=True, random_state=random_state + 1000 * (repeat + 1) + fold
    )
    rows, oof, estimators = [], [], {}
    for name in classifiers:
        model, params, inner_score, n_warn = tune(
            name,
            X.iloc[train],
            y[train],
            cv=inner,
            groups=groups[train],
            grid_size=grid_size,
            scoring=scoring,
            random_state=random_state,
        )
        with threadpool_limits(limits=1):
            proba = model.predict_proba(X.iloc[test])[:, 1]
        rows.append(
            {
                "repeat": repeat,
                "fold": fold,
                "classifier": name,
                "n_train": len(train),
                "n_test": len(test),
                **_fold_metrics(y[test], proba, threshold),
                "inner_score": inner_score,
                "best_params": format_params(params),
                "n_convergence_warnings": n_warn,
            }
        )
        oof.append(
            pd.DataFrame(
                {"repeat": repeat, "fold": fold, "classifier": name, "row": test, "y_true": y[test], "proba": proba}
            )
        )
        if return_estimators:
            estimators[(repeat, fold, name)] = model
    return rows, oof, estimators


def summarise_folds(folds: pd.DataFrame, *, classifiers: list[str], ci_level: float) -> pd.DataFrame:
    """Per-classifier mean, SD and corrected-t CI of every metric in ``folds``."""
    out = []
    for name in classifiers:
        part = folds[folds["classifier"] == name]
        ratio = float(part["n_test"].mean() / part["n_train"].mean())
        row: dict = {"classifier": name}
        for metric in METRICS:
            mean, low, high = corrected_t_interval(part[metric].to_numpy(), test_train_ratio=ratio, level=ci_level)
            row.update(
                {
                    f"{metric}_mean": mean,
                    f"{metric}_sd": float(part[metric].std(ddof=1)) if len(part) > 1 else float("nan"),
                    f"{metric}_ci_low": low,
                    f"{metric}_ci_high": high,
                }
            )
        row.update({"n_outer_folds": len(part), "ci_method": CI_METHOD, "ci_level": ci_level})
        out.append(row)
    return pd.DataFrame(out)


def run_honest(
    X: pd.DataFrame,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    name: str,
    classifiers: list[str],
    random_state: int,
    outer_repeats: int,
    outer_folds: int,
    inner_folds: int,
    grid_size: str,
    scoring: str,
    ci_level: float,
    threshold: float,
    n_jobs: int,
    progress: bool = True,
    return_estimators: bool = False,
) -> HonestResult:
    """Repeated grouped nested CV of ``classifiers`` on (X, y) (see the module docstring).

    Args:
        X, y, groups: features (NaN allowed), 0/1 target, group ids (duplicates share one).
        name: label of the cohort, used for the progress bar and the result.
        classifiers: names from :data:`~bloodlib.diagnosis.models.CLASSIFIERS`.
        random_state: seed of the outer splits (``+ repeat``), inner splits and models.
        outer_repeats, outer_folds: the outer repeated k-fold.
        inner_folds: folds of the inner grid search.
        grid_size: ``"none"``, ``"small"`` or ``"full"``.
        scoring: inner grid-search scoring, e.g. ``"roc_auc"``.
        ci_level: confidence level of the intervals, e.g. 0.95.
        threshold: P(positive) threshold for accuracy, sensitivity and specificity.
        n_jobs: parallel jobs, one task per outer fold (each fits all classifiers).
        progress: show a tqdm bar over outer folds.
        return_estimators: keep every fitted outer-fold pipeline (for inspection/tests).
    """
    X = X.reset_index(drop=True)
    y = np.asarray(y).astype(int)
    groups = np.asarray(groups)
    splits = outer_splits(y, groups, repeats=outer_repeats, folds=outer_folds, random_state=random_state)
    task = delayed(_outer_task)
    kwargs = {
        "classifiers": classifiers,
        "inner_folds": inner_folds,
        "grid_size": grid_size,
        "scoring": scoring,
        "random_state": random_state,
        "threshold": threshold,
        "return_estimators": return_estimators,
    }
    results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
        task(split, X, y, groups, **kwargs) for split in splits
    )
    rows, oof, estimators = [], [], {}
    for r, o, e in tqdm(results, total=len(splits), desc=f"nested CV {name}", unit="fold", disable=not progress):
        rows.extend(r)
        oof.extend(o)
        estimators.update(e)
    order = {c: i for i, c in enumerate(classifiers)}
    folds = pd.DataFrame(rows).assign(_order=lambda d: d["classifier"].map(order))
    folds = folds.sort_values(["repeat", "fold", "_order"]).drop(columns="_order").reset_index(drop=True)
    oof_df = pd.concat(oof, ignore_index=True).sort_values(["classifier", "repeat", "row"]).reset_index(drop=True)
    settings = {
        "random_state": random_state,
        "outer_repeats": outer_repeats,
        "outer_folds": outer_folds,
        "inner_folds": inner_folds,
        "grid_size": grid_size,
        "scoring": scoring,
        "ci_level": ci_level,
        "threshold": threshold,
        "classifiers": list(classifiers),
    }
    return HonestResult(
        name=name,
        n=len(y),
        n_positive=int(y.sum()),
        settings=settings,
        folds=folds,
        summary=summarise_folds(folds, classifiers=classifiers, ci_level=ci_level),
        oof=oof_df,
        splits=splits,
        estimators=estimators if return_estimators else None,
    )


def run_honest_cohorts(
    *,
    osr: pd.DataFrame | None,
    einstein: pd.DataFrame | None,
    osr_feature_sets: list[str],
    **kwargs,
) -> dict[str, HonestResult]:
    """:func:`run_honest` on OSR for each feature set (``osr_<set>``) and on Einstein (``einstein``).

    Pass ``osr=None`` or ``einstein=None`` to skip a cohort; ``kwargs`` go to :func:`run_honest`
    (everything except X, y, groups and name).
    """
    out: dict[str, HonestResult] = {}
    if osr is not None:
        for fs in osr_feature_sets:
            X, y, g = xy_groups(osr, fs)
            out[f"osr_{fs}"] = run_honest(X, y, g, name=f"osr_{fs}", **kwargs)
    if einstein is not None:
        X, y, g = xy_groups(einstein, "einstein")
        out["einstein"] = run_honest(X, y, g, name="einstein", **kwargs)
    return out


#: The name of the per-fold, inner-loop choice among the classifiers in tables and summaries.
INNER_SELECTED = "selected_in_inner_cv"


def inner_selected_folds(result: HonestResult) -> pd.DataFrame:
    """Per outer fold, the row of :attr:`HonestResult.folds` of the classifier with the best inner-CV
    score (``inner_score``, the grid search's best on the outer-training part): a choice among the
    classifiers made without looking at the outer test fold, so its outer metrics estimate the whole
    procedure "tune every classifier, keep the best" without the optimism of picking the best outer
    mean afterwards. Ties, and folds without inner scores (grid ``none``), go to the first classifier
    in the order of the run.
    """
    order = {name: i for i, name in enumerate(result.settings["classifiers"])}
    folds = result.folds.assign(
        _score=result.folds["inner_score"].fillna(-np.inf), _order=result.folds["classifier"].map(order)
    )
    ranked = folds.sort_values(["repeat", "fold", "_score", "_order"], ascending=[True, True, False, True])
    chosen = ranked.groupby(["repeat", "fold"], sort=True).head(1)
    return chosen.drop(columns=["_score", "_order"]).reset_index(drop=True)


def inner_selected_summary(result: HonestResult) -> pd.DataFrame:
    """:func:`summarise_folds` of :func:`inner_selected_folds` (one row, classifier :data:`INNER_SELECTED`)."""
    chosen = inner_selected_folds(result).assign(classifier=INNER_SELECTED)
    return summarise_folds(chosen, classifiers=[INNER_SELECTED], ci_level=result.settings["ci_level"])


def inner_selected_oof(result: HonestResult) -> pd.DataFrame:
    """The out-of-fold predictions (:attr:`HonestResult.oof`) of the classifier chosen in each outer fold."""
    chosen = inner_selected_folds(result)[["repeat", "fold", "classifier"]]
    return result.oof.merge(chosen, on=["repeat", "fold", "classifier"]).reset_index(drop=True)


def params_per_fold(result: HonestResult, classifier: str) -> pd.DataFrame:
    """The hyper-parameters the inner grid search chose for ``classifier`` in each outer fold:
    ``repeat, fold, best_params, inner_score``."""
    if classifier not in result.settings["classifiers"]:
        raise ValueError(f"{classifier!r} was not run; classifiers: {result.settings['classifiers']}")
    part = result.folds[result.folds["classifier"] == classifier]
    return part[["repeat", "fold", "best_params", "inner_score"]].reset_index(drop=True)
