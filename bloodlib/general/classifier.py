"""The general WBC-subtype classifier: dataset2 TRAIN and PBC, stain-normalised.

Two sources of single-WBC fields with another microscope, camera and stain each: dataset2 (BCCD's
cells, ~10k augmented copies of 277 originals; split by source image as in Task 2) and PBC
(CellaVision, May-Gruenwald-Giemsa; 2,400 cells split per image, PBC has no donor ids). A
:class:`Variant` names what one model is trained on (sources) and how (stain normalisation,
colour augmentation); the deployed model is all sources with the profile's ``stain``.

The crop policy, augmentation and recipe are Task 2's (``02_wbc_subtypes`` of the profile
``classifier_profile``) except the epochs. Stain normalisation maps every canvas's colours to a
reference fitted on training canvases of the variant's sources only
(:func:`bloodlib.classification.crops.stain_normalized`); the reference is stored beside the
weights (``stain.json``) so inference needs no training data.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bloodlib.classification import train as wbc
from bloodlib.classification.canvases import CanvasSet
from bloodlib.classification.crops import CropPolicy, stain_normalized
from bloodlib.classification.engine import ClassifierTask
from bloodlib.classification.models import build_model
from bloodlib.classification.params import WbcSubtypesParams
from bloodlib.fsutil import atomic_write_text
from bloodlib.general.params import GeneralParams
from bloodlib.imaging.stain import StainReference, fit_reference
from bloodlib.modelcache import ModelRun
from bloodlib.params import config_from, load_params
from bloodlib.training import TrainedModel, fit, load_or_train

SOURCES = ("dataset2", "PBC")
TASK = "general/classifier"
#: evaluation sets: validation (selection) and held-out cells of each source, and BCCD's own boxes
EVAL_SETS = ("dataset2/val", "dataset2/TEST_SIMPLE", "dataset2/TEST", "BCCD", "PBC/val", "PBC/test")
REFERENCE_CANVASES = 400  # training canvases a stain reference is fitted on


@dataclass(frozen=True)
class Variant:
    """What a classifier is trained on and how.

    Attributes:
        sources: training sources, a subset of :data:`SOURCES`.
        stain: ``"none"``, ``"reinhard"`` or ``"macenko"``.
        colour_aug: Task 2's colour/stain jitter on (False: brightness, contrast, saturation, hue 0).
    """

    sources: tuple[str, ...]
    stain: str
    colour_aug: bool = True

    def __post_init__(self) -> None:
        if not self.sources or set(self.sources) - set(SOURCES):
            raise ValueError(f"sources must be a non-empty subset of {SOURCES}, got {self.sources!r}")
        if self.stain not in ("none", "reinhard", "macenko"):
            raise ValueError(f"stain must be none, reinhard or macenko, got {self.stain!r}")

    @property
    def name(self) -> str:
        return f"{'+'.join(self.sources)}, stain {self.stain}, colour jitter {'on' if self.colour_aug else 'off'}"

    @property
    def slug(self) -> str:
        return f"{'+'.join(self.sources)}_{self.stain}_{'jitter' if self.colour_aug else 'nojitter'}"


@dataclass
class GeneralWbcData:
    """Raw (not stain-normalised) canvases of every set of both sources, and their provenance."""

    recipe: WbcSubtypesParams
    policy: CropPolicy
    sets: dict[str, CanvasSet]
    val_groups: list[int]
    fingerprints: dict[str, str]


def recipe_params(p: GeneralParams) -> WbcSubtypesParams:
    """Task 2's parameters of ``p.classifier_profile`` with the general model's epochs."""
    recipe = load_params(wbc.NOTEBOOK, p.classifier_profile)
    return dataclasses.replace(
        recipe, models=[p.classifier_model], epochs_custom=p.classifier_epochs, epochs_standard=p.classifier_epochs
    )


def data_fingerprints() -> dict[str, str]:
    from bloodlib.data import fingerprint

    return {**wbc.data_fingerprints(), "pbc": fingerprint("pbc")}


def load_data(p: GeneralParams, *, progress: bool = True) -> GeneralWbcData:
    """Task 2's dataset2 sets and PBC split per image, cropped with Task 2's policy."""
    from bloodlib.classification.sources import pbc_index, pbc_split
    from bloodlib.data import locate

    recipe = recipe_params(p)
    fingerprints = data_fingerprints()
    frames, split, _, _ = wbc.dataset2_frames(recipe)
    fractions = (1 - p.pbc_val_fraction - p.pbc_test_fraction, p.pbc_val_fraction, p.pbc_test_fraction)
    pbc = pbc_index(locate("pbc"))
    if p.pbc_per_class:
        pbc = pbc.groupby("label", group_keys=False).head(p.pbc_per_class)
    pbc = pbc_split(pbc.reset_index(drop=True), seed=p.seed, fractions=fractions)
    named = {f"dataset2/{k}": v for k, v in frames.items() if k != "BCCD"}
    named["BCCD"] = frames["BCCD"]
    named.update({f"PBC/{part}": pbc[pbc["split"] == part] for part in ("train", "val", "test")})
    policy = wbc.crop_policy(recipe)
    sets = wbc.crop_sets(named, policy, fingerprints, progress=progress)
    return GeneralWbcData(recipe, policy, sets, wbc.val_groups(split), fingerprints)


def pooled(sets: list[CanvasSet], name: str) -> CanvasSet:
    """One :class:`CanvasSet` of several (groups become strings, so sources never share one)."""
    frames = [s.frame.assign(group=s.frame["group"].astype(str)) for s in sets]
    return CanvasSet(name, pd.concat(frames, ignore_index=True), torch.cat([s.canvases for s in sets]))


def fit_stain(data: GeneralWbcData, variant: Variant, seed: int) -> StainReference | None:
    """The stain reference of ``variant``: fitted on up to :data:`REFERENCE_CANVASES` random
    training canvases of its sources (None without normalisation)."""
    if variant.stain == "none":
        return None
    train = pooled([data.sets[f"{s}/train"] for s in variant.sources], "train")
    picks = np.random.default_rng(seed).permutation(len(train))[:REFERENCE_CANVASES]
    return fit_reference([train.canvases[i].permute(1, 2, 0).numpy() for i in picks], variant.stain)


def normalized(canvas_set: CanvasSet, reference: StainReference | None) -> CanvasSet:
    if reference is None:
        return canvas_set
    return CanvasSet(canvas_set.name, canvas_set.frame, stain_normalized(canvas_set.canvases, reference))


def run_params(
    p: GeneralParams, recipe: WbcSubtypesParams, val_groups: list[int], variant: Variant, epochs: int | None = None
) -> dict:
    """Everything that defines the trained weights (the model-cache key hashes it)."""
    recipe = dataclasses.replace(recipe, epochs_custom=epochs or p.classifier_epochs)
    return {
        "recipe": wbc.run_params(recipe, p.classifier_model, val_groups),
        "variant": dataclasses.asdict(variant),
        "pbc_split": {
            "val": p.pbc_val_fraction,
            "test": p.pbc_test_fraction,
            "seed": p.seed,
            "per_class": p.pbc_per_class,
        },
        "reference_canvases": REFERENCE_CANVASES,
    }


def model_run(
    p: GeneralParams, data: GeneralWbcData, variant: Variant, root: Path | None = None, *, epochs: int | None = None
) -> ModelRun:
    params = run_params(p, data.recipe, data.val_groups, variant, epochs)
    return ModelRun(f"{TASK}/{variant.slug}", params, data.fingerprints, root)


def stain_path(run: ModelRun) -> Path:
    return run.folder / "stain.json"


def load_stain(folder: Path) -> StainReference | None:
    """The stain reference stored beside a classifier's weights (None if it has none)."""
    values = json.loads((folder / "stain.json").read_text(encoding="utf-8"))
    return StainReference.from_dict(values) if values else None


