"""The task end to end: parameters -> data sets -> eight trained models (from the cache if possible).

:func:`load_data` builds the five image sets of the task:

- ``train`` / ``val``: dataset2 TRAIN split by source image (:func:`~.data.grouped_split`);
- ``TEST`` (2,487 augmented copies of 71 sources) and ``TEST_SIMPLE`` (the 71 originals, 320x240);
- ``BCCD``: ground-truth WBC boxes of the full-resolution BCCD images, restricted to images
  whose source group never occurs in TRAIN (not as a source, not as a near-duplicate).

:func:`train_models` trains each model with :func:`~.engine.fit` inside a
:class:`~bloodlib.modelcache.ModelRun` keyed by everything that defines its weights, so a
re-run loads instead of training. ``bloodlib train wbc --profile cpu`` calls :func:`train`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bloodlib import runtime
from bloodlib.classification.bccd import bccd_wbc_index
from bloodlib.classification.canvases import CanvasSet, build_canvases
from bloodlib.classification.crops import CropPolicy
from bloodlib.classification.data import dataset2_index, grouped_split, source_map_path, subsample_per_group
from bloodlib.classification.engine import ClassifierTask
from bloodlib.classification.models import CUSTOM_MODELS, MODEL_NAMES, build_model
from bloodlib.classification.params import WbcSubtypesParams
from bloodlib.classification.transforms import AugmentConfig
from bloodlib.modelcache import ModelRun
from bloodlib.params import config_from
from bloodlib.training import TrainConfig, TrainedModel, fit, load_or_train

NOTEBOOK = "02_wbc_subtypes"
TASK = "wbc_subtypes"
EVAL_SETS = ("TEST", "TEST_SIMPLE", "BCCD")
#: the parameters of :class:`~bloodlib.classification.engine.ClassifierTask` that shape the weights
TASK_RECIPE = ("samples_per_epoch", "label_smoothing", "aux_loss_weight")


def crop_policy(p: WbcSubtypesParams) -> CropPolicy:
    return config_from(CropPolicy, p, input_size=tuple(p.input_size), min_side=p.min_box_side)


def augment_config(p: WbcSubtypesParams) -> AugmentConfig:
    return config_from(AugmentConfig, p, prefix="aug_")


def train_config(p: WbcSubtypesParams, model: str) -> TrainConfig:
    custom = model in CUSTOM_MODELS
    return config_from(
        TrainConfig,
        p,
        epochs=p.epochs_custom if custom else p.epochs_standard,
        lr=p.lr_custom if custom else p.lr_standard,
    )


def data_fingerprints() -> dict[str, str]:
    """Fingerprints of blood-cells and BCCD and the source map's sha256 (cache keys).

    Raises:
        bloodlib.data.DataMismatchError: a data set is missing or differs from the registry.
    """
    from bloodlib.data import fingerprint, locate
    from bloodlib.data.download import sha256_file

    out = {name: fingerprint(name) for name in ("blood-cells", "BCCD")}
    out["source_map"] = sha256_file(source_map_path(locate("blood-cells")))
    return out


@dataclass
class WbcData:
    """The task's image sets (see the module docstring) and their provenance."""

    policy: CropPolicy
    sets: dict[str, CanvasSet]
    split: pd.DataFrame  # every TRAIN image with its "subset" (train/val)
    bccd_all: pd.DataFrame  # every usable BCCD box, before removing TRAIN sources
    bccd_skipped: dict[str, int]
    fingerprints: dict[str, str]


def train_val_split(p: WbcSubtypesParams, index: pd.DataFrame) -> pd.DataFrame:
    """TRAIN's rows of the dataset2 ``index`` with their ``subset`` (train/val).

    Validation never holds a group that TEST shows too (two near-duplicate pairs straddle the
    upstream split), so model selection never sees a view of a test cell.
    """
    return grouped_split(
        index[index["split"] == "TRAIN"],
        val_fraction=p.val_fraction,
        seed=p.seed,
        keep_in_train=set(index.loc[index["split"] != "TRAIN", "group"]),
    )


def dataset2_frames(p: WbcSubtypesParams) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, pd.DataFrame, dict]:
    """The task's five image sets as frames (module docstring), TRAIN's split, every usable BCCD box
    and the BCCD boxes left out (with why)."""
    from bloodlib.data import locate

    blood_cells, bccd = locate("blood-cells"), locate("BCCD")
    index = dataset2_index(blood_cells)
    bccd_all, skipped = bccd_wbc_index(bccd, blood_cells / "dataset-master" / "labels.csv")
    split = train_val_split(p, index)
    frames = {
        "train": subsample_per_group(split[split["subset"] == "train"], p.train_max_per_source, p.seed),
        "val": subsample_per_group(split[split["subset"] == "val"], p.val_max_per_source, p.seed),
        "TEST": subsample_per_group(index[index["split"] == "TEST"], p.test_max_per_source, p.seed),
        "TEST_SIMPLE": index[index["split"] == "TEST_SIMPLE"],
        "BCCD": bccd_all[~bccd_all["group"].isin(set(split["group"]))],
    }
    return frames, split, bccd_all, skipped


