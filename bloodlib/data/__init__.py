"""Data sets: registry, resolution (``BLOODLIB_DATA`` > user cache > download), verification."""

from bloodlib.data.registry import (
    DATASETS,
    DataMismatchError,
    DataNotFoundError,
    DatasetSpec,
    VerifyResult,
    fetch,
    fingerprint,
    get_spec,
    locate,
    repair,
    verified_checksums,
    verify,
)

__all__ = [
    "DATASETS",
    "DataMismatchError",
    "DataNotFoundError",
    "DatasetSpec",
    "VerifyResult",
    "fetch",
    "fingerprint",
    "get_spec",
    "locate",
    "repair",
    "verified_checksums",
    "verify",
]
