"""Notebook 03's protocols kept between renders (:func:`bloodlib.resultcache.cached_tables`).

The faithful protocol over many splits and the honest nested CV of every cohort take minutes on two
cores and train no network; what they return -- tables of numbers and text, and the outer folds' row
indices -- is kept under a key of their parameters, a digest of the cohort's values and the
:mod:`bloodlib.diagnosis` code, so a re-render with the same parameters, data and code shows the
same numbers without computing them again. The single faithful split is always run (its fitted
models are not kept: they would need pickle).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pandas as pd

from bloodlib.diagnosis.faithful import FaithfulResult, faithful_over_seeds
from bloodlib.diagnosis.honest import HonestResult, run_honest_cohorts
from bloodlib.modelcache import source_digest
from bloodlib.resultcache import Table, cached_tables

TASK = "covid_diagnosis"


def frame_digest(frame: pd.DataFrame | None) -> str | None:
    """sha256 of a cohort's values and index (None for no cohort)."""
    if frame is None:
        return None
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes()).hexdigest()


def honest_tables(results: dict[str, HonestResult]) -> dict[str, Table]:
    """The honest results as tables: per cohort ``<name>/info`` (n, positives, settings as JSON),
    ``folds``, ``summary``, ``oof``, ``splits`` (repeat, fold, train rows, test rows per outer fold)
    and ``rows`` (the folds' row indices, train then test, one fold after the other)."""
    tables: dict[str, Table] = {}
    for cohort, result in results.items():
        if result.estimators is not None:
            raise ValueError(f"{cohort}: results with fitted estimators cannot be kept")
        info = {"name": result.name, "n": result.n, "n_positive": result.n_positive}
        tables[f"{cohort}/info"] = pd.DataFrame([{**info, "settings": json.dumps(result.settings)}])
        tables[f"{cohort}/folds"], tables[f"{cohort}/summary"] = result.folds, result.summary
        tables[f"{cohort}/oof"] = result.oof
        tables[f"{cohort}/splits"] = np.array(
            [[r, f, len(tr), len(te)] for r, f, tr, te in result.splits], dtype=np.int64
        )
        tables[f"{cohort}/rows"] = np.concatenate([np.r_[tr, te] for _, _, tr, te in result.splits]).astype(np.int64)
    return tables


def honest_from_tables(tables: dict[str, Table]) -> dict[str, HonestResult]:
    """The inverse of :func:`honest_tables`."""
    out = {}
    for key in tables:
        if not key.endswith("/info"):
            continue
        cohort = key[: -len("/info")]
        info = tables[key].iloc[0]
        splits, rows, start = [], tables[f"{cohort}/rows"], 0
        for repeat, fold, n_train, n_test in tables[f"{cohort}/splits"].tolist():
            train, test = rows[start : start + n_train], rows[start + n_train : start + n_train + n_test]
            splits.append((repeat, fold, train, test))
            start += n_train + n_test
        out[cohort] = HonestResult(
            name=str(info["name"]),
            n=int(info["n"]),
            n_positive=int(info["n_positive"]),
            settings=json.loads(info["settings"]),
            folds=tables[f"{cohort}/folds"],
            summary=tables[f"{cohort}/summary"],
            oof=tables[f"{cohort}/oof"],
            splits=splits,
        )
    return out


def kept_over_seeds(osr: pd.DataFrame, *, seeds: int, done: FaithfulResult, **kwargs: Any) -> pd.DataFrame:
    """:func:`~bloodlib.diagnosis.faithful.faithful_over_seeds`, kept between renders."""
    inputs = {"kwargs": kwargs, "seeds": seeds, "osr": frame_digest(osr), "code": source_digest("bloodlib.diagnosis")}

    def compute() -> dict[str, Table]:
        return {"over_seeds": faithful_over_seeds(osr, seeds=seeds, done=done, **kwargs)}

    return cached_tables(f"{TASK}/over_seeds", inputs, compute)["over_seeds"]


def kept_honest(
    *, osr: pd.DataFrame | None, einstein: pd.DataFrame | None, osr_feature_sets: list[str], **kwargs: Any
) -> dict[str, HonestResult]:
    """:func:`~bloodlib.diagnosis.honest.run_honest_cohorts`, kept between renders."""
    inputs = {
        "kwargs": kwargs,
        "osr_feature_sets": osr_feature_sets,
        "osr": frame_digest(osr),
        "einstein": frame_digest(einstein),
        "code": source_digest("bloodlib.diagnosis"),
    }

    def compute() -> dict[str, Table]:
        return honest_tables(
            run_honest_cohorts(osr=osr, einstein=einstein, osr_feature_sets=osr_feature_sets, **kwargs)
        )

    return honest_from_tables(cached_tables(f"{TASK}/honest", inputs, compute))
