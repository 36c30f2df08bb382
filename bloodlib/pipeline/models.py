"""The pipeline's trained models, resolved through the trained-model cache.

``models: general`` (the default): the general detector and WBC classifier of notebook 05
(:mod:`bloodlib.general.models`), which rescale every field to a canonical cell scale.
``models: bccd``: the paper-reproduction models, Task 1's SSD300 (``detection/ssd_<backbone>/<key>``)
and Task 2's ``wbc_subtypes/<model>/<key>``. Each is keyed by its training parameters (taken from
the profile named in the pipeline's parameters) and the fingerprints of its training data. With
the training data at hand the key is computed exactly; without it (a user who only has the models
folder) the cache is searched for a finished run whose ``run.json`` holds the same parameters.

Counting uses one score threshold per class, chosen on validation images through this pipeline's
own inference path with :func:`bloodlib.detection.metrics.choose_count_thresholds` -- the
general models' pooled validation fields with complete boxes, or BCCD's validation images -- and
cached next to the models (``pipeline/count_thresholds/<key>/thresholds.json``).
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
from bloodlib.detection.scaled import ScaleSpec
from bloodlib.fsutil import atomic_write_text
from bloodlib.modelcache import ModelNotTrainedError, ModelRun, find_run, models_root
from bloodlib.params import load_params
from bloodlib.pipeline.infer import Detector, ScaledDetector
from bloodlib.pipeline.ood import OodReference
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
        policy: the crop policy the classifier was trained with (with its stain normalisation).
        thresholds: per detection class, the score threshold for counting.
        threshold_source: where ``thresholds`` come from, in words.
        info: names, cache keys and folders of the models (for ``run.json`` and reports).
        spec: the general detector's canonical scale (None: the BCCD detector, whole fields at 300x300).
        ood: out-of-distribution references (:mod:`bloodlib.pipeline.ood`), None for the BCCD models.
    """

    detector: torch.nn.Module
    classifier: torch.nn.Module
    policy: CropPolicy
    thresholds: dict[str, float]
    threshold_source: str
    info: dict[str, Any]
    spec: ScaleSpec | None = None
    ood: OodReference | None = None

    def fast_detector(self, precision: str, *, um_per_pixel: float = 0.0) -> Detector:
        """The detector for batched inference; ``um_per_pixel`` > 0 fixes every field's scale."""
        return fast_detector(self.detector, self.spec, precision, um_per_pixel=um_per_pixel)


def fast_detector(
    model: torch.nn.Module, spec: ScaleSpec | None, precision: str, *, um_per_pixel: float = 0.0
) -> Detector:
    """:class:`~bloodlib.pipeline.infer.ScaledDetector` for a general detector (``spec``), else
    :class:`~bloodlib.pipeline.infer.Detector`."""
    from bloodlib.imaging.scale import diameter_from_um_per_pixel

    if spec is None:
        return Detector(model, precision)
    diameter = diameter_from_um_per_pixel(um_per_pixel) if um_per_pixel > 0 else None
    return ScaledDetector(model, spec, precision, diameter=diameter)


def how_to_train(p: PipelineParams) -> str:
    """The command(s) that put the pipeline's models into the cache."""
    if p.models == "general":
        return (
            f"train them with `bloodlib train general --profile {p.general_profile}`, or point --models DIR "
            "(or BLOODLIB_MODELS) at a models folder that holds them"
        )
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
    p: PipelineParams,
    detector: Detector,
    detector_key: str,
    root: Path,
    validation: Any,
    *,
    progress: bool = False,
) -> tuple[dict[str, float], str]:
    """Per-class counting thresholds chosen on validation images (cached), or the fallback.

    ``validation`` returns ``(what, annotations, fingerprints)`` -- the images' description, the
    validation annotations and their data fingerprints -- or raises ``OSError``/``DataMismatchError``
    when they are not available here.
    """
    from bloodlib.detection.metrics import choose_count_thresholds
    from bloodlib.pipeline.infer import detect_paths

    try:
        what, val, fingerprints = validation()
    except (OSError, DataMismatchError) as err:  # data missing or modified
        value = p.fallback_score_threshold
        return (
            {c: value for c in CLASSES},
            f"fallback score threshold {value:g} for every class (validation images unavailable: {err})",
        )
    spec = {
        "detector": detector_key,
        "method": "choose_count_thresholds",
        "split": "val",
        "inference": "bloodlib.pipeline.infer",
        "precision": detector.precision,
        "images": len(val),
    }
    run = ModelRun("pipeline/count_thresholds", spec, fingerprints, root)
    path = run.folder / "thresholds.json"
    source = f"chosen on {what} (lowest count MAE per class), cached in {path}"
    if path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))["thresholds"]
            return {c: float(cached[c]) for c in CLASSES}, source
        except (ValueError, KeyError, TypeError) as err:  # damaged: chosen again below, then rewritten
            warnings.warn(
                f"{path} is damaged ({type(err).__name__}: {err}); choosing the thresholds again", stacklevel=2
            )
    preds = detect_paths(detector, [a.image_path for a in val], batch_size=p.batch_size, progress=progress)
    thresholds = choose_count_thresholds(preds, val)
    try:
        atomic_write_text(path, json.dumps({"thresholds": thresholds, "images": len(val)}, indent=2) + "\n")
    except OSError:  # a read-only models folder: use them uncached
        source = f"chosen on {what} (lowest count MAE per class; not cached: models folder read-only)"
    return thresholds, source


