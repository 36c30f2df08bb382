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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bloodlib.classification.bccd import bccd_wbc_index
from bloodlib.classification.canvases import CanvasSet, build_canvases
from bloodlib.classification.crops import CropPolicy
from bloodlib.classification.data import dataset2_index, grouped_split, source_map_path, subsample_per_group
from bloodlib.classification.engine import TrainConfig, fit
from bloodlib.classification.models import CUSTOM_MODELS, MODEL_NAMES, build_model
from bloodlib.classification.params import WbcSubtypesParams
from bloodlib.classification.transforms import AugmentConfig
from bloodlib.modelcache import ModelRun, seed_everything

NOTEBOOK = "02_wbc_subtypes"
TASK = "wbc_subtypes"
EVAL_SETS = ("TEST", "TEST_SIMPLE", "BCCD")


def crop_policy(p: WbcSubtypesParams) -> CropPolicy:
    return CropPolicy(
        input_size=tuple(p.input_size),
        context=p.context,
        canvas_scale=p.canvas_scale,
        min_side=p.min_box_side,
        white_percentile=p.white_percentile,
        nucleus_to_cell=p.nucleus_to_cell,
    )


def augment_config(p: WbcSubtypesParams) -> AugmentConfig:
    return AugmentConfig(
        rotation=p.aug_rotation,
        shear=p.aug_shear,
        translate=p.aug_translate,
        scale=p.aug_scale,
        brightness=p.aug_brightness,
        contrast=p.aug_contrast,
        saturation=p.aug_saturation,
        hue=p.aug_hue,
        blur_p=p.aug_blur_p,
    )


def train_config(p: WbcSubtypesParams, model: str) -> TrainConfig:
    return TrainConfig(
        epochs=p.epochs_custom if model in CUSTOM_MODELS else p.epochs_standard,
        samples_per_epoch=p.samples_per_epoch,
        batch_size=p.batch_size,
        lr=p.lr_custom if model in CUSTOM_MODELS else p.lr_standard,
        final_lr_fraction=p.final_lr_fraction,
        weight_decay=p.weight_decay,
        label_smoothing=p.label_smoothing,
        aux_loss_weight=p.aux_loss_weight,
        seed=p.seed,
    )


def data_checksums() -> dict[str, Any]:
    """Registry checksums of blood-cells and BCCD plus the source map's sha256 (cache keys).

    Raises:
        bloodlib.data.DataMismatchError: a data set is missing or differs from the registry.
    """
    from bloodlib.data import locate, verified_checksums
    from bloodlib.data.download import sha256_file

    out: dict[str, Any] = {name: verified_checksums(name) for name in ("blood-cells", "BCCD")}
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
    checksums: dict[str, Any]


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


def load_data(p: WbcSubtypesParams, *, progress: bool = True) -> WbcData:
    """Index, split, and crop every image set (canvases cached, see :mod:`.canvases`)."""
    from bloodlib.data import locate

    blood_cells, bccd = locate("blood-cells"), locate("BCCD")
    checksums = data_checksums()
    policy = crop_policy(p)
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
    sets = {}
    for name, frame in frames.items():
        frame = frame.reset_index(drop=True)
        canvases = build_canvases(frame, policy, data_checksums=checksums, desc=f"crop {name}", progress=progress)
        sets[name] = CanvasSet(name, frame, canvases)
    return WbcData(policy, sets, split, bccd_all, skipped, checksums)


@dataclass
class TrainedModel:
    """A trained classifier (eval mode) and how it got there."""

    name: str
    model: torch.nn.Module
    history: pd.DataFrame
    best_epoch: int
    train_seconds: float
    cached: bool
    run_folder: Path


def val_groups(split: pd.DataFrame) -> list[int]:
    """Sorted group ids of the validation subset of a :func:`~.data.grouped_split` result."""
    return sorted(int(g) for g in split.loc[split["subset"] == "val", "group"].unique())


def model_run(p: WbcSubtypesParams, name: str, checksums: dict[str, Any], val_groups: list[int]) -> ModelRun:
    """The cache entry of model ``name``: keyed by every parameter that shapes its weights and by
    the validation groups (so a changed split never reuses weights trained on another)."""
    shaping = {
        "model": name,
        "pretrained": p.pretrained,
        "policy": dataclasses.asdict(crop_policy(p)),
        "augment": dataclasses.asdict(augment_config(p)),
        "train": dataclasses.asdict(train_config(p, name)),
        "split": {
            "val_fraction": p.val_fraction,
            "train_max_per_source": p.train_max_per_source,
            "val_max_per_source": p.val_max_per_source,
            "val_groups": val_groups,
        },
    }
    data = {k: checksums[k] for k in ("blood-cells", "source_map")}
    return ModelRun(f"{TASK}/{name}", shaping, {k: str(v) for k, v in data.items()})


def _epoch_logger(name: str):
    from tqdm.auto import tqdm

    def log(row: dict[str, Any]) -> None:
        train = f"train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f}"
        val = f"val loss {row['val_loss']:.3f} bal. acc {row['val_bacc']:.3f}"
        tqdm.write(f"{name} epoch {row['epoch']}: {train} | {val} | {row['seconds']:.0f} s")

    return log


def train_models(p: WbcSubtypesParams, data: WbcData, *, progress: bool = True) -> dict[str, TrainedModel]:
    """Train (or load) every model of ``p.models`` in order."""
    unknown = [m for m in p.models if m not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODEL_NAMES)}")
    torch.set_num_threads(p.num_threads)
    out = {}
    for name in p.models:
        run = model_run(p, name, data.checksums, val_groups(data.split))
        cached = run.is_complete()
        if cached:
            model = build_model(name, pretrained=False)  # the cached weights replace any init
            final = run.load_final()
        else:
            seed_everything(p.seed)
            model = build_model(name, pretrained=p.pretrained)
            started = time.perf_counter()
            result = fit(
                model,
                data.sets["train"],
                data.sets["val"],
                config=train_config(p, name),
                augment=augment_config(p),
                input_size=data.policy.input_size,
                run=run,
                progress=progress,
                desc=name,
                on_epoch=_epoch_logger(name) if progress else None,
            )
            run.save_final(
                result["best_state"],
                result["history"],
                best_epoch=result["best_epoch"],
                train_seconds=result["train_seconds"],
                wall_seconds=time.perf_counter() - started,
            )
            final = run.load_final()
        model.load_state_dict(final["model"])
        model.cpu().eval()  # evaluation, feature maps and timings run on the CPU
        out[name] = TrainedModel(
            name=name,
            model=model,
            history=pd.DataFrame(final["history"]),
            best_epoch=int(final["best_epoch"]),
            train_seconds=float(final["train_seconds"]),
            cached=cached,
            run_folder=run.folder,
        )
    return out


def train(profile: str, root: Path) -> int:
    """``bloodlib train wbc --profile <profile>``: train every model of the profile into the cache."""
    from bloodlib.params import load_params

    p = load_params(NOTEBOOK, profile, root)
    data = load_data(p)
    for name, trained in train_models(p, data).items():
        best = trained.history.loc[trained.history["epoch"] == trained.best_epoch].iloc[0]
        state = "cached" if trained.cached else "trained"
        print(
            f"{name:14s} {state:7s} {trained.train_seconds:7.1f} s  best epoch {trained.best_epoch}  "
            f"val bal. acc {best['val_bacc']:.3f}  ({trained.run_folder})"
        )
    return 0
