"""Trained-model cache with per-epoch checkpoints: one implementation for every task.

A training run lives in ``<models root>/<task>/<key>/`` where ``key`` hashes the
model/training parameters and the fingerprints of the data it was trained on, so a
re-rendered report reuses weights trained with the same recipe on the same data,
and any change of recipe or data trains anew. The folder holds

- ``checkpoint.pt`` -- the latest epoch (model, optimizer, scheduler, RNG states, history),
  rewritten atomically after every epoch so an interrupted run resumes where it stopped;
- ``final.pt`` -- the finished weights (a plain state dict), written once training completed;
- ``run.json`` -- written last: the parameters, data fingerprints, history, best epoch, training
  time, and the size and sha256 of ``final.pt`` (checked when the weights are loaded).

Every ``.pt`` file is read with ``torch.load(weights_only=True)``: tensors and plain containers
only, so a model file cannot run code. The models root is ``BLOODLIB_MODELS`` if set, else
``<user cache>/models``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bloodlib.fsutil import atomic_write_bytes, atomic_write_text
from bloodlib.paths import cache_dir


def models_root() -> Path:
    """Where trained models are cached (``BLOODLIB_MODELS`` or ``<user cache>/models``)."""
    value = os.environ.get("BLOODLIB_MODELS")
    return Path(value).expanduser().resolve() if value else cache_dir() / "models"


def run_key(params: dict[str, Any], data_checksums: dict[str, str]) -> str:
    """A short stable hash of the training parameters and the data checksums."""
    canonical = json.dumps({"params": params, "data": data_checksums}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _torch_bytes(obj: Any) -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _torch_load(path: Path) -> Any:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


class ModelNotTrainedError(FileNotFoundError):
    """The model cache holds no finished run for these parameters and data."""


@dataclass(frozen=True)
class ModelRun:
    """One cached training run (see the module docstring for its files).

    Args:
        task: e.g. ``"detection/ssd_vgg16"``.
        params: everything that defines the trained weights (architecture, recipe, seed).
        data_checksums: data set name -> fingerprint of the data it trains on
            (:func:`bloodlib.data.fingerprint`).
        root: models root; default :func:`models_root`.
    """

    task: str
    params: dict[str, Any]
    data_checksums: dict[str, str]
    root: Path | None = None

    @property
    def key(self) -> str:
        return run_key(self.params, self.data_checksums)

    @property
    def folder(self) -> Path:
        return (self.root or models_root()) / self.task / self.key

    @property
    def final_path(self) -> Path:
        return self.folder / "final.pt"

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / "checkpoint.pt"

    @property
    def info_path(self) -> Path:
        return self.folder / "run.json"

    def is_complete(self) -> bool:
        return self.info_path.is_file() and self.final_path.is_file()

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Atomically replace ``checkpoint.pt`` with ``state`` (tensors and plain containers)."""
        atomic_write_bytes(self.checkpoint_path, _torch_bytes(state))

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The latest checkpoint, or None if training never saved one."""
        if not self.checkpoint_path.is_file():
            return None
        return _torch_load(self.checkpoint_path)

    def save_final(
        self,
        model_state: dict[str, Any],
        *,
        history: list[dict[str, Any]],
        best_epoch: int,
        train_seconds: float,
        **extra: Any,
    ) -> None:
        """Store the finished weights, then ``run.json``; the checkpoint is then removed."""
        weights = _torch_bytes(model_state)
        atomic_write_bytes(self.final_path, weights)
        info = {
            "task": self.task,
            "key": self.key,
            "params": self.params,
            "data": self.data_checksums,
            "history": history,
            "best_epoch": best_epoch,
            "train_seconds": train_seconds,
            **extra,
            "files": {"final.pt": {"size": len(weights), "sha256": hashlib.sha256(weights).hexdigest()}},
        }
        atomic_write_text(self.info_path, json.dumps(info, indent=2, default=str) + "\n")
        self.checkpoint_path.unlink(missing_ok=True)

    def load_final(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The weights (a state dict) and the ``run.json`` record of a completed run.

        Raises:
            ModelNotTrainedError: the run has not finished (the message says how to train it).
        """
        if not self.is_complete():
            raise ModelNotTrainedError(
                f"no trained model for {self.task} (key {self.key}) in {self.folder}; "
                "train it with `bloodlib train` or render the notebook"
            )
        return load_final(self.folder)


class CorruptModelError(RuntimeError):
    """A cached model file differs from what its ``run.json`` recorded (truncated or altered)."""


def load_final(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``final.pt``'s weights and ``run.json``'s record of the finished run in ``folder``.

    Raises:
        CorruptModelError: ``final.pt`` is not the file ``run.json`` recorded (size or sha256).
    """
    import io

    import torch

    info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    data = (folder / "final.pt").read_bytes()
    expected = info.get("files", {}).get("final.pt")
    if expected and (len(data) != expected["size"] or hashlib.sha256(data).hexdigest() != expected["sha256"]):
        raise CorruptModelError(
            f"{folder / 'final.pt'} is damaged: its size or sha256 differs from {folder / 'run.json'}; "
            f"remove {folder} and train again with `bloodlib train`"
        )
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), info


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _without(params: dict[str, Any], drop: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    out = _canonical(params)
    for keys in drop:
        node = out
        for key in keys[:-1]:
            node = node.get(key, {})
        node.pop(keys[-1], None)
    return out


def find_run(
    root: Path, task: str, params: dict[str, Any], ignore: tuple[tuple[str, ...], ...] = ()
) -> ModelRun | None:
    """The finished run of ``task`` under ``root`` whose ``run.json`` parameters equal ``params``
    (keys in ``ignore`` left out on both sides); the newest if several, None if none.

    For a user who has a models folder but not the training data, so the exact key (which
    hashes the data fingerprints) cannot be computed. ``ignore`` holds key paths such as
    ``("split", "val_groups")`` for parameters derived from the data.
    """
    wanted = _without(params, ignore)
    found = []
    for info in sorted((root / task).glob("*/run.json")):
        try:
            stored = json.loads(info.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        run = ModelRun(task, stored.get("params", {}), stored.get("data", {}), root)
        if run.folder == info.parent and run.is_complete() and _without(run.params, ignore) == wanted:
            found.append(run)
    return max(found, key=lambda run: (run.final_path.stat().st_mtime, run.key)) if found else None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) for a reproducible run."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
