"""The pipeline's trained models, resolved through the trained-model cache.

The detector is Task 1's SSD300 (``detection/ssd_<backbone>/<key>``) and the WBC classifier
Task 2's ``wbc_subtypes/<model>/<key>``, each keyed by its training parameters (taken from the
profile named in the pipeline's parameters) and the checksums of its training data. With the
training data at hand the key is computed exactly; without it (a user who only has the models
folder) the cache is searched for a finished run whose ``run.json`` holds the same parameters.

Counting uses one score threshold per class, chosen on BCCD's validation images with
:func:`bloodlib.detection.metrics.choose_count_thresholds` through this pipeline's own inference
path, and cached next to the models (``pipeline/count_thresholds/<key>/thresholds.json``).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bloodlib.classification.crops import CropPolicy
from bloodlib.data import DataMismatchError
from bloodlib.detection.data import CLASSES
from bloodlib.fsutil import atomic_write_text
from bloodlib.modelcache import ModelNotTrainedError, ModelRun, find_run, models_root
from bloodlib.params import load_params
from bloodlib.pipeline.params import PipelineParams
from bloodlib.training import TrainedModel


class ModelsNotFoundError(ModelNotTrainedError):
    """A model the pipeline needs is not in the trained-model cache; the message says how to get it."""


@dataclass
class PipelineModels:
    """Everything inference needs.

    Attributes:
        detector: the SSD300 (eval mode, CPU).
        classifier: the WBC-subtype CNN (eval mode, CPU).
        policy: the crop policy the classifier was trained with.
        thresholds: per detection class, the score threshold for counting.
        threshold_source: where ``thresholds`` come from, in words.
        info: names, cache keys and folders of the models (for ``run.json`` and reports).
    """

    detector: torch.nn.Module
    classifier: torch.nn.Module
    policy: CropPolicy
    thresholds: dict[str, float]
    threshold_source: str
    info: dict[str, Any]


def how_to_train(p: PipelineParams) -> str:
    """The command(s) that put the pipeline's models into the cache."""
    same = p.detection_profile == p.classifier_profile
    return (
        f"train them with `bloodlib train --profile {p.detection_profile}`"
        if same
        else f"train them with `bloodlib train detection --profile {p.detection_profile}` and "
        f"`bloodlib train wbc --profile {p.classifier_profile}`"
    ) + ", or point --models DIR (or BLOODLIB_MODELS) at a models folder that holds them"


def _from_cache(
    run: ModelRun | None,
    lookup: tuple[Path, str, dict[str, Any], tuple[tuple[str, ...], ...]],
    build: Any,
    *,
    name: str,
    what: str,
    p: PipelineParams,
) -> TrainedModel:
    """The finished ``run`` (exact key), or -- without the training data to compute the key -- the
    finished run found by its parameters (``lookup``: root, task, params, keys to ignore)."""
    found = run if run is not None and run.is_complete() else None
    if found is None and run is None:
        found = find_run(*lookup)
    if found is None:
        where = run.folder if run is not None else lookup[0] / lookup[1]
        raise ModelsNotFoundError(f"no trained {what} in the model cache ({where}); {how_to_train(p)}")
    return TrainedModel.from_cache(found, build(), name=name)


def _info(trained: TrainedModel, profile: str, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "profile": profile,
        "folder": str(trained.run.folder),
        "key": trained.key,
        "best_epoch": trained.best_epoch,
    }