def train_variant(
    p: GeneralParams,
    data: GeneralWbcData,
    variant: Variant,
    *,
    epochs: int | None = None,
    progress: bool = True,
    models_root: Path | None = None,
) -> tuple[TrainedModel, StainReference | None]:
    """The classifier of ``variant`` trained ``epochs`` (default ``p.classifier_epochs``), from the
    cache or trained and cached, and its stain reference."""
    epochs = epochs or p.classifier_epochs
    run = model_run(p, data, variant, models_root, epochs=epochs)
    if run.is_complete() and stain_path(run).is_file():
        reference = load_stain(run.folder)
    else:
        reference = fit_stain(data, variant, p.seed)
    augment = wbc.augment_config(data.recipe)
    if not variant.colour_aug:
        augment = dataclasses.replace(augment, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    config = dataclasses.replace(wbc.train_config(data.recipe, p.classifier_model), epochs=epochs)

    def train(model: torch.nn.Module):
        sets = [normalized(data.sets[f"{s}/{part}"], reference) for part in ("train", "val") for s in variant.sources]
        half = len(variant.sources)
        task = config_from(
            ClassifierTask,
            data.recipe,
            train=pooled(sets[:half], "train"),
            val=pooled(sets[half:], "val"),
            input_size=data.policy.input_size,
            augment=augment,
        )
        return fit(model, task, config, run=run, progress=progress, desc=variant.name)

    name = p.classifier_model
    trained = load_or_train(run, lambda: build_model(name, pretrained=False), train, name=variant.name, seed=p.seed)
    if not stain_path(run).is_file():
        atomic_write_text(stain_path(run), json.dumps(reference.to_dict() if reference else {}, indent=2) + "\n")
    return trained, reference


def deployed_variant(p: GeneralParams) -> Variant:
    """The classifier ``bloodlib analyze`` uses: every source, the profile's stain normalisation."""
    return Variant(SOURCES, p.stain, True)


def policy_with_stain(policy: CropPolicy, reference: StainReference | None) -> CropPolicy:
    """The crop policy that normalises each canvas like the classifier's training canvases."""
    return dataclasses.replace(policy, stain=reference)


def evaluate_variant(
    trained: TrainedModel,
    reference: StainReference | None,
    data: GeneralWbcData,
    *,
    sets: tuple[str, ...] = EVAL_SETS,
    bootstrap: int,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-image predictions and a table per evaluation set: accuracy, balanced accuracy (macro
    recall) and macro F1 with 95 % intervals resampling source images (:mod:`~bloodlib.classification.metrics`)."""
    from bloodlib.classification.classes import CLASSES
    from bloodlib.classification.evaluation import predictions
    from bloodlib.classification.metrics import metrics_table

    eval_sets = {name: normalized(data.sets[name], reference) for name in sets}
    preds = predictions(
        {trained.name: trained},
        eval_sets,
        data.policy.input_size,
        batch_size=data.recipe.eval_batch_size,
        tta=data.recipe.tta,
    )
    table = metrics_table(preds, n_classes=len(CLASSES), n_boot=bootstrap, seed=seed)
    return preds, table.rename(
        columns={
            "recall": "balanced_accuracy",
            "recall_lo": "balanced_accuracy_lo",
            "recall_hi": "balanced_accuracy_hi",
        }
    )


#: the sets a variant trained without a source is scored on: that source's validation and test cells
LEFT_OUT = {"dataset2": ("dataset2/val", "dataset2/TEST_SIMPLE"), "PBC": ("PBC/val", "PBC/test")}


def loso_table(p: GeneralParams, data: GeneralWbcData, *, bootstrap: int, progress: bool = True) -> pd.DataFrame:
    """Leave one source out: for each source and stain normalisation of ``p.loso_stains``, the
    classifier trained on the other source alone (``p.loso_epochs``), scored on the left-out
    source's validation and held-out cells (the validation rows are what a choice of normalisation
    may look at)."""
    settings = [(stain, True) for stain in p.loso_stains] + ([("none", False)] if p.loso_without_jitter else [])
    tables = []
    for left_out in SOURCES:
        trained_on = tuple(s for s in SOURCES if s != left_out)
        for stain, jitter in settings:
            variant = Variant(trained_on, stain, jitter)
            trained, reference = train_variant(p, data, variant, progress=progress, epochs=p.loso_epochs)
            _, table = evaluate_variant(
                trained, reference, data, sets=LEFT_OUT[left_out], bootstrap=bootstrap, seed=p.seed
            )
            tables.append(
                table.assign(
                    trained_on="+".join(trained_on),
                    left_out=left_out,
                    stain=stain,
                    colour_jitter=jitter,
                    train_minutes=trained.train_seconds / 60,
                    arithmetic=trained.precision,
                )
            )
    columns = [
        "trained_on",
        "left_out",
        "stain",
        "colour_jitter",
        "set",
        "images",
        "groups",
        "accuracy",
        "accuracy_lo",
        "accuracy_hi",
        "balanced_accuracy",
        "balanced_accuracy_lo",
        "balanced_accuracy_hi",
        "train_minutes",
        "arithmetic",
    ]
    return pd.concat(tables, ignore_index=True)[columns]


def uncertain_share(preds: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per evaluation set: the share of cells whose top class probability is below ``threshold``,
    and the accuracy of the confident and the uncertain ones."""
    from bloodlib.classification.classes import CLASSES

    top = preds[[f"p_{c}" for c in CLASSES]].max(axis=1)
    table = preds.assign(uncertain=top < threshold, right=preds["y_true"] == preds["y_pred"])
    rows = []
    for name, part in table.groupby("set", sort=False):
        rows.append(
            {
                "set": name,
                "cells": len(part),
                "uncertain share": part["uncertain"].mean(),
                "accuracy, confident": part.loc[~part["uncertain"], "right"].mean(),
                "accuracy, uncertain": part.loc[part["uncertain"], "right"].mean(),
            }
        )
    return pd.DataFrame(rows)


def normalisation_examples(
    data: GeneralWbcData, stains: tuple[str, ...], *, per_source: int, seed: int
) -> tuple[list[torch.Tensor], list[str]]:
    """The same training canvases of each source as they are and under each normalisation (references
    fitted on both sources' training canvases), as float images with titles, row by row."""
    rng = np.random.default_rng(seed)
    picks = {s: rng.permutation(len(data.sets[f"{s}/train"]))[:per_source] for s in SOURCES}
    canvases = torch.cat([data.sets[f"{s}/train"].canvases[torch.as_tensor(i)] for s, i in picks.items()])
    labels = [data.sets[f"{s}/train"].frame["label"].iloc[k].lower() for s, i in picks.items() for k in i]
    sources = [s for s in SOURCES for _ in range(per_source)]
    images, titles = [], []
    for stain in ("none", *[s for s in stains if s != "none"]):
        reference = fit_stain(data, Variant(SOURCES, stain), seed)
        shown = canvases if reference is None else stain_normalized(canvases, reference)
        images += [c.float() / 255 for c in shown]
        titles += [f"{stain}: {src} {label}" for src, label in zip(sources, labels)]
    return images, titles
