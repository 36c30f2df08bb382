"""Throughput of the pipeline beside torchvision's ``ssd300_vgg16``, measured in one run.

Both read the same JPEGs through the same DataLoader (decoding in ``num_workers`` processes)
with ``batch_size`` images per forward pass and the same torch threads:

- *pipeline*: :func:`bloodlib.pipeline.infer.run_fields` end to end -- decode, detection,
  count thresholds, WBC crops and classification -- in the profile's precision, and in float32;
- *torchvision*: ``ssd300_vgg16(weights=None, weights_backbone=None, num_classes=4)`` in eval
  mode (full-width VGG16, torchvision's own resize/normalise, float32), detection only;
- *large fields* (general models only): 2x2 mosaics of the same images (1280x960, four times the
  cells), which the general detector tiles; reported in images/s and megapixels/s.

The machine may be shared, so the variants are interleaved ``repeats`` times and the median
images/s of each is reported, with the load average before and after.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bloodlib import runtime
from bloodlib.pipeline.params import PipelineParams


def _as_tensor(rgb: np.ndarray) -> torch.Tensor:
    """Full-size ``(3, H, W)`` float in [0, 1]: what a torchvision detector takes."""
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255)


def torchvision_images_per_s(paths: Sequence[Path], *, batch_size: int, num_workers: int) -> tuple[float, Any]:
    """Images/s of torchvision's ``ssd300_vgg16`` on ``paths`` (decoded in the same kind of DataLoader)."""
    from torchvision.models.detection import ssd300_vgg16

    from bloodlib.pipeline.infer import loader

    model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=4).eval()
    with torch.inference_mode():
        model([torch.rand(3, 480, 640)])  # warm-up
        started = time.perf_counter()
        n = 0
        for batch in loader(paths, _as_tensor, batch_size=batch_size, num_workers=num_workers):
            model([item["input"] for item in batch])
            n += len(batch)
        return n / (time.perf_counter() - started), model


def pipeline_images_per_s(paths: Sequence[Path], models: Any, p: PipelineParams, precision: str) -> tuple[float, str]:
    """Images/s of :func:`~bloodlib.pipeline.infer.run_fields` (decode, detect, classify) on ``paths``,
    and the precision it ran in."""
    from bloodlib.pipeline.infer import Classifier, run_fields_of

    detector, classifier = models.fast_detector(precision), Classifier(models.classifier, models.policy)
    list(run_fields_of(p, paths[: p.batch_size], detector, classifier, models.thresholds, num_workers=0))  # warm-up
    started = time.perf_counter()
    n = sum(1 for _ in run_fields_of(p, paths, detector, classifier, models.thresholds))
    return n / (time.perf_counter() - started), detector.precision


def mosaics(paths: Sequence[Path], folder: Path, count: int) -> list[Path]:
    """``count`` 2x2 mosaics of consecutive images of ``paths`` written as JPEGs into ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(count):
        tiles = [Image.open(paths[(4 * k + i) % len(paths)]).convert("RGB") for i in range(4)]
        w, h = tiles[0].size
        canvas = Image.new("RGB", (2 * w, 2 * h))
        for i, tile in enumerate(tiles):
            canvas.paste(tile.resize((w, h)), ((i % 2) * w, (i // 2) * h))
        out.append(folder / f"mosaic_{k:03d}.jpg")
        canvas.save(out[-1], quality=95)
    return out


def run_bench(
    p: PipelineParams,
    image_dir: Path,
    *,
    images: int,
    torchvision_images: int,
    repeats: int,
    models_root: Path | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Measure both side by side (see the module docstring); returns a JSON-ready dict.

    Raises:
        ModelsNotFoundError: the pipeline's models are not in the cache.
        ValueError: ``image_dir`` holds fewer images than asked for.
    """
    from bloodlib.pipeline.models import load_models

    runtime.configure(threads=p.num_threads)
    paths = sorted(Path(image_dir).glob("*.jpg"))
    if len(paths) < max(images, torchvision_images):
        raise ValueError(f"{image_dir} holds {len(paths)} JPEGs, need {max(images, torchvision_images)}")
    models = load_models(p, root=models_root, train_missing=False)
    load_before = os.getloadavg()
    runs: dict[str, list[float]] = {"pipeline": [], "pipeline_float32": [], "torchvision_ssd300_vgg16": []}
    ran_as = p.precision
    for r in range(repeats):
        rate, ran_as = pipeline_images_per_s(paths[:images], models, p, p.precision)
        runs["pipeline"].append(rate)
        runs["pipeline_float32"].append(pipeline_images_per_s(paths[:images], models, p, "float32")[0])
        runs["torchvision_ssd300_vgg16"].append(
            torchvision_images_per_s(paths[:torchvision_images], batch_size=p.batch_size, num_workers=p.num_workers)[0]
        )
        log(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.2f} images/s" for k, v in runs.items()))
    large: dict[str, Any] = {}
    if models.spec is not None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            fields = mosaics(paths[:images], Path(tmp), max(8, images // 4))
            rates = [pipeline_images_per_s(fields, models, p, p.precision)[0] for _ in range(repeats)]
        rate = statistics.median(rates)
        large = {
            "size": "1280x960 (2x2 mosaics)",
            "fields": len(fields),
            "images_per_second": rate,
            "megapixels_per_second": rate * 1280 * 960 / 1e6,
            "runs": rates,
        }
        log(f"large fields: {rate:.2f} images/s, {large['megapixels_per_second']:.1f} megapixels/s")
    median = {k: statistics.median(v) for k, v in runs.items()}
    reference = median["torchvision_ssd300_vgg16"]
    return {
        "what": "images/s end to end (JPEG decode in a DataLoader, detection, WBC classification for the pipeline; "
        "decode and detection for torchvision's ssd300_vgg16), median of interleaved repeats",
        "images_per_second": median,
        "runs": runs,
        "large_fields": large,
        "speedup_vs_torchvision": median["pipeline"] / reference,
        "speedup_vs_torchvision_float32": median["pipeline_float32"] / reference,
        "targets": {"images_per_second": 20.0, "speedup_vs_torchvision": 10.0},
        "met": {
            "images_per_second": median["pipeline"] >= 20.0,
            "speedup_vs_torchvision": median["pipeline"] / reference >= 10.0,
        },
        "pipeline": {
            "models": models.info.get("models"),
            "detector": models.info["detector"],
            "classifier": models.info["classifier"],
            "precision_requested": p.precision,
            "precision_used": ran_as,
            "batch_size": p.batch_size,
            "num_workers": p.num_workers,
            "images": images,
        },
        "torchvision": {
            "model": "ssd300_vgg16(weights=None, weights_backbone=None, num_classes=4)",
            "images": torchvision_images,
            "precision": "float32",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "image_dir": str(image_dir),
    }
