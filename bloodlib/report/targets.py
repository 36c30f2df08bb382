"""Targets a report checks its headline numbers against, from ``params/<profile>/targets.yaml``.

Targets are project decisions, not library code: each profile's file lists, per notebook, the
value a headline number must reach::

    01_detection:
      - {target: best mAP@0.5, metric: best_mAP50, op: ">=", value: 0.90}

The notebook computes its headline values (a dict keyed by ``metric``) and
:func:`targets_table` compares them with the targets it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bloodlib.params import ParamsError, check_profile, read_yaml_mapping

#: The comparisons a target can ask for.
OPERATORS = (">=", "<=")


@dataclass(frozen=True)
class Target:
    """``metric`` (a key of the headline values) must be ``op`` ``value``; ``text`` describes it."""

    text: str
    metric: str
    op: str
    value: float

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise ValueError(f"target {self.text!r}: op must be one of {', '.join(OPERATORS)}, got {self.op!r}")
        if not isinstance(self.value, (int, float)) or isinstance(self.value, bool) or math.isnan(self.value):
            raise ValueError(f"target {self.text!r}: value must be a number, got {self.value!r}")

    def met(self, reached: float) -> bool:
        """Whether ``reached`` meets the target."""
        return reached >= self.value if self.op == ">=" else reached <= self.value


def targets_path(profile: str, root: Path | None = None) -> Path:
    """``params/<profile>/targets.yaml`` under ``root`` (default: the project root)."""
    from bloodlib.paths import project_root

    return (root or project_root()) / "params" / check_profile(profile) / "targets.yaml"


def load_targets(notebook: str, profile: str, root: Path | None = None) -> tuple[Target, ...]:
    """The targets of ``notebook`` in ``params/<profile>/targets.yaml`` (none if it lists none).

    Raises:
        ParamsError: the file is missing or malformed, or an entry lacks a key or has an unknown one.
    """
    path = targets_path(profile, root)
    entries = read_yaml_mapping(path).get(notebook) or []
    if not isinstance(entries, list):
        raise ParamsError(f"{path}: {notebook} should be a list of targets, got {type(entries).__name__}")
    keys = {"target", "metric", "op", "value"}
    targets = []
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != keys:
            raise ParamsError(f"{path}: {notebook}: each target needs exactly the keys {sorted(keys)}, got {entry!r}")
        try:
            targets.append(Target(str(entry["target"]), str(entry["metric"]), entry["op"], entry["value"]))
        except ValueError as err:
            raise ParamsError(f"{path}: {notebook}: {err}") from err
    return tuple(targets)


def targets_table(values: dict[str, Any], targets: tuple[Target, ...]) -> pd.DataFrame:
    """Each target with the value reached (``values[target.metric]``) and whether it is met.

    Raises:
        ValueError: ``values`` has no value for a target's metric.
    """
    missing = [t.metric for t in targets if t.metric not in values]
    if missing:
        raise ValueError(f"values lack the target metric(s) {', '.join(missing)}; they have {', '.join(values)}")
    rows = []
    for target in targets:
        reached = float(values[target.metric])
        rows.append(
            {"target": f"{target.text} {target.op} {target.value:g}", "reached": reached, "met": target.met(reached)}
        )
    return pd.DataFrame(rows, columns=["target", "reached", "met"])