def crop_sets(
    frames: dict[str, pd.DataFrame], policy: CropPolicy, fingerprints: dict[str, str], *, progress: bool = True
) -> dict[str, CanvasSet]:
    """A :class:`CanvasSet` per frame (canvases cached, see :mod:`.canvases`)."""
    sets = {}
    for name, frame in frames.items():
        frame = frame.reset_index(drop=True)
        canvases = build_canvases(frame, policy, data_checksums=fingerprints, desc=f"crop {name}", progress=progress)
        sets[name] = CanvasSet(name, frame, canvases)
    return sets


def load_data(p: WbcSubtypesParams, *, progress: bool = True) -> WbcData:
    """Index, split, and crop every image set."""
    fingerprints = data_fingerprints()
    policy = crop_policy(p)
    frames, split, bccd_all, skipped = dataset2_frames(p)
    return WbcData(
        policy, crop_sets(frames, policy, fingerprints, progress=progress), split, bccd_all, skipped, fingerprints
    )


def val_groups(split: pd.DataFrame) -> list[int]:
    """Sorted group ids of the validation subset of a :func:`~.data.grouped_split` result."""
    return sorted(int(g) for g in split.loc[split["subset"] == "val", "group"].unique())


def run_params(p: WbcSubtypesParams, name: str, val_groups: list[int]) -> dict[str, Any]:
    """Every parameter that shapes the weights of model ``name``, and the validation groups (so a
    changed split never reuses weights trained on another)."""
    return {
        "model": name,
        "pretrained": p.pretrained,
        "policy": dataclasses.asdict(crop_policy(p)),
        "augment": dataclasses.asdict(augment_config(p)),
        "train": {**dataclasses.asdict(train_config(p, name)), **{k: getattr(p, k) for k in TASK_RECIPE}},
        "split": {
            "val_fraction": p.val_fraction,
            "train_max_per_source": p.train_max_per_source,
            "val_max_per_source": p.val_max_per_source,
            "val_groups": val_groups,
        },
    }


def model_run(
    p: WbcSubtypesParams, name: str, fingerprints: dict[str, str], val_groups: list[int], root: Path | None = None
) -> ModelRun:
    """The cache entry of model ``name`` trained on data with ``fingerprints`` (see :func:`run_params`)."""
    data = {k: fingerprints[k] for k in ("blood-cells", "source_map")}
    return ModelRun(f"{TASK}/{name}", run_params(p, name, val_groups), data, root)


def _epoch_logger(name: str):
    from tqdm.auto import tqdm

    def log(row: dict[str, Any]) -> None:
        train = f"train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f}"
        val = f"val loss {row['val_loss']:.3f} bal. acc {row['val_bacc']:.3f}"
        tqdm.write(f"{name} epoch {row['epoch']}: {train} | {val} | {row['seconds']:.0f} s")

    return log


def train_classifier(
    p: WbcSubtypesParams, name: str, data: WbcData, *, progress: bool = True, models_root: Path | None = None
) -> TrainedModel:
    """The classifier ``name``: from the model cache, or trained (resuming a checkpoint) and cached."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    run = model_run(p, name, data.fingerprints, val_groups(data.split), models_root)
    config = train_config(p, name)

    def train(model: torch.nn.Module):
        sets = data.sets
        task = config_from(
            ClassifierTask,
            p,
            train=sets["train"],
            val=sets["val"],
            input_size=data.policy.input_size,
            augment=augment_config(p),
        )
        log = _epoch_logger(name) if progress else None
        return fit(model, task, config, run=run, progress=progress, desc=name, on_epoch=log)

    return load_or_train(run, lambda: build_model(name, pretrained=p.pretrained), train, name=name, seed=p.seed)


def train_models(p: WbcSubtypesParams, data: WbcData, *, progress: bool = True) -> dict[str, TrainedModel]:
    """Train (or load) every model of ``p.models`` in order."""
    unknown = [m for m in p.models if m not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODEL_NAMES)}")
    return {name: train_classifier(p, name, data, progress=progress) for name in p.models}


def train(profile: str, root: Path) -> int:
    """``bloodlib train wbc --profile <profile>``: train every model of the profile into the cache."""
    from bloodlib.params import load_params

    p = load_params(NOTEBOOK, profile, root)
    runtime.configure(threads=p.num_threads)
    data = load_data(p)
    for name, trained in train_models(p, data).items():
        state = "cached" if trained.cached else "trained"
        print(
            f"{name:14s} {state:7s} {trained.train_seconds:7.1f} s  best epoch {trained.best_epoch}  "
            f"val bal. acc {trained.best_row['val_bacc']:.3f}  ({trained.run.folder})"
        )
    return 0
