"""Data sets: registry, resolution (``BLOODLIB_DATA`` > user cache > download), verification."""

from bloodlib.data.registry import (
    DATASETS,
    DataNotFoundError,
    DatasetSpec,
    VerifyResult,
    fetch,
    get_spec,
    locate,
    verify,
)

__all__ = [
    "DATASETS",
    "DataNotFoundError",
    "DatasetSpec",
    "VerifyResult",
    "fetch",
    "get_spec",
    "locate",
    "verify",
]
