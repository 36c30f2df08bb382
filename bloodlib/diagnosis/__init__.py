"""Task 3: COVID-19 diagnosis from routine blood counts (OSR and Einstein cohorts).

Modules, one concern each:

- :mod:`~bloodlib.diagnosis.data` -- loaders (:func:`load_osr`, :func:`load_einstein`), feature sets
- :mod:`~bloodlib.diagnosis.models` -- the nine classifiers as pipelines, their grids
- :mod:`~bloodlib.diagnosis.faithful` -- the paper's 75/25 protocol (Table 4), tuned on train only
- :mod:`~bloodlib.diagnosis.honest` -- repeated grouped nested CV with confidence intervals
- :mod:`~bloodlib.diagnosis.plots` -- confusion matrix, ROC and calibration figures
- :mod:`~bloodlib.diagnosis.params` -- :class:`CovidDiagnosisParams`, the notebook's parameters
- :mod:`~bloodlib.diagnosis.results` -- run everything, compare with the paper, ``metrics.json``
"""

from bloodlib.diagnosis.data import (
    FEATURE_SETS,
    duplicate_groups,
    feature_columns,
    load_einstein,
    load_osr,
    xy_groups,
)
from bloodlib.diagnosis.faithful import FaithfulResult, run_faithful
from bloodlib.diagnosis.honest import (
    HonestResult,
    corrected_t_interval,
    outer_splits,
    run_honest,
    run_honest_cohorts,
)
from bloodlib.diagnosis.models import (
    CLASSIFIERS,
    DISPLAY_NAMES,
    make_classifier,
    param_grid,
)
from bloodlib.diagnosis.params import CovidDiagnosisParams
from bloodlib.diagnosis.plots import (
    calibration_figure,
    confusion_matrix_figure,
    mean_roc,
    roc_figure,
)
from bloodlib.diagnosis.results import (
    CovidDiagnosisResults,
    compare_with_paper,
    metrics_dict,
    run_covid_diagnosis,
    summary_rows,
)

__all__ = [
    "CLASSIFIERS",
    "DISPLAY_NAMES",
    "FEATURE_SETS",
    "CovidDiagnosisParams",
    "CovidDiagnosisResults",
    "FaithfulResult",
    "HonestResult",
    "calibration_figure",
    "compare_with_paper",
    "confusion_matrix_figure",
    "corrected_t_interval",
    "duplicate_groups",
    "feature_columns",
    "load_einstein",
    "load_osr",
    "make_classifier",
    "mean_roc",
    "metrics_dict",
    "outer_splits",
    "param_grid",
    "roc_figure",
    "run_covid_diagnosis",
    "run_faithful",
    "run_honest",
    "run_honest_cohorts",
    "summary_rows",
    "xy_groups",
]
