"""The nine classifier pipelines and their grids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from bloodlib.diagnosis.models import CLASSIFIERS, DISPLAY_NAMES, make_classifier, param_grid

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Tiny models: multi-threaded BLAS only adds contention on a shared machine."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def problem() -> tuple[pd.DataFrame, np.ndarray]:
    X, y = make_classification(n_samples=120, n_features=6, n_informative=4, random_state=0)
    X = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    X.iloc[::7, 2] = np.nan  # missing values must be handled inside the pipeline
    return X, y


def test_nine_classifiers():
    assert len(CLASSIFIERS) == 9 == len(set(CLASSIFIERS))
    assert set(DISPLAY_NAMES) == set(CLASSIFIERS)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_pipeline_fits_and_predicts_probabilities(name, problem):
    X, y = problem
    model = make_classifier(name, random_state=0)
    assert isinstance(model, Pipeline)
    assert [step for step, _ in model.steps] == ["impute", "scale", "clf"]
    model.fit(X.iloc[:90], y[:90])
    proba = model.predict_proba(X.iloc[90:])
    assert proba.shape == (30, 2)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert roc_auc_score(y[90:], proba[:, 1]) > 0.6  # learns something on an easy problem
    assert set(model.predict(X.iloc[90:])) <= {0, 1}


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_fixed_random_state_is_reproducible(name, problem):
    X, y = problem
    p1 = make_classifier(name, random_state=3).fit(X, y).predict_proba(X)
    p2 = make_classifier(name, random_state=3).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(p1, p2)


@pytest.mark.parametrize("size", ["small", "full"])
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_grid_keys_are_pipeline_parameters(name, size):
    grid = param_grid(name, size=size)
    assert grid, "small/full grids are not empty"
    model = make_classifier(name, random_state=0)
    valid = model.get_params(deep=True)
    for key, values in grid.items():
        assert key in valid, key
        assert len(values) >= 1
        model.set_params(**{key: values[0]})
    assert param_grid(name, size="none") == {}


def test_knn_default_and_mlp_architecture_follow_the_paper():
    assert make_classifier("knn", random_state=0).named_steps["clf"].n_neighbors == 10
    assert 10 in param_grid("knn", size="small")["clf__n_neighbors"]
    assert make_classifier("mlp", random_state=0).named_steps["clf"].hidden_layer_sizes == (20, 40, 20)


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="valid names.*logistic_regression"):
        make_classifier("naive_bayes", random_state=0)
    with pytest.raises(ValueError, match="valid names"):
        param_grid("naive_bayes", size="small")
    with pytest.raises(ValueError, match="valid sizes"):
        param_grid("knn", size="huge")
