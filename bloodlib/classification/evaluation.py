"""Predictions of every model on every evaluation set, Table 3, the paper's numbers beside it, and the
model selected on validation."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from bloodlib.classification.canvases import CanvasSet
from bloodlib.classification.data import CLASSES
from bloodlib.classification.engine import predict_logits
from bloodlib.classification.metrics import METRICS, confusion, metrics_table, scores
from bloodlib.classification.train import EVAL_SETS
from bloodlib.modelcache import cached_output, source_digest
from bloodlib.paper import paper_results
from bloodlib.training import TrainedModel

#: our model name -> key in the ``task2_wbc_subtypes`` section of ``paper_results.yaml``.
PAPER_KEYS = {
    "arch1": "custom_arch1",
    "arch2": "custom_arch2",
    "resnet50": "resnet50",
    "densenet121": "densenet121",
    "vgg16": "vgg16",
    "mobilenet_v2": "mobilenet_v2",
    "inception_v3": "inception",
    "xception": "xception",
}


def paper_accuracy() -> dict[str, float]:
    """Our model name -> the paper's Table 3 accuracy (``paper_results.yaml``)."""
    paper = paper_results("task2_wbc_subtypes")
    return {name: float(paper[key]["accuracy"]) for name, key in PAPER_KEYS.items()}


def table3_sets(sets: dict[str, CanvasSet], names: tuple[str, ...] = EVAL_SETS) -> dict[str, CanvasSet]:
    """The sets named ``names`` (the test sets Table 3 reports), in that order."""
    missing = [name for name in names if name not in sets]
    if missing:
        raise ValueError(f"no set named {', '.join(missing)}; sets: {', '.join(sets)}")
    return {name: sets[name] for name in names}


def logits(
    model: torch.nn.Module | TrainedModel,
    canvases: torch.Tensor,
    input_size: tuple[int, int],
    *,
    batch_size: int,
    tta: bool = False,
) -> torch.Tensor:
    """:func:`~.engine.predict_logits` ``(N, C)``; for a :class:`~bloodlib.training.TrainedModel`
    kept in the model cache (:func:`~bloodlib.modelcache.cached_output`, keyed by its weights, a
    sha256 of ``canvases`` and the prediction code), so a re-rendered report does not predict again."""
    if not isinstance(model, TrainedModel):
        return predict_logits(model, canvases, input_size, batch_size, tta=tta)
    canvases = canvases.contiguous()
    inputs = {
        "canvases": hashlib.sha256(canvases.numpy().data).hexdigest(),
        "shape": list(canvases.shape),
        "input_size": list(input_size),
        "tta": tta,
        "code": source_digest("bloodlib.classification.engine", "bloodlib.classification.crops"),
    }

    def compute() -> np.ndarray:
        return predict_logits(model.model, canvases, input_size, batch_size, tta=tta).numpy()

    return torch.from_numpy(cached_output(model.run, "logits", inputs, compute))


def predictions(
    models: Mapping[str, torch.nn.Module | TrainedModel],
    sets: dict[str, CanvasSet],
    input_size: tuple[int, int],
    *,
    batch_size: int,
    tta: bool = False,
) -> pd.DataFrame:
    """One row per (model, set, image): ``model, set, item, y_true, y_pred, group, source, p_<CLASS>...``.

    ``tta``: average the class probabilities over each input's rotations and mirror images
    (:func:`~.engine.symmetry_views`). Trained models' predictions come from the model cache when
    it holds them (:func:`logits`)."""
    frames = []
    for name, model in models.items():
        for set_name, data in sets.items():
            logits_ = logits(model, data.canvases, input_size, batch_size=batch_size, tta=tta)
            probs = torch.softmax(logits_, 1).numpy()
            frame = pd.DataFrame(
                {
                    "model": name,
                    "set": set_name,
                    "item": np.arange(len(data)),
                    "y_true": data.labels.numpy(),
                    "y_pred": probs.argmax(1),
                    "group": data.frame["group"].to_numpy(),
                    "source": data.frame["source"].to_numpy(),
                }
            )
            for k, label in enumerate(CLASSES):
                frame[f"p_{label}"] = probs[:, k]
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def table3(preds: pd.DataFrame, *, n_boot: int, seed: int, paper: dict[str, dict] | None = None) -> pd.DataFrame:
    """:func:`~.metrics.metrics_table` plus the paper's Table 3 values (``paper_<metric>``)."""
    table = metrics_table(preds, n_classes=len(CLASSES), n_boot=n_boot, seed=seed)
    for metric in METRICS:
        table[f"paper_{metric}"] = [
            (paper or {}).get(PAPER_KEYS.get(m, m), {}).get(metric, np.nan) for m in table["model"]
        ]
    return table


