"""Notebook parameters and the three profiles.

Every notebook has one schema: a frozen dataclass of flat literal fields with no
defaults, registered in :data:`SCHEMAS` by notebook name. A profile is a folder
``params/<profile>/`` holding one ``<notebook>.yaml`` per notebook and a
``profile.yaml`` with the runner's settings (execution timeout):

- ``quick``: CI smoke runs, seconds to minutes;
- ``cpu``: the default, real data and real training on 2 CPU cores, minutes;
- ``paper``: the seed paper's exact recipe, for a GPU.

Profiles differ in sizes and budgets only; every profile runs the same code.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import types
import typing
from pathlib import Path
from typing import Any

import yaml

PROFILES = ("quick", "cpu", "paper")
DEFAULT_PROFILE = "cpu"

#: arithmetic of training and inference: float32, or bfloat16 under CPU/CUDA autocast (the
#: ``precision`` parameter of notebooks 01, 02, 04 and 05; :func:`bloodlib.torchutil.effective_precision`)
PRECISIONS = ("float32", "bfloat16")

# notebook name -> "module:ClassName" of its parameter schema (imported lazily so
# that loading the COVID parameters does not import torch).
SCHEMAS: dict[str, str] = {
    "01_detection": "bloodlib.detection.params:DetectionParams",
    "02_wbc_subtypes": "bloodlib.classification.params:WbcSubtypesParams",
    "03_covid_diagnosis": "bloodlib.diagnosis.params:CovidDiagnosisParams",
    "04_pipeline": "bloodlib.pipeline.params:PipelineParams",
    "05_generalisation": "bloodlib.general.params:GeneralParams",
}

# Parameters the report runner injects into every notebook besides its schema.
RUNNER_PARAMETERS = ("profile", "report_dir")


class ParamsError(ValueError):
    """A parameter file is missing, malformed, or does not match its schema."""


@dataclasses.dataclass(frozen=True)
class ProfileSettings:
    """Runner settings of one profile (``params/<profile>/profile.yaml``)."""

    description: str
    timeout_s: int  # execution timeout per notebook cell, seconds


def schema_for(notebook: str) -> type:
    """The parameter dataclass of ``notebook`` (e.g. ``"03_covid_diagnosis"``)."""
    if notebook not in SCHEMAS:
        raise ParamsError(f"no parameter schema for notebook {notebook!r}; known: {sorted(SCHEMAS)}")
    module_name, class_name = SCHEMAS[notebook].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ParamsError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return profile


def params_path(notebook: str, profile: str, root: Path) -> Path:
    return root / "params" / check_profile(profile) / f"{notebook}.yaml"


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping; errors name the file."""
    if not path.is_file():
        raise ParamsError(f"parameter file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    return data


def _matches(value: Any, annotation: Any) -> bool:
    """Whether a YAML value fits a (simple) type annotation."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (list, tuple):
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        return isinstance(value, list) and all(_matches(v, item_type) for v in value)
    if origin is dict:
        key_type, value_type = typing.get_args(annotation) or (Any, Any)
        return isinstance(value, dict) and all(
            _matches(k, key_type) and _matches(v, value_type) for k, v in value.items()
        )
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def precision_check(precision: str) -> tuple[bool, str]:
    """The :func:`check_values` entry of a ``precision`` parameter (one of :data:`PRECISIONS`)."""
    return precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"


def check_values(schema: str, checks: list[tuple[bool, str]]) -> None:
    """A schema's value checks (``__post_init__``): each ``(ok, message)``; every failed one is named.

    Raises:
        ValueError: ``"invalid <schema>: <message>; <message>"`` when any check fails.
    """
    problems = [message for ok, message in checks if not ok]
    if problems:
        raise ValueError(f"invalid {schema}: " + "; ".join(problems))


def build(schema: type, values: dict[str, Any], source: str) -> Any:
    """Validate ``values`` against dataclass ``schema``; ``source`` names the origin in errors."""
    hints = typing.get_type_hints(schema)
    fields = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ParamsError(f"{source}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}")
    missing = sorted(fields - set(values))
    if missing:
        raise ParamsError(f"{source}: missing key(s) {', '.join(missing)}")
    for name in sorted(fields):
        if not _matches(values[name], hints[name]):
            raise ParamsError(
                f"{source}: key {name!r} should be {_type_name(hints[name])}, "
                f"got {values[name]!r} ({type(values[name]).__name__})"
            )
    converted = {
        name: tuple(value) if typing.get_origin(hints[name]) is tuple else value for name, value in values.items()
    }
    return schema(**converted)


def load_params(notebook: str, profile: str = DEFAULT_PROFILE, root: Path | None = None) -> Any:
    """Load and validate ``params/<profile>/<notebook>.yaml``.

    Raises:
        ParamsError: missing file, unknown key, missing key or wrong type; the message
            names the file and the key.
    """
    from bloodlib.paths import project_root

    path = params_path(notebook, profile, root or project_root())
    return build(schema_for(notebook), read_yaml_mapping(path), str(path))


def params_from_namespace(notebook: str, namespace: dict[str, Any]) -> Any:
    """Build a notebook's schema from its parameter variables (e.g. ``globals()`` in the notebook).

    Only the schema's fields are taken; a missing or mistyped one is an error naming it.
    """
    schema = schema_for(notebook)
    names = {f.name for f in dataclasses.fields(schema)}
    values = {name: namespace[name] for name in names if name in namespace}
    return build(schema, values, f"parameters of notebook {notebook}")


def load_profile_settings(profile: str = DEFAULT_PROFILE, root: Path | None = None) -> ProfileSettings:
    """Load ``params/<profile>/profile.yaml``."""
    from bloodlib.paths import project_root

    path = (root or project_root()) / "params" / check_profile(profile) / "profile.yaml"
    return build(ProfileSettings, read_yaml_mapping(path), str(path))


def values_for(target: Any, params: Any, *, prefix: str = "", **given: Any) -> dict[str, Any]:
    """The keyword arguments of ``target`` (a dataclass or a function) taken from a params object.

    Each keyword ``name`` of ``target`` takes ``given[name]`` if given, else ``params.<prefix><name>``
    if the params have it; others keep ``target``'s default. The one way parameters become configs.

    Raises:
        ValueError: ``given`` names a keyword ``target`` does not take.
    """
    if dataclasses.is_dataclass(target):
        names = [f.name for f in dataclasses.fields(target)]
    else:
        names = list(inspect.signature(target).parameters)
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"{getattr(target, '__name__', target)} takes no keyword(s) {', '.join(unknown)}")
    values = {name: getattr(params, prefix + name) for name in names if hasattr(params, prefix + name)}
    return {**values, **given}


def config_from(target: Any, params: Any, *, prefix: str = "", **given: Any) -> Any:
    """``target(**values_for(target, params, prefix=prefix, **given))``: a config built from parameters."""
    return target(**values_for(target, params, prefix=prefix, **given))


def as_dict(params: Any) -> dict[str, Any]:
    """Plain dict of a params dataclass, tuples as lists (papermill/JSON friendly)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()}


# notebook name -> the registered data sets it reads (checksums go into the report's provenance).
DATASETS: dict[str, tuple[str, ...]] = {
    "01_detection": ("BCCD",),
    "02_wbc_subtypes": ("blood-cells", "BCCD"),
    "03_covid_diagnosis": ("covid-osr", "covid-einstein"),
    "04_pipeline": ("BCCD", "blood-cells", "covid-osr", "bccd-relabel", "txl-pbc", "pbc"),
    "05_generalisation": ("BCCD", "bccd-relabel", "txl-pbc", "blood-cells", "pbc"),
}

# Notebooks whose trained models a notebook reuses from the model cache: the report runner starts
# it only after them (``bloodlib report --jobs N``).
DEPENDS: dict[str, tuple[str, ...]] = {
    "04_pipeline": ("01_detection", "02_wbc_subtypes", "05_generalisation"),
}
