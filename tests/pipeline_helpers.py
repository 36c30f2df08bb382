"""Shared pieces of the pipeline tests: tiny untrained models from the real factories, bad input files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import torch

from bloodlib.classification.models import build_model
from bloodlib.classification.train import crop_policy
from bloodlib.detection.data import CLASSES
from bloodlib.detection.model import build_ssd
from bloodlib.detection.train import model_kwargs
from bloodlib.params import load_params
from bloodlib.pipeline import io as pipeline_io
from bloodlib.pipeline.models import PipelineModels
from tests.paths import ROOT, require_data


def quick_params():
    """The quick profile's pipeline parameters (one DataLoader worker, as in every profile)."""
    return load_params("04_pipeline", "quick", ROOT)


def tiny_models(threshold: float = 0.0) -> PipelineModels:
    """An untrained quick-profile SSD300 (background logit lowered, so it draws boxes of every class) and an
    untrained arch2, from the real factories; every detection above ``threshold`` is counted."""
    torch.manual_seed(0)
    detector = build_ssd(**model_kwargs(load_params("01_detection", "quick", ROOT), "vgg16")).eval()
    with torch.no_grad():  # untrained: the three cell classes about equally likely, the background less
        for conv in detector.head.classification_head.module_list:
            conv.weight.mul_(0.01)
            conv.bias.zero_()
            conv.bias[0 :: len(CLASSES) + 1] = -3.0
    classifier = build_model("arch2").eval()
    policy = crop_policy(load_params("02_wbc_subtypes", "quick", ROOT))
    info = {"detector": {"name": "ssd_vgg16", "key": "tiny"}, "classifier": {"name": "arch2", "key": "tiny"}}
    return PipelineModels(detector, classifier, policy, {c: threshold for c in CLASSES}, "test: fixed", info)


def bccd_images(n: int) -> list[Path]:
    """The first ``n`` BCCD JPEGs (fails the test without BLOODLIB_DATA)."""
    return sorted((require_data() / "BCCD" / "JPEGImages").glob("*.jpg"))[:n]


def colour_image(height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    """A random ``(H, W, 3)`` uint8 RGB image with distinct channels."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    image[..., 0] = np.clip(image[..., 0].astype(int) + 40, 0, 255)
    return image


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    """Write an RGB image with OpenCV (which takes BGR)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]) if rgb.ndim == 3 and rgb.shape[2] == 3 else rgb)
    return path


def bad_inputs(folder: Path) -> dict[str, Path]:
    """One file per bad-input case of ``bloodlib analyze`` (the unreadable one needs :func:`make_unreadable`)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    files["not_an_image"] = folder / "notes.txt"
    files["not_an_image"].write_text("not an image\n")
    good = bccd_images(1)[0]
    data = good.read_bytes()
    files["truncated"] = folder / "truncated.jpg"
    files["truncated"].write_bytes(data[: len(data) // 3])
    files["grayscale"] = write_rgb(folder / "grayscale.png", colour_image()[..., 0])
    rgba = np.dstack([colour_image(seed=1), np.full((120, 160), 128, np.uint8)])
    files["rgba"] = folder / "rgba.png"
    assert cv2.imwrite(str(files["rgba"]), rgba[..., [2, 1, 0, 3]])
    files["png16"] = folder / "png16.png"
    assert cv2.imwrite(str(files["png16"]), (colour_image(seed=2).astype(np.uint16) * 257)[..., ::-1].copy())
    big = cv2.resize(cv2.imread(str(good)), (4400, 3300), interpolation=cv2.INTER_LINEAR)
    files["too_large"] = folder / "too_large.jpg"
    assert cv2.imwrite(str(files["too_large"]), big)
    files["unreadable"] = folder / "unreadable.jpg"
    shutil.copy(good, files["unreadable"])
    return files


def make_unreadable(path: Path, monkeypatch) -> None:
    """chmod 000; as root (who reads anything) the read itself is made to fail."""
    path.chmod(0)
    if os.geteuid() == 0:
        real = pipeline_io.read_bytes

        def read(p):
            if p == path:
                raise PermissionError(13, "Permission denied")
            return real(p)

        monkeypatch.setattr(pipeline_io, "read_bytes", read)
