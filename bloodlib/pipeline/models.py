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
from bloodlib.modelcache import ModelRun, find_run, models_root
from bloodlib.pipeline.params import PipelineParams


class ModelsNotFoundError(FileNotFoundError):
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


def _final_state(
    run: ModelRun | None,
    root: Path,
    task: str,
    params: dict[str, Any],
    ignore: tuple[tuple[str, ...], ...],
    what: str,
    p: PipelineParams,
) -> tuple[dict[str, Any], Path]:
    """``final.pt`` of ``run`` (exact key) or of a run found by its parameters."""
    folder = run.folder if run is not None and run.is_complete() else None
    if folder is None and run is None:
        folder = find_run(root, task, params, ignore)
    if folder is None:
        where = run.folder if run is not None else root / task
        raise ModelsNotFoundError(f"no trained {what} in the model cache ({where}); {how_to_train(p)}")
    return torch.load(folder / "final.pt", map_location="cpu", weights_only=False), folder


def _detector_params(p: PipelineParams):
    from bloodlib.params import load_params

    return load_params("01_detection", p.detection_profile)


def _classifier_params(p: PipelineParams):
    from bloodlib.params import load_params

    return load_params("02_wbc_subtypes", p.classifier_profile)


def load_detector(
    p: PipelineParams, root: Path, *, train_missing: bool = False, progress: bool = False
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The SSD300 of ``p`` from the cache (trained first if missing and ``train_missing``)."""
    from bloodlib.detection.model import build_ssd
    from bloodlib.detection.train import data_checksum, load_parts, model_kwargs, run_params, train_detector

    pd_ = _detector_params(p)
    task = f"detection/ssd_{p.detection_backbone}"
    params = run_params(pd_, p.detection_backbone)
    try:
        run: ModelRun | None = ModelRun(task, params, data_checksum(), root)
    except (OSError, DataMismatchError):  # BCCD not available here: look the run up by its parameters
        run = None
    if train_missing and run is not None and not run.is_complete():
        train_detector(pd_, p.detection_backbone, load_parts(pd_), progress=progress, models_root=root)
    state, folder = _final_state(
        run, root, task, params, (), f"{p.detection_backbone} detector (profile {p.detection_profile})", p
    )
    model = build_ssd(**model_kwargs(pd_, p.detection_backbone))
    model.load_state_dict(state["model"])
    model.eval()
    return model, {
        "name": f"ssd_{p.detection_backbone}",
        "profile": p.detection_profile,
        "folder": str(folder),
        "key": folder.name,
        "best_epoch": state.get("best_epoch"),
    }


def load_classifier(
    p: PipelineParams, root: Path, *, train_missing: bool = False, progress: bool = False
) -> tuple[torch.nn.Module, CropPolicy, dict[str, Any]]:
    """The WBC classifier of ``p`` and its crop policy from the cache (trained first if missing and
    ``train_missing``; training writes to the default cache, :func:`bloodlib.modelcache.models_root`)."""
    from bloodlib.classification import train as T
    from bloodlib.classification.models import build_model

    pc = _classifier_params(p)
    policy = T.crop_policy(pc)
    name = p.classifier_model
    try:
        from bloodlib.classification.data import dataset2_index
        from bloodlib.data import locate

        split = T.train_val_split(pc, dataset2_index(locate("blood-cells", download=False)))
        run: ModelRun | None = dataclasses.replace(
            T.model_run(pc, name, T.data_checksums(), T.val_groups(split)), root=root
        )
    except (OSError, DataMismatchError):  # blood-cells not available here: look the run up by its parameters
        run = None
    if train_missing and run is not None and not run.is_complete():
        single = dataclasses.replace(pc, models=[name])
        T.train_models(single, T.load_data(single, progress=progress), progress=progress)
    task = f"{T.TASK}/{name}"
    params = run.params if run is not None else T.model_run(pc, name, {"blood-cells": "", "source_map": ""}, []).params
    state, folder = _final_state(
        run,
        root,
        task,
        params,
        (("split", "val_groups"),),
        f"WBC classifier {name} (profile {p.classifier_profile})",
        p,
    )
    model = build_model(name, pretrained=False)
    model.load_state_dict(state["model"])
    model.eval()
    return (
        model,
        policy,
        {
            "name": name,
            "profile": p.classifier_profile,
            "folder": str(folder),
            "key": folder.name,
            "best_epoch": state.get("best_epoch"),
        },
    )


def count_thresholds(
    p: PipelineParams, detector: torch.nn.Module, detector_key: str, root: Path, *, progress: bool = False
) -> tuple[dict[str, float], str]:
    """Per-class counting thresholds chosen on BCCD's validation split (cached), or the fallback."""
    from bloodlib.detection.metrics import choose_count_thresholds
    from bloodlib.detection.train import data_checksum, load_parts

    try:
        checksums = data_checksum()
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
        checksums,
        root,
    )
    path = run.folder / "thresholds.json"
    source = f"chosen on BCCD's validation images (lowest count MAE per class), cached in {path}"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))["thresholds"], source
    with warnings.catch_warnings():  # BCCD's two zero-size boxes, already reported by Task 1
        warnings.simplefilter("ignore", UserWarning)
        val = load_parts(_detector_params(p))["val"]
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
        train_missing: train missing models (default ``p.train_missing_models``).

    Raises:
        ModelsNotFoundError: a model is not in the cache; the message names the command that trains it.
        ValueError: ``train_missing`` with a ``root`` other than the default cache (training writes there).
    """
    root = Path(root) if root is not None else models_root()
    train = p.train_missing_models if train_missing is None else train_missing
    if train and root.resolve() != models_root().resolve():
        raise ValueError(
            f"missing models are trained into the default model cache ({models_root()}), not {root}; "
            "set BLOODLIB_MODELS instead"
        )
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