def bccd_validation(p: PipelineParams) -> tuple[str, list, dict[str, str]]:
    """BCCD's validation images (Task 1's split) for :func:`count_thresholds`."""
    from bloodlib.detection.train import data_fingerprints, load_parts

    fingerprints = data_fingerprints()
    with warnings.catch_warnings():  # BCCD's two zero-size boxes, already reported by Task 1
        warnings.simplefilter("ignore", UserWarning)
        val = load_parts(load_params("01_detection", p.detection_profile))["val"]
    return "BCCD's validation images", val, fingerprints


def general_validation(general: Any) -> tuple[str, list, dict[str, str]]:
    """The general models' validation fields with complete boxes (every source) for :func:`count_thresholds`."""
    from bloodlib.general import detector as general_detector

    fingerprints = general_detector.data_fingerprints()
    val = general_detector.load_parts(general)["val"]
    return "the validation fields with complete boxes of BCCD, PBC and Raabin", val, fingerprints


def load_general_models(p: PipelineParams, root: Path, *, train: bool, progress: bool) -> PipelineModels:
    """The general models of ``p.general_profile`` with their thresholds and out-of-distribution references."""
    from bloodlib.general import detector as general_detector
    from bloodlib.general import models as general_models
    from bloodlib.general.classifier import policy_with_stain, recipe_params

    general = load_params("05_generalisation", p.general_profile)
    try:
        detector = general_models.load_detector(general, root, train_missing=train, progress=progress)
        classifier, stain = general_models.load_classifier(general, root, train_missing=train, progress=progress)
    except ModelNotTrainedError as err:
        raise ModelsNotFoundError(
            f"{err} (this profile: `bloodlib train general --profile {p.general_profile}`)"
        ) from err
    from bloodlib.classification.train import crop_policy

    spec = general_detector.scale_spec(general)
    fast = fast_detector(detector.model, spec, p.precision)
    key = f"general/{detector.key}"
    thresholds, source = count_thresholds(p, fast, key, root, lambda: general_validation(general), progress=progress)
    ood = OodReference(
        colour=general_models.load_colour_model(general, detector.key, root),
        colour_limit=general.ood_colour_score,
        diameter_range=(general.ood_scale_range[0], general.ood_scale_range[1]),
        confidence=general.ood_confidence,
    )
    info = {
        "detector": _info(detector, p.general_profile, "general_ssd"),
        "classifier": _info(classifier, p.general_profile, "general_" + general.classifier_model),
        "models_root": str(root),
        "models": "general",
        "stain": stain.to_dict() if stain else None,
    }
    policy = policy_with_stain(crop_policy(recipe_params(general)), stain)
    thresholds = {c: float(thresholds[c]) for c in CLASSES}
    return PipelineModels(detector.model, classifier.model, policy, thresholds, source, info, spec, ood)


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
    if p.models == "general":
        return load_general_models(p, root, train=train, progress=progress)
    detector, det_info = load_detector(p, root, train_missing=train, progress=progress)
    classifier, policy, cls_info = load_classifier(p, root, train_missing=train, progress=progress)
    fast = fast_detector(detector, None, p.precision)
    key = f"{det_info['name']}/{det_info['key']}"
    thresholds, source = count_thresholds(p, fast, key, root, lambda: bccd_validation(p), progress=progress)
    return PipelineModels(
        detector,
        classifier,
        policy,
        {c: float(thresholds[c]) for c in CLASSES},
        source,
        {"detector": det_info, "classifier": cls_info, "models_root": str(root), "models": "bccd"},
    )
