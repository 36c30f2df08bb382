"""The general models from the trained-model cache, for ``bloodlib analyze`` and notebook 04.

With the training data at hand each cache key is computed exactly (and a missing model can be
trained); without it (a user who only has the models folder) the cache is searched for a
finished run whose ``run.json`` holds the same parameters (:func:`bloodlib.modelcache.find_run`).
The out-of-distribution colour model (:class:`bloodlib.imaging.stain.ColourModel`, fitted on the
detector's training fields) is cached beside them as ``general/colour/<detector key>/colour.json``.

A damaged ``stain.json`` or ``colour.json`` (truncated, not the expected JSON) raises
:class:`~bloodlib.modelcache.CorruptModelError` naming the file and ``bloodlib train general``,
which moves a damaged classifier entry aside and trains it again (:func:`~bloodlib.modelcache.rebuilding_damaged`),
and refits a damaged colour model.
"""

from __future__ import annotations

import json
from pathlib import Path

from bloodlib.data import DataMismatchError
from bloodlib.fsutil import atomic_write_text
from bloodlib.general import classifier as general_classifier
from bloodlib.general import detector as general_detector
from bloodlib.general.params import GeneralParams
from bloodlib.imaging.stain import ColourModel, StainReference, field_colour_stats
from bloodlib.modelcache import CorruptModelError, ModelNotTrainedError, ModelRun, find_run, rebuild_damaged
from bloodlib.training import TrainedModel


def _missing(what: str, where: Path) -> ModelNotTrainedError:
    return ModelNotTrainedError(
        f"no trained {what} in the model cache ({where}); train it with `bloodlib train general`, "
        "or point --models DIR (or BLOODLIB_MODELS) at a models folder that holds it"
    )


#: What a damaged JSON file of the general models raises when it is parsed.
_JSON_ERRORS = (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError)


def _damaged(path: Path, err: Exception) -> CorruptModelError:
    return CorruptModelError(
        f"{path} is damaged ({type(err).__name__}: {err}); rebuild it with `bloodlib train general` "
        "(for the profile you use), or point --models DIR at a models folder with an intact copy",
        path,
        reason=f"{path} is damaged ({type(err).__name__}: {err})",
    )


def _load_stain(run: ModelRun) -> StainReference | None:
    """The classifier's stain reference (``stain.json``).

    Raises:
        CorruptModelError: the file is not the JSON a stain reference is stored as.
    """
    try:
        return general_classifier.load_stain(run.folder)
    except _JSON_ERRORS as err:
        raise _damaged(general_classifier.stain_path(run), err) from None


def load_detector(p: GeneralParams, root: Path, *, train_missing: bool = False, progress: bool = False) -> TrainedModel:
    """The general detector of ``p`` (trained first if missing and ``train_missing``).

    Raises:
        ModelNotTrainedError: it is not in the cache (the message says how to train it).
    """
    try:
        run: ModelRun | None = general_detector.model_run(p, general_detector.data_fingerprints(), root=root)
    except (OSError, DataMismatchError):  # training data not here: look the run up by its parameters
        run = None
    if run is not None and not run.is_complete() and train_missing:
        return general_detector.train_detector(p, general_detector.load_parts(p), progress=progress, models_root=root)
    if run is None:
        params = general_detector.run_params(p, general_detector.SOURCES, p.epochs)
        run = find_run(root, f"{general_detector.TASK}/all", params)
    if run is None or not run.is_complete():
        raise _missing("general detector", run.folder if run is not None else root / general_detector.TASK)
    return TrainedModel.from_cache(run, general_detector.build(p), name="general SSD300")


def _classifier_run(p: GeneralParams, root: Path) -> ModelRun | None:
    """The deployed classifier's cache entry, computed without cropping any image (None without data)."""
    from bloodlib.classification import train as wbc
    from bloodlib.classification.data import dataset2_index
    from bloodlib.data import locate

    variant = general_classifier.deployed_variant(p)
    try:
        recipe = general_classifier.recipe_params(p)
        split = wbc.train_val_split(recipe, dataset2_index(locate("blood-cells", download=False)))
        data = general_classifier.GeneralWbcData(
            recipe, wbc.crop_policy(recipe), {}, wbc.val_groups(split), general_classifier.data_fingerprints()
        )
    except (OSError, DataMismatchError):
        return None
    return general_classifier.model_run(p, data, variant, root)


