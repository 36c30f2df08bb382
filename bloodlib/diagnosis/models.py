"""The paper's nine classifiers as scikit-learn pipelines, with small and full grids.

Every model is a :class:`~sklearn.pipeline.Pipeline` with three named steps::

    impute  SimpleImputer(strategy="median", add_indicator=True)
    scale   StandardScaler()
    clf     the classifier

so imputation and scaling are fitted inside every ``fit`` call, i.e. only on the data
the pipeline is trained on (never on a test fold). The missing-value indicator columns
are added because missingness is informative in OSR (a differential count or the liver
panel was ordered or not), and that information is available at prediction time. On
complete data no indicator column is added.

The nine classifiers follow scikit-learn's "Classifier comparison" example, which the
paper's list mirrors (with logistic regression added): kNN with k = 10, an MLP with
hidden layers (20, 40, 20), etc. Each has a fixed ``random_state`` where it has one.

Probabilities: every pipeline has ``predict_proba``. Both SVMs are wrapped in
``CalibratedClassifierCV(SVC(...), method="sigmoid", ensemble=False)`` -- Platt scaling
fitted on internal 5-fold cross-validated decision values of the training data, then one
SVC refitted on all of it. (``SVC(probability=True)`` does the same but is deprecated
since scikit-learn 1.9.)

Gaussian process: the kernel ``ConstantKernel(a) * RBF(l)`` has FIXED hyper-parameters
(``optimizer=None``) that the grid search chooses, like every other model's. Maximising
the marginal likelihood instead (scikit-learn's default) costs ~1 CPU-second per fit on
the Einstein cohort (~20x a fixed-kernel fit), too slow for nested CV on 2 cores.

MLP: ``solver="lbfgs"`` (scikit-learn's advice for small data sets), ``max_iter=200``
(scikit-learn's default); runs that stop at ``max_iter`` are counted (``n_convergence_warnings``), not hidden. The
grid stops at ``alpha=3``: with ``alpha=10`` the (20, 40, 20) ReLU network on ~150 rows
collapses to a constant output (all weights shrunk to zero).

Random forest (100 trees) and AdaBoost (50 stumps) use scikit-learn's default sizes; the
full grid also tries more trees.

Grids (:func:`param_grid`): ``"none"`` = the defaults below only, ``"small"`` = a few
points around them (cheap, for the cpu profile), ``"full"`` = a wider grid (the paper
profile). Grid keys are pipeline parameter names (``clf__C``, ...).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import AdaBoostClassifier, RandomForestClassifier
from sklearn.gaussian_process import GaussianProcessClassifier
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

#: The nine classifiers, in the order of the paper's Table 4.
CLASSIFIERS: tuple[str, ...] = (
    "logistic_regression",
    "knn",
    "linear_svm",
    "rbf_svm",
    "gaussian_process",
    "decision_tree",
    "random_forest",
    "mlp",
    "adaboost",
)

#: Display names as in the paper's Table 4, except k-NN: the paper's is 10-NN, ours tunes k (the
#: grid includes 10), so the name says so.
DISPLAY_NAMES: dict[str, str] = {
    "logistic_regression": "Logistic Regression",
    "knn": "k-Nearest Neighbors (k tuned; paper: 10)",
    "linear_svm": "Linear SVM",
    "rbf_svm": "NonLinear SVM",
    "gaussian_process": "Gaussian Process Classifier",
    "decision_tree": "Decision Tree",
    "random_forest": "Random Forest",
    "mlp": "MLP",
    "adaboost": "AdaBoost",
}

GRID_SIZES: tuple[str, ...] = ("none", "small", "full")


def _check_name(name: str) -> None:
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {name!r}; valid names: {list(CLASSIFIERS)}")


def _gp_kernel(kind: str, amplitude: float, length_scale: float) -> Any:
    """``ConstantKernel(amplitude) * <kind>(length_scale)`` with fixed hyper-parameters."""
    base = {"rbf": RBF(length_scale), "matern15": Matern(length_scale, nu=1.5)}[kind]
    return ConstantKernel(amplitude) * base


def _gp_kernels(kinds: list[str], amplitudes: list[float], length_scales: list[float]) -> list[Any]:
    return [_gp_kernel(k, a, ls) for k in kinds for a in amplitudes for ls in length_scales]


def _classifier(name: str, random_state: int) -> Any:
    """The bare estimator (defaults) for ``name``."""
    if name == "logistic_regression":
        return LogisticRegression(C=1.0, max_iter=5000)
    if name == "knn":
        return KNeighborsClassifier(n_neighbors=10)
    if name == "linear_svm":
        return CalibratedClassifierCV(SVC(kernel="linear", C=0.1), method="sigmoid", ensemble=False, cv=5)
    if name == "rbf_svm":
        return CalibratedClassifierCV(SVC(kernel="rbf", C=1.0, gamma="scale"), method="sigmoid", ensemble=False, cv=5)
    if name == "gaussian_process":
        return GaussianProcessClassifier(kernel=_gp_kernel("rbf", 1.0, 3.0), optimizer=None, random_state=random_state)
    if name == "decision_tree":
        return DecisionTreeClassifier(max_depth=5, random_state=random_state)
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=100, random_state=random_state, n_jobs=1)
    if name == "mlp":
        return MLPClassifier(
            hidden_layer_sizes=(20, 40, 20), solver="lbfgs", alpha=1.0, max_iter=200, random_state=random_state
        )
    if name == "adaboost":
        return AdaBoostClassifier(n_estimators=50, learning_rate=1.0, random_state=random_state)
    _check_name(name)
    raise AssertionError("unreachable")


def make_classifier(name: str, *, random_state: int) -> Pipeline:
    """Pipeline ``impute -> scale -> clf`` for classifier ``name`` (one of :data:`CLASSIFIERS`).

    Raises:
        ValueError: for an unknown name (the message lists the valid names).
    """
    _check_name(name)
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", add_indicator=True)),
            ("scale", StandardScaler()),
            ("clf", _classifier(name, random_state)),
        ]
    )


def param_grid(name: str, *, size: str) -> dict[str, list[Any]]:
    """Hyper-parameter grid of classifier ``name`` for :class:`~sklearn.model_selection.GridSearchCV`.

    Args:
        name: one of :data:`CLASSIFIERS`.
        size: ``"none"`` (empty grid: use the defaults of :func:`make_classifier`),
            ``"small"`` or ``"full"``.

    Raises:
        ValueError: for an unknown classifier name or grid size.
    """
    _check_name(name)
    if size not in GRID_SIZES:
        raise ValueError(f"unknown grid size {size!r}; valid sizes: {list(GRID_SIZES)}")
    if size == "none":
        return {}
    small = size == "small"
    svm_c = "clf__estimator__C"
    grids: dict[str, dict[str, list[Any]]] = {
        "logistic_regression": {"clf__C": [0.01, 0.1, 1.0, 10.0] if small else list(np.logspace(-3, 3, 13))},
        "knn": (
            {"clf__n_neighbors": [5, 10, 15, 20]}
            if small
            else {"clf__n_neighbors": [3, 5, 7, 10, 15, 20, 25, 30], "clf__weights": ["uniform", "distance"]}
        ),
        "linear_svm": {svm_c: [0.01, 0.1, 1.0] if small else list(np.logspace(-3, 2, 11))},
        "rbf_svm": (
            {svm_c: [1.0, 10.0], "clf__estimator__gamma": ["scale", 0.01]}
            if small
            else {svm_c: list(np.logspace(-2, 3, 6)), "clf__estimator__gamma": ["scale", 0.001, 0.01, 0.1, 1.0]}
        ),
        "gaussian_process": {
            "clf__kernel": (
                _gp_kernels(["rbf"], [1.0, 10.0], [1.0, 3.0, 10.0])
                if small
                else _gp_kernels(["rbf", "matern15"], [1.0, 3.0, 10.0, 30.0], [1.0, 2.0, 3.0, 5.0, 10.0])
            )
        },
        "decision_tree": (
            {"clf__max_depth": [2, 3, 5], "clf__min_samples_leaf": [1, 5]}
            if small
            else {
                "clf__max_depth": [2, 3, 4, 5, 6, 8, None],
                "clf__min_samples_leaf": [1, 2, 5, 10],
                "clf__criterion": ["gini", "entropy"],
            }
        ),
        "random_forest": (
            {"clf__min_samples_leaf": [1, 5]}
            if small
            else {
                "clf__n_estimators": [100, 300],
                "clf__max_depth": [None, 5, 10],
                "clf__min_samples_leaf": [1, 3, 5],
                "clf__max_features": ["sqrt", 0.5],
            }
        ),
        "mlp": (
            {"clf__alpha": [0.1, 1.0]}
            if small
            else {"clf__alpha": [0.001, 0.01, 0.1, 0.3, 1.0, 3.0], "clf__activation": ["relu", "tanh"]}
        ),
        "adaboost": (
            {"clf__learning_rate": [0.1, 0.5, 1.0]}
            if small
            else {"clf__n_estimators": [50, 100, 200, 400], "clf__learning_rate": [0.05, 0.1, 0.5, 1.0]}
        ),
    }
    return grids[name]
