"""Parameters of the Task 3 notebook (``notebooks/03_covid_diagnosis.ipynb``).

Every profile file ``params/<profile>/03_covid_diagnosis.yaml`` states every field below
(flat ``key: value``, no defaults), so a profile is complete on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bloodlib.diagnosis.data import FEATURE_SETS
from bloodlib.diagnosis.models import CLASSIFIERS, GRID_SIZES
from bloodlib.params import check_values


@dataclass(frozen=True)
class CovidDiagnosisParams:
    """Flat, literal parameters of the COVID-19 diagnosis notebook."""

    #: Seed of every split, CV shuffle and classifier.
    random_state: int
    #: Classifiers to run (both protocols), names from ``models.CLASSIFIERS``.
    classifiers: list[str]
    #: Hyper-parameter grid size for both protocols: "none", "small" or "full".
    grid_size: str
    #: Parallel jobs (faithful: one task per classifier; honest: one per outer fold); -1 = all cores.
    n_jobs: int

    #: Faithful protocol: feature set for the complete-case 75/25 split (paper: "table1").
    faithful_feature_set: str
    #: Faithful protocol: test fraction of the stratified split (paper: 0.25).
    faithful_test_size: float
    #: Faithful protocol: folds of the grid-search CV on the training part.
    faithful_cv_folds: int
    #: Faithful protocol: grid-search scoring ("accuracy" = scikit-learn's default).
    faithful_scoring: str
    #: Faithful protocol: classifier whose test confusion matrix is drawn (paper Fig. 11: "gaussian_process").
    confusion_matrix_classifier: str
    #: Faithful protocol: also run it on this many random 75/25 splits (seeds random_state, +1, ...) to show
    #: how far one split moves its numbers (1 = only the one split).
    faithful_seeds: int

    #: Honest protocol: OSR feature sets to evaluate ("table1", "extended").
    honest_feature_sets: list[str]
    #: Honest protocol: also evaluate the Einstein cohort.
    run_einstein: bool
    #: Einstein: keep only rows with all ten CBC columns (513) instead of all with a CBC (602).
    einstein_complete_cbc: bool
    #: Honest protocol: repeats of the outer stratified group k-fold.
    outer_repeats: int
    #: Honest protocol: folds of the outer CV.
    outer_folds: int
    #: Honest protocol: folds of the inner grid-search CV (on the outer-training part only).
    inner_folds: int
    #: Honest protocol: inner grid-search scoring (e.g. "roc_auc").
    honest_scoring: str
    #: Honest protocol: confidence level of the corrected-t intervals.
    ci_level: float
    #: Honest protocol: P(positive) threshold for accuracy, sensitivity and specificity.
    decision_threshold: float
    #: Calibration plot: number of probability bins.
    calibration_bins: int

    def __post_init__(self) -> None:
        """Value checks (types, missing and unknown keys are checked by :func:`bloodlib.params.build`)."""
        checks = [
            (set(self.classifiers) <= set(CLASSIFIERS), f"classifiers must be from {list(CLASSIFIERS)}"),
            (self.grid_size in GRID_SIZES, f"grid_size must be one of {list(GRID_SIZES)}"),
            (self.n_jobs != 0, "n_jobs must not be 0"),
            (self.faithful_feature_set in FEATURE_SETS, f"faithful_feature_set must be one of {sorted(FEATURE_SETS)}"),
            (0 < self.faithful_test_size < 1, "faithful_test_size must be in (0, 1)"),
            (self.faithful_cv_folds >= 2, "faithful_cv_folds must be >= 2"),
            (self.faithful_seeds >= 1, "faithful_seeds must be >= 1"),
            (
                self.confusion_matrix_classifier in self.classifiers,
                "confusion_matrix_classifier must be in classifiers",
            ),
            (
                set(self.honest_feature_sets) <= {"table1", "extended"},
                "honest_feature_sets must be from table1, extended",
            ),
            (self.outer_repeats >= 1, "outer_repeats must be >= 1"),
            (self.outer_folds >= 2, "outer_folds must be >= 2"),
            (self.inner_folds >= 2, "inner_folds must be >= 2"),
            (0 < self.ci_level < 1, "ci_level must be in (0, 1)"),
            (0 < self.decision_threshold < 1, "decision_threshold must be in (0, 1)"),
            (self.calibration_bins >= 2, "calibration_bins must be >= 2"),
        ]
        check_values("CovidDiagnosisParams", checks)

    def honest_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~bloodlib.diagnosis.honest.run_honest` taken from these parameters."""
        return {
            "classifiers": list(self.classifiers),
            "random_state": self.random_state,
            "outer_repeats": self.outer_repeats,
            "outer_folds": self.outer_folds,
            "inner_folds": self.inner_folds,
            "grid_size": self.grid_size,
            "scoring": self.honest_scoring,
            "ci_level": self.ci_level,
            "threshold": self.decision_threshold,
            "n_jobs": self.n_jobs,
        }

    def faithful_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~bloodlib.diagnosis.faithful.run_faithful` taken from these parameters."""
        return {
            "feature_set": self.faithful_feature_set,
            "classifiers": list(self.classifiers),
            "random_state": self.random_state,
            "test_size": self.faithful_test_size,
            "cv_folds": self.faithful_cv_folds,
            "grid_size": self.grid_size,
            "scoring": self.faithful_scoring,
            "n_jobs": self.n_jobs,
        }