def load_classifier(
    p: GeneralParams, root: Path, *, train_missing: bool = False, progress: bool = False
) -> tuple[TrainedModel, StainReference | None]:
    """The general WBC classifier of ``p`` and its stain reference (trained first if missing and
    ``train_missing``).

    Raises:
        ModelNotTrainedError: it is not in the cache (the message says how to train it).
    """
    from bloodlib.classification.models import build_model

    variant = general_classifier.deployed_variant(p)
    run = _classifier_run(p, root)
    if (
        run is not None
        and train_missing
        and rebuild_damaged()
        and run.is_complete()
        and general_classifier.stain_path(run).is_file()
    ):
        try:
            _load_stain(run)
        except CorruptModelError as err:
            import warnings

            aside = run.set_aside()
            warnings.warn(f"{err.reason}; the entry was moved to {aside}, training it again", stacklevel=2)
    if run is not None and not run.is_complete() and train_missing:
        data = general_classifier.load_data(p, progress=progress)
        return general_classifier.train_variant(p, data, variant, progress=progress, models_root=root)
    task = f"{general_classifier.TASK}/{variant.slug}"
    if run is None:  # without the training data, the validation groups are unknown: they are left out
        params = general_classifier.run_params(p, general_classifier.recipe_params(p), [], variant)
        run = find_run(root, task, params, (("recipe", "split", "val_groups"),))
    if run is None or not run.is_complete() or not general_classifier.stain_path(run).is_file():
        raise _missing(f"general WBC classifier ({variant.name})", run.folder if run is not None else root / task)
    trained = TrainedModel.from_cache(run, build_model(p.classifier_model, pretrained=False), name=variant.name)
    return trained, _load_stain(run)


def load_colour_model(p: GeneralParams, detector_key: str, root: Path) -> ColourModel | None:
    """The colour statistics of the general detector's training fields (cached), None without the
    training data and no cached copy.

    A damaged cached copy is refitted (with a warning) when the training data is here.

    Raises:
        CorruptModelError: the cached copy is damaged and the training data is not here to refit it.
    """
    path = root / "general" / "colour" / detector_key / "colour.json"
    damaged = None
    if path.is_file():
        try:
            return ColourModel.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except _JSON_ERRORS as err:
            damaged = _damaged(path, err)
    try:
        parts = general_detector.load_parts(p)
    except (OSError, DataMismatchError):
        if damaged is not None:
            raise damaged from None
        return None
    if damaged is not None:
        import warnings

        warnings.warn(f"{damaged.reason}; refitting it on the training fields", stacklevel=2)
    from bloodlib.detection.data import read_image

    stats = [field_colour_stats(read_image(a.image_path).permute(1, 2, 0).numpy()) for a in parts["train"]]
    model = ColourModel.fit(stats)
    try:
        atomic_write_text(path, json.dumps(model.to_dict(), indent=2) + "\n")
    except OSError:  # a read-only models folder
        pass
    return model


def train_cli(profile: str, root: Path) -> int:
    """``bloodlib train general --profile <profile>``: the general detector and WBC classifier (and
    their colour reference) into the model cache."""
    from bloodlib import runtime
    from bloodlib.modelcache import models_root
    from bloodlib.params import load_params

    p = load_params("05_generalisation", profile, root)
    runtime.configure(threads=p.num_threads)
    detector = load_detector(p, models_root(), train_missing=True, progress=True)
    classifier, stain = load_classifier(p, models_root(), train_missing=True, progress=True)
    load_colour_model(p, detector.key, models_root())
    for trained in (detector, classifier):
        where = "cached" if trained.cached else f"trained in {trained.train_seconds / 60:.1f} min"
        print(f"{trained.name}: {where}, best epoch {trained.best_epoch}, key {trained.key}")
    print(f"stain normalisation: {stain.method if stain else 'none'}")
    return 0
