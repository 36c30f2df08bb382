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

What a finished model predicted can be kept too (:func:`cached_output`): under
``<models root>/predictions/<task>/<key>/``, keyed by the weights' sha256 and a hash of the inputs, so
a re-rendered report reuses predictions of the same weights on the same data (Task 2's 8-view
test-time augmentation of eight models is ~15 minutes on two cores).

Every ``.pt`` file is read with ``torch.load(weights_only=True)``: tensors and plain containers
only, so a model file cannot run code. The models root is ``BLOODLIB_MODELS`` if set, else
``<user cache>/models``.

Nothing read from the cache is trusted: a ``final.pt`` or ``run.json`` that is truncated, altered
or would need code to unpickle raises :class:`CorruptModelError` naming the file (``bloodlib
train``, inside :func:`rebuilding_damaged`, moves the entry aside with :meth:`ModelRun.set_aside`
and trains it again); a damaged
``checkpoint.pt`` raises :class:`CorruptCheckpointError` (training warns and starts over). Training
a key holds :meth:`ModelRun.lock`, so two processes never train the same model at once.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bloodlib import progress
from bloodlib.fsutil import atomic_write_bytes, atomic_write_text, file_lock, lock_timeout, move_aside
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


class ModelNotTrainedError(FileNotFoundError):
    """The model cache holds no finished run for these parameters and data."""