def formatted(table: pd.DataFrame, set_name: str) -> pd.DataFrame:
    """Display form of one set's rows: ``0.93 [0.88, 0.97]`` per metric, paper value beside."""
    part = table[table["set"] == set_name]
    out = pd.DataFrame({"model": part["model"], "images": part["images"], "sources": part["groups"]})
    for metric in METRICS:
        out[metric] = [
            f"{v:.3f} [{lo:.2f}, {hi:.2f}]"
            for v, lo, hi in zip(part[metric], part[f"{metric}_lo"], part[f"{metric}_hi"])
        ]
        out[f"paper {metric}"] = part[f"paper_{metric}"].to_numpy()
    return out.reset_index(drop=True)


def formatted_sets(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Set name -> :func:`formatted` rows, for TEST, :data:`TEST_UNSEEN`, TEST_SIMPLE and BCCD."""
    return {name: formatted(table, name) for name in ("TEST", TEST_UNSEEN, *EVAL_SETS[1:])}


def confusions(preds: pd.DataFrame, set_name: str) -> dict[str, np.ndarray]:
    """Model -> confusion matrix (rows true, columns predicted) on ``set_name``."""
    part = preds[preds["set"] == set_name]
    return {
        name: confusion(g["y_true"].to_numpy(), g["y_pred"].to_numpy(), len(CLASSES))
        for name, g in part.groupby("model", sort=False)
    }


def selected_model(trained: dict) -> str:
    """The trained model (``bloodlib.training.TrainedModel``) with the highest validation balanced
    accuracy at its selected epoch (never TEST)."""
    return max(trained, key=lambda name: trained[name].best_row["val_bacc"])


def tta_selection(
    models: Mapping[str, torch.nn.Module | TrainedModel],
    val: CanvasSet,
    input_size: tuple[int, int],
    *,
    batch_size: int,
    tta: bool,
) -> pd.DataFrame:
    """Validation balanced accuracy and accuracy of every model with test-time augmentation off and on
    (:func:`predictions` of the validation set ``val``), the gain, and ``params``: the setting the
    parameters fix (``tta``). The evidence for that setting, computed in the same run."""
    rows = []
    off = predictions(models, {"val": val}, input_size, batch_size=batch_size, tta=False)
    on = predictions(models, {"val": val}, input_size, batch_size=batch_size, tta=True)
    for name in models:
        row: dict[str, object] = {"model": name}
        for label, frame in (("off", off), ("on", on)):
            part = frame[frame["model"] == name]
            point = scores(confusion(part["y_true"].to_numpy(), part["y_pred"].to_numpy(), len(CLASSES)))
            row[f"val_bacc_tta_{label}"] = point["recall"]  # macro recall = balanced accuracy
            row[f"val_acc_tta_{label}"] = point["accuracy"]
        row["gain"] = row["val_bacc_tta_on"] - row["val_bacc_tta_off"]
        rows.append(row)
    table = pd.DataFrame(rows)
    table["params"] = "on" if tta else "off"
    return table


#: The Table 3 set of TEST without its source groups that also occur in TRAIN.
TEST_UNSEEN = "TEST_UNSEEN"


def without_train_groups(preds: pd.DataFrame, train_groups: set[int], *, source: str = "TEST") -> pd.DataFrame:
    """``preds`` (of :func:`predictions`) plus the rows of set ``source`` whose source group never occurs
    in TRAIN, as set :data:`TEST_UNSEEN`: official TEST without the near-duplicates of TRAIN sources
    that straddle the upstream split (``train_groups``: every group of dataset2's TRAIN)."""
    part = preds[(preds["set"] == source) & ~preds["group"].isin(train_groups)].assign(set=TEST_UNSEEN)
    return pd.concat([preds, part], ignore_index=True)