def load_detector(
    p: PipelineParams, root: Path, *, train_missing: bool = False, progress: bool = False
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The SSD300 of ``p`` from the cache (trained first if missing and ``train_missing``)."""
    from bloodlib.detection import train as detection
    from bloodlib.detection.model import build_ssd

    params = load_params("01_detection", p.detection_profile)
    backbone = p.detection_backbone
    try:
        run: ModelRun | None = detection.model_run(params, backbone, detection.data_fingerprints(), root)
    except (OSError, DataMismatchError):  # BCCD not available here: look the run up by its parameters
        run = None
    if train_missing and run is not None and not run.is_complete():
        parts = detection.load_parts(params)
        trained = detection.train_detector(params, backbone, parts, progress=progress, models_root=root)
    else:
        trained = _from_cache(
            run,
            (root, f"{detection.TASK}/ssd_{backbone}", detection.run_params(params, backbone), ()),
            lambda: build_ssd(**detection.model_kwargs(params, backbone)),
            name=detection.DISPLAY[backbone],
            what=f"{backbone} detector (profile {p.detection_profile})",
            p=p,
        )
    return trained.model, _info(trained, p.detection_profile, f"ssd_{backbone}")


def load_classifier(
    p: PipelineParams, root: Path, *, train_missing: bool = False, progress: bool = False
) -> tuple[torch.nn.Module, CropPolicy, dict[str, Any]]:
    """The WBC classifier of ``p`` and its crop policy from the cache (trained first if missing and
    ``train_missing``)."""
    from bloodlib.classification import train as wbc
    from bloodlib.classification.data import dataset2_index
    from bloodlib.classification.models import build_model
    from bloodlib.data import locate

    params = load_params(wbc.NOTEBOOK, p.classifier_profile)
    name = p.classifier_model
    try:
        split = wbc.train_val_split(params, dataset2_index(locate("blood-cells", download=False)))
        run: ModelRun | None = wbc.model_run(params, name, wbc.data_fingerprints(), wbc.val_groups(split), root)
    except (OSError, DataMismatchError):  # blood-cells not available here: look the run up by its parameters
        run = None
    if train_missing and run is not None and not run.is_complete():
        single = dataclasses.replace(params, models=[name])
        data = wbc.load_data(single, progress=progress)
        trained = wbc.train_classifier(single, name, data, progress=progress, models_root=root)
    else:
        trained = _from_cache(
            run,  # without the training data, the validation groups are unknown: they are left out
            (root, f"{wbc.TASK}/{name}", wbc.run_params(params, name, []), (("split", "val_groups"),)),
            lambda: build_model(name, pretrained=False),
            name=name,
            what=f"WBC classifier {name} (profile {p.classifier_profile})",
            p=p,
        )
    return trained.model, wbc.crop_policy(params), _info(trained, p.classifier_profile, name)


def count_thresholds(
    p: PipelineParams, detector: torch.nn.Module, detector_key: str, root: Path, *, progress: bool = False
) -> tuple[dict[str, float], str]:
    """Per-class counting thresholds chosen on BCCD's validation split (cached), or the fallback."""
    from bloodlib.detection.metrics import choose_count_thresholds
    from bloodlib.detection.train import data_fingerprints, load_parts

    try:
        fingerprints = data_fingerprints()
    except (OSError, DataMismatchError) as err:  # BCCD missing or modified
        value = p.fallback_score_threshold
        return (
            {c: value for c in CLASSES},
            f"fallback score threshold {value:g} for every class (BCCD validation images unavailable: {err})",
        )
    from bloodlib.pipeline.infer import Detector, detect_paths

    fast = Detector(detector, p.precision)
    run = ModelRun(
        "pipeline/count_thresholds",
        {
            "detector": detector_key,
            "method": "choose_count_thresholds",
            "split": "val",
            "inference": "bloodlib.pipeline.infer",
            "precision": fast.precision,
        },
        fingerprints,
        root,
    )
    path = run.folder / "thresholds.json"
    source = f"chosen on BCCD's validation images (lowest count MAE per class), cached in {path}"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))["thresholds"], source
    with warnings.catch_warnings():  # BCCD's two zero-size boxes, already reported by Task 1
        warnings.simplefilter("ignore", UserWarning)
        val = load_parts(load_params("01_detection", p.detection_profile))["val"]
    preds = detect_paths(fast, [a.image_path for a in val], batch_size=p.batch_size, progress=progress)
    thresholds = choose_count_thresholds(preds, val)
    try:
        atomic_write_text(path, json.dumps({"thresholds": thresholds, "images": len(val)}, indent=2) + "\n")
    except OSError:  # a read-only models folder: use them uncached
        source = "chosen on BCCD's validation images (lowest count MAE per class; not cached: models folder read-only)"
    return thresholds, source


def load_models(
    p: PipelineParams, *, root: Path | None = None, train_missing: bool | None = None, progress: bool = False
) -> PipelineModels:
    """Detector, classifier, crop policy and counting thresholds of ``p``.

    Args:
        root: a models root laid out like ``BLOODLIB_MODELS`` (default :func:`~bloodlib.modelcache.models_root`).
        train_missing: train missing models into ``root`` (default ``p.train_missing_models``).

    Raises:
        ModelsNotFoundError: a model is not in the cache; the message names the command that trains it.
    """
    root = Path(root) if root is not None else models_root()
    train = p.train_missing_models if train_missing is None else train_missing
    detector, det_info = load_detector(p, root, train_missing=train, progress=progress)
    classifier, policy, cls_info = load_classifier(p, root, train_missing=train, progress=progress)
    thresholds, source = count_thresholds(p, detector, f"{det_info['name']}/{det_info['key']}", root, progress=progress)
    return PipelineModels(
        detector,
        classifier,
        policy,
        {c: float(thresholds[c]) for c in CLASSES},
        source,
        {"detector": det_info, "classifier": cls_info, "models_root": str(root)},
    )