class CorruptModelError(RuntimeError):
    """A cached model file is damaged (truncated, altered, not what ``run.json`` recorded) or unsafe
    (it would need code to unpickle); the message names the file."""

    def __init__(self, message: str, path: Path | None = None, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason or message  # what is wrong with the file, without advice


_REBUILD_DAMAGED = contextvars.ContextVar("bloodlib_rebuild_damaged", default=False)


@contextlib.contextmanager
def rebuilding_damaged():
    """While the block runs (``bloodlib train``), training entry points move a damaged cache entry aside
    and train it again instead of raising :class:`CorruptModelError`."""
    token = _REBUILD_DAMAGED.set(True)
    try:
        yield
    finally:
        _REBUILD_DAMAGED.reset(token)


def rebuild_damaged() -> bool:
    """Whether a damaged cache entry is to be rebuilt here (inside :func:`rebuilding_damaged`)."""
    return _REBUILD_DAMAGED.get()


class CorruptCheckpointError(CorruptModelError):
    """``checkpoint.pt`` cannot be read back; training starts over."""


#: What ``torch.load`` raises for a truncated, altered or unsafe file.
_LOAD_ERRORS = (RuntimeError, EOFError, ValueError, TypeError, AttributeError, ImportError, KeyError, IndexError)


def torch_load_bytes(data: bytes, path: Path) -> Any:
    """``torch.load(weights_only=True)`` of ``data`` (the content of ``path``).

    Raises:
        CorruptModelError: the bytes are not a readable torch file, or they hold something other than
            tensors and plain containers (a pickle that would run code is refused, never executed).
    """
    import io
    import pickle
    import re
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the file is refused or loaded anyway
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if unsafe:
            raise CorruptModelError(
                f"{path} was refused: it asks to load {unsafe.group(1)}, which is not a tensor or a plain "
                "container and could run code; it was not loaded (only tensors and plain containers are read)",
                path,
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(err))
        reason = detail.group(1) if detail else "not a torch file"
        raise CorruptModelError(f"{path} is damaged (not a readable torch file: {reason})", path) from None
    except (*_LOAD_ERRORS, pickle.PickleError, OSError) as err:
        reason = str(err).split(". ")[0] or type(err).__name__
        raise CorruptModelError(f"{path} is damaged (truncated or not a torch file: {reason})", path) from None


def _torch_load(path: Path) -> Any:
    return torch_load_bytes(Path(path).read_bytes(), path)


def file_record(data: bytes) -> dict[str, Any]:
    """What ``run.json`` records of an artefact: ``{"size": bytes, "sha256": hex digest}``."""
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def check_record(data: bytes, expected: dict[str, Any] | None, path: Path, info_path: Path) -> None:
    """Raise :class:`CorruptModelError` if ``data`` (read from ``path``) is not what ``expected`` records."""
    if not expected:
        return
    if len(data) != expected.get("size") or hashlib.sha256(data).hexdigest() != expected.get("sha256"):
        raise CorruptModelError(
            f"{path} is damaged: its size or sha256 differs from what {info_path} recorded "
            f"({len(data)} bytes, expected {expected.get('size')})",
            path,
        )


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

    @property
    def lock_path(self) -> Path:
        """The lock of this key: ``<root>/<task>/.<key>.lock`` (outside the folder, which may be moved aside)."""
        return self.folder.with_name(f".{self.key}.lock")

    def is_complete(self) -> bool:
        """Whether training finished (``run.json`` and ``final.pt`` exist; :meth:`load_final` verifies them)."""
        return self.info_path.is_file() and self.final_path.is_file()

    def lock(self, timeout: float | None = None):
        """A context manager holding this key's inter-process lock (:func:`bloodlib.fsutil.file_lock`).

        ``timeout`` defaults to ``BLOODLIB_LOCK_TIMEOUT`` (unset: wait until the other process is done).

        Raises:
            bloodlib.fsutil.LockTimeoutError: another process held it longer (the message names it).
        """
        return file_lock(
            self.lock_path,
            what=f"training {self.task} (key {self.key})",
            timeout=lock_timeout() if timeout is None else timeout,
        )

    def set_aside(self) -> Path:
        """Rename this entry's folder to ``<key>.corrupt-<n>`` (kept for inspection) and return the new path."""
        return move_aside(self.folder, "corrupt")

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Atomically replace ``checkpoint.pt`` with ``state`` (tensors and plain containers)."""
        atomic_write_bytes(self.checkpoint_path, _torch_bytes(state))

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The latest checkpoint, or None if training never saved one.

        Raises:
            CorruptCheckpointError: the file is truncated, altered, unsafe or not a dict.
        """
        if not self.checkpoint_path.is_file():
            return None
        try:
            state = _torch_load(self.checkpoint_path)
        except CorruptModelError as err:
            raise CorruptCheckpointError(str(err), self.checkpoint_path) from None
        if not isinstance(state, dict):
            raise CorruptCheckpointError(f"{self.checkpoint_path} is not a checkpoint", self.checkpoint_path)
        return state

    def resume_checkpoint(self) -> dict[str, Any] | None:
        """:meth:`load_checkpoint` for :func:`bloodlib.training.fit`, except that a damaged checkpoint (or
        one without every key of :data:`CHECKPOINT_KEYS`) is moved aside (``checkpoint.pt.corrupt-<n>``)
        with a warning and None is returned: training starts over."""
        import warnings

        try:
            state = self.load_checkpoint()
            missing = [k for k in CHECKPOINT_KEYS if state is not None and k not in state]
            if missing:
                raise CorruptCheckpointError(
                    f"{self.checkpoint_path} is not a training checkpoint (it lacks {', '.join(missing)})",
                    self.checkpoint_path,
                )
            return state
        except CorruptCheckpointError as err:
            aside = move_aside(self.checkpoint_path, "corrupt")
            warnings.warn(f"{err.reason}; moved to {aside.name}, training {self.task} starts over", stacklevel=2)
            return None

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
            "files": {"final.pt": file_record(weights)},
        }
        atomic_write_text(self.info_path, json.dumps(info, indent=2, default=str) + "\n")
        self.checkpoint_path.unlink(missing_ok=True)

    def load_final(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The weights (a state dict) and the ``run.json`` record of a completed run.

        Raises:
            ModelNotTrainedError: the run has not finished (the message says how to train it).
            CorruptModelError: ``final.pt`` or ``run.json`` is damaged or unsafe (names the file).
        """
        if not self.is_complete():
            raise ModelNotTrainedError(
                f"no trained model for {self.task} (key {self.key}) in {self.folder}; "
                "train it with `bloodlib train` or render the notebook"
            )
        try:
            return load_final(self.folder)
        except CorruptModelError as err:
            raise CorruptModelError(
                f"{err}. The cache entry {self.folder} cannot be used: `bloodlib train` moves it aside and "
                "trains it again",
                err.path,
                reason=err.reason,
            ) from None


#: What every checkpoint holds (see :func:`bloodlib.training.fit`).
CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scheduler", "rng", "history")


def read_info(folder: Path) -> dict[str, Any]:
    """``run.json`` of a cache entry.

    Raises:
        CorruptModelError: it is not a JSON object (truncated or altered).
    """
    path = Path(folder) / "run.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise CorruptModelError(f"{path} is damaged (not valid JSON: {err})", path) from None
    if not isinstance(info, dict) or not isinstance(info.get("files", {}), dict):
        raise CorruptModelError(f"{path} is damaged (not a run record)", path)
    return info


def verify_file(folder: Path, name: str, info: dict[str, Any] | None = None) -> bytes:
    """The bytes of ``folder/name`` once they match the size and sha256 ``run.json`` recorded for it.

    Raises:
        CorruptModelError: they differ, or ``run.json`` is damaged.
    """
    folder = Path(folder)
    info = read_info(folder) if info is None else info
    data = (folder / name).read_bytes()
    check_record(data, info.get("files", {}).get(name), folder / name, folder / "run.json")
    return data


def load_final(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``final.pt``'s weights and ``run.json``'s record of the finished run in ``folder``.

    Raises:
        CorruptModelError: ``run.json`` is damaged, ``final.pt`` is not the file it recorded (size or
            sha256), cannot be read, or holds more than tensors and plain containers. The message
            names the file; ``bloodlib train`` moves such an entry aside and trains it again.
    """
    folder = Path(folder)
    info = read_info(folder)
    data = verify_file(folder, "final.pt", info)
    for name in info.get("files", {}):
        if name != "final.pt" and (folder / name).is_file():
            verify_file(folder, name, info)
    weights = torch_load_bytes(data, folder / "final.pt")
    if not isinstance(weights, dict):
        raise CorruptModelError(f"{folder / 'final.pt'} is not a state dict", folder / "final.pt")
    return weights, info


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


def cached_output(run: ModelRun, kind: str, inputs: dict[str, Any], compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()`` for the finished ``run``, or the array it returned before for the same weights and inputs.

    Args:
        run: a completed cache entry; its ``final.pt`` sha256 (``run.json``) is part of the key, so
            weights trained again under the same key never reuse old predictions.
        kind: what is computed, e.g. ``"logits"`` (the file name's prefix).
        inputs: everything else the output depends on (a hash of the input data, sizes, flags),
            JSON-serialisable.
        compute: returns a numeric ``numpy`` array.

    The array is stored as ``<models root>/predictions/<task>/<key>/<kind>-<hash>.npy`` and read
    with ``allow_pickle=False``; a file that cannot be read back is computed and written again. The
    seconds computing it took are kept beside it (:func:`bloodlib.progress.record_cost`) and reported
    to the report runner when it is reused (:func:`bloodlib.progress.reused_file`).

    Raises:
        ModelNotTrainedError: ``run`` has not finished training.
    """
    if not run.is_complete():
        raise ModelNotTrainedError(f"no trained model for {run.task} (key {run.key}) in {run.folder}")
    weights = read_info(run.folder)["files"].get("final.pt", {}).get("sha256", "")
    path = (
        (run.root or models_root())
        / "predictions"
        / run.task
        / run.key
        / f"{kind}-{run_key(inputs, {'final.pt': weights})}.npy"
    )
    if path.is_file():
        try:
            values = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            pass  # damaged: computed again below
        else:
            progress.reused_file(path, phase="evaluation", what=f"{run.task} {kind}")
            return values
    started = time.perf_counter()
    values = numeric_array(compute(), f"{kind}: compute()'s result")
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
    progress.record_cost(path, time.perf_counter() - started)
    return values


def numeric_array(values: Any, what: str) -> np.ndarray:
    """``values`` as an array of numbers (bool, integer or float), what the caches keep without pickle.

    Raises:
        ValueError: they are not numbers (the message names ``what`` and the dtype).
    """
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{what}: only numeric arrays can be kept, got {array.dtype}")
    return array


def source_digest(*modules: str) -> str:
    """sha256 of the source of ``modules`` (dotted names; a package counts every ``.py`` file in it): kept
    outputs name the code that computed them, so a change of that code computes them anew."""
    import importlib.util

    digest = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"no module named {name!r}")
        origin = Path(spec.origin)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        for path in files:  # names relative to the module, so every checkout of the same code agrees
            digest.update(f"{name}/{path.relative_to(origin.parent).as_posix()}".encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
