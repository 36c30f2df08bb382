"""Counting scikit-learn ``ConvergenceWarning``s instead of flooding the notebook with them."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sklearn.exceptions import ConvergenceWarning


@contextmanager
def count_convergence_warnings() -> Iterator[Callable[[], int]]:
    """Context manager that swallows and counts ``ConvergenceWarning``s raised inside it.

    Other warnings are re-emitted unchanged when the block ends. Yields a function that
    returns the count so far. Works in the process it runs in (use it inside joblib tasks).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        def n() -> int:
            return sum(issubclass(w.category, ConvergenceWarning) for w in caught)

        yield n
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
