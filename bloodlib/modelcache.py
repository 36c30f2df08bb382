"""Trained-model cache with per-epoch checkpoints: one implementation for every task.

A training run lives in ``<models root>/<task>/<key>/`` where ``key`` hashes the
model/training parameters and the checksums of the data it was trained on, so a
re-rendered report reuses weights trained with the same recipe on the same data,
and any change of recipe or data trains anew. The folder holds

- ``checkpoint.pt`` -- the latest epoch (model, optimizer, scheduler, RNG states, history),
  rewritten atomically after every epoch so an interrupted run resumes where it stopped;
- ``final.pt`` -- the finished weights, written once training completed;
- ``run.json`` -- the parameters, data checksums and history, human-readable.

The models root is ``BLOODLIB_MODELS`` if set, else ``<user cache>/models``.
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


@dataclass(frozen=True)
class ModelRun:
    """One cached training run (see the module docstring for its files).

    Args:
        task: e.g. ``"detection/ssd_vgg16"``.
        params: everything that defines the trained weights (architecture, recipe, seed).
        data_checksums: data set name -> checksum of the data it trains on.
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

    def is_complete(self) -> bool:
        return self.final_path.is_file()

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Atomically replace ``checkpoint.pt`` with ``state`` (a dict of picklable objects)."""
        atomic_write_bytes(self.checkpoint_path, _torch_bytes(state))

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The latest checkpoint, or None if training never saved one."""
        import torch

        if not self.checkpoint_path.is_file():
            return None
        return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)

    def save_final(self, model_state: dict[str, Any], history: list[dict[str, Any]], **extra: Any) -> None:
        """Store the finished weights and ``run.json``; the checkpoint is then removed."""
        atomic_write_bytes(self.final_path, _torch_bytes({"model": model_state, "history": history, **extra}))
        info = {
            "task": self.task,
            "key": self.key,
            "params": self.params,
            "data": self.data_checksums,
            "history": history,
            **{k: v for k, v in extra.items() if isinstance(v, (str, int, float))},
        }
        atomic_write_text(self.folder / "run.json", json.dumps(info, indent=2, default=str) + "\n")
        self.checkpoint_path.unlink(missing_ok=True)

    def load_final(self) -> dict[str, Any]:
        """``{"model": state_dict, "history": [...], ...}`` of a completed run."""
        import torch

        if not self.is_complete():
            raise FileNotFoundError(
                f"no trained model for {self.task} (key {self.key}) in {self.folder}; "
                "train it with `bloodlib train` or render the notebook"
            )
        return torch.load(self.final_path, map_location="cpu", weights_only=False)


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


def find_run(root: Path, task: str, params: dict[str, Any], ignore: tuple[tuple[str, ...], ...] = ()) -> Path | None:
    """The folder of a finished run of ``task`` under ``root`` whose ``run.json`` parameters equal
    ``params`` (keys in ``ignore`` left out on both sides); the newest if several, None if none.

    For a user who has a models folder but not the training data, so the exact key (which
    hashes the data checksums) cannot be computed. ``ignore`` holds key paths such as
    ``("split", "val_groups")`` for parameters derived from the data.
    """
    wanted = _without(params, ignore)
    found = []
    for info in sorted((root / task).glob("*/run.json")):
        try:
            stored = json.loads(info.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (info.parent / "final.pt").is_file() and _without(stored.get("params", {}), ignore) == wanted:
            found.append(info.parent)
    return max(found, key=lambda f: (f.joinpath("final.pt").stat().st_mtime, f.name)) if found else None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) for a reproducible run."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
