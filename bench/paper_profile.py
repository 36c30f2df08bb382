"""The paper profile's training on one and on N processes (GPUs): images/s, peak memory and time per
epoch of each model, written as JSON, and the full recipe's wall time estimated from them.

    python bench/paper_profile.py measure --device cuda --steps 20 --out bench/results/paper_profile/measure_1.json
    torchrun --standalone --nproc-per-node 4 bench/paper_profile.py measure --device cuda --steps 20 \\
        --out bench/results/paper_profile/measure_4.json
    python bench/paper_profile.py estimate bench/results/paper_profile/measure_*.json \\
        --out bench/results/paper_profile/estimate.json

``bench/paper_profile.sh`` runs the three. What is *measured*: each model of ``params/paper`` (built
by the library with the paper's widths, input sizes, batch per process, optimizer and augmentation;
random initial weights instead of ImageNet's, which cost the same) trains through
:func:`bloodlib.training.fit` -- DDP, bf16 autocast and channels_last exactly as ``bloodlib train``
runs them -- for two epochs of ``--steps`` steps per process on synthetic images of the real sizes
(640x480 fields with BCCD-like boxes; WBC canvases of the paper's canvas size). The second epoch
is timed (the first warms up: cuDNN autotuning, allocator, image decoding). Validation is timed
separately on rank 0 (as in ``fit``) over ``--val-images`` synthetic images. What is *estimated*:
the full recipe's wall time = for every model the paper profile trains, epochs x images per epoch
/ measured images/s + validations x validation images / measured validation images/s, with the
image counts of the real data (counted when ``BLOODLIB_DATA`` holds it, else :data:`RECORDED_SIZES`).
Not in the estimate: data loading before training (canvas cropping, fingerprints), test-set
evaluation, bootstraps and figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WBC_MODELS = ("arch1", "arch2", "resnet50", "densenet121", "vgg16", "mobilenet_v2", "inception_v3", "xception")
#: the measured architectures: the paper profile's models, one entry per distinct network and input
MODELS = ("detection/ssd_vgg16", "detection/ssd_alexnet", *(f"wbc/{m}" for m in WBC_MODELS), "general/detector")

#: image counts of the paper profile's data (counted with ``count_sizes`` on the registry's data)
RECORDED_SIZES = {
    "detection": {"train": 232, "val": 41},  # BCCD random75 split, seed 0
    "wbc": {"val": 2055},  # dataset2 TRAIN's validation sources, all copies
    "general_detector": {
        "train": {"BCCD": 124, "PBC": 303, "Raabin": 350},
        "val": {"BCCD": 57, "PBC": 82, "Raabin": 100},
    },
    "general_classifier": {"val": {"dataset2": 2055, "PBC": 480}},  # PBC: 20 % of 4 x 600 images
}


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- synthetic data of the real sizes --


def synthetic_fields(folder: Path, count: int, *, distinct: int = 32, seed: int = 0) -> list[Any]:
    """``count`` annotations of 640x480 JPEG fields (``distinct`` different images, reused) with
    BCCD-like boxes: 14 RBCs ~90 px across, one WBC ~170 px, two platelets ~30 px."""
    import numpy as np
    from PIL import Image

    from bloodlib.detection.data import CLASSES, Annotation

    rng = np.random.default_rng(seed)
    label = {name: 1 + CLASSES.index(name) for name in CLASSES}
    folder.mkdir(parents=True, exist_ok=True)
    fields = []
    for i in range(min(count, distinct)):
        path = folder / f"field{i}.jpg"
        low = rng.integers(120, 255, (60, 80, 3), dtype=np.uint8)
        Image.fromarray(low).resize((640, 480), Image.BILINEAR).save(path, quality=90)
        sizes = [("RBC", 90.0)] * 14 + [("WBC", 170.0)] + [("Platelets", 30.0)] * 2
        boxes, labels = [], []
        for name, side in sizes:
            side *= rng.uniform(0.85, 1.15)
            x, y = rng.uniform(0, 640 - side), rng.uniform(0, 480 - side)
            boxes.append([x, y, x + side, y + side])
            labels.append(label[name])
        fields.append((path, np.array(boxes, dtype=np.float32), np.array(labels, dtype=np.int64)))
    return [
        Annotation(
            f"field{k}", fields[k % len(fields)][0], 640, 480, fields[k % len(fields)][1], fields[k % len(fields)][2]
        )
        for k in range(count)
    ]


def synthetic_canvases(count: int, canvas: tuple[int, int], *, seed: int = 0) -> Any:
    """``count`` uint8 canvases ``(3, *canvas)`` of four classes (a :class:`CanvasSet`)."""
    import numpy as np
    import pandas as pd
    import torch

    from bloodlib.classification.canvases import CanvasSet
    from bloodlib.classification.data import CLASSES

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % len(CLASSES)
    canvases = torch.randint(0, 256, (count, 3, *canvas), generator=g, dtype=torch.uint8)
    frame = pd.DataFrame({"label": [CLASSES[i] for i in labels], "group": np.arange(count), "source": np.arange(count)})
    return CanvasSet("synthetic", frame, canvases)


# -- the models, their tasks and recipes --


@dataclasses.dataclass
class Bench:
    """One measured model: how to build it, its training task, its recipe, its validation task."""

    build: Callable[[], Any]
    task: Any
    config: Any
    validation: Any
    batch: int


def _detection(backbone: str, steps: int, size: int, val_images: int, max_batch: int, folder: Path) -> Bench:
    from bloodlib.detection import train as det
    from bloodlib.detection.data import BCCDDetection
    from bloodlib.detection.engine import DetectionTask
    from bloodlib.detection.model import build_ssd
    from bloodlib.detection.transforms import train_transforms
    from bloodlib.params import load_params

    p = load_params("01_detection", "paper")
    p = dataclasses.replace(p, pretrained=False, batch_size=min(p.batch_size, max_batch))
    count = min(RECORDED_SIZES["detection"]["train"], steps * p.batch_size * size)
    fields = synthetic_fields(folder, count)
    train_set = BCCDDetection(fields, train_transforms(**det.augmentation_kwargs(p)))
    task = DetectionTask(train_set, [], batch_size=p.batch_size, num_workers=p.num_workers)
    validation = DetectionTask(train_set, synthetic_fields(folder / "val", val_images), batch_size=p.batch_size)
    config = det.train_config(p, backbone)
    return Bench(lambda: build_ssd(**det.model_kwargs(p, backbone)), task, config, validation, p.batch_size)


def _wbc(name: str, steps: int, size: int, val_images: int, max_batch: int) -> Bench:
    from bloodlib.classification import train as wbc
    from bloodlib.classification.engine import ClassifierTask
    from bloodlib.classification.models import build_model
    from bloodlib.params import load_params

    p = load_params("02_wbc_subtypes", "paper")
    p = dataclasses.replace(p, pretrained=False, batch_size=min(p.batch_size, max_batch))
    h, w = p.input_size
    canvas = (round(h * p.canvas_scale), round(w * p.canvas_scale))
    common = {"input_size": (h, w), "augment": wbc.augment_config(p), "batch_size": p.batch_size}
    recipe = {"label_smoothing": p.label_smoothing, "aux_loss_weight": p.aux_loss_weight}
    train = synthetic_canvases(512, canvas)
    val = synthetic_canvases(val_images, canvas, seed=1)
    task = ClassifierTask(train, val, samples_per_epoch=steps * p.batch_size * size, **common, **recipe)
    validation = ClassifierTask(train, val, samples_per_epoch=p.batch_size, **common, **recipe)
    return Bench(lambda: build_model(name, pretrained=False), task, wbc.train_config(p, name), validation, p.batch_size)


def _general(steps: int, size: int, val_images: int, max_batch: int, folder: Path) -> Bench:
    from bloodlib.detection.scaled import ScaledDetection, ScaledDetectionTask, label_rbc_diameter
    from bloodlib.general import detector as gd
    from bloodlib.params import load_params

    p = load_params("05_generalisation", "paper")
    p = dataclasses.replace(p, pretrained=False, batch_size=min(p.batch_size, max_batch))
    count = min(sum(RECORDED_SIZES["general_detector"]["train"].values()), steps * p.batch_size * size)
    fields = synthetic_fields(folder, count)
    diameters = [label_rbc_diameter(a) for a in fields]
    train_set = ScaledDetection(fields, diameters, spec=gd.scale_spec(p), **gd.augmentation_kwargs(p))
    task = ScaledDetectionTask(train_set, [], batch_size=p.batch_size, num_workers=p.num_workers)
    validation = ScaledDetectionTask(train_set, synthetic_fields(folder / "val", val_images), batch_size=p.batch_size)
    return Bench(lambda: gd.build(p), task, gd.train_config(p), validation, p.batch_size)


def bench_for(name: str, *, steps: int, size: int, val_images: int, max_batch: int, folder: Path) -> Bench:
    """The :class:`Bench` of model ``name`` (one of :data:`MODELS`) for ``size`` processes, with the
    profile's batch per process capped at ``max_batch``."""
    if name.startswith("detection/ssd_"):
        return _detection(name.removeprefix("detection/ssd_"), steps, size, val_images, max_batch, folder)
    if name.startswith("wbc/"):
        return _wbc(name.removeprefix("wbc/"), steps, size, val_images, max_batch)
    if name == "general/detector":
        return _general(steps, size, val_images, max_batch, folder)
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


class _TrainOnly:
    """A task without validation: :func:`fit`'s epochs time training alone."""

    def __init__(self, task: Any) -> None:
        self.task = task

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def validate(self, model: Any) -> dict[str, float]:
        return {}


# -- measure --


def _reset_peak_memory(device: Any) -> None:
    """Start a new peak: CUDA's allocator statistics, or Linux's peak RSS (``/proc/self/clear_refs``)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # then the peak is the whole process's (ru_maxrss)


def _peak_memory_mib(device: Any) -> float:
    """The peak since :func:`_reset_peak_memory`: CUDA memory allocated by torch, or the process's RSS."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # KiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux: KiB


def measure_model(name: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Train ``name`` two epochs of ``args.steps`` steps per process; the second epoch's numbers."""
    import torch

    from bloodlib import distributed
    from bloodlib.modelcache import seed_everything
    from bloodlib.training import fit

    where = distributed.world()
    device = distributed.default_device(where) if args.device == "cuda" else torch.device("cpu")
    bench = bench_for(
        name, steps=args.steps, size=where.size, val_images=args.val_images, max_batch=args.max_batch, folder=folder
    )
    config = dataclasses.replace(bench.config, epochs=2, eval_every=2, warmup_epochs=0.0)
    seed_everything(config.seed)
    model = bench.build()

    def after_epoch(row: dict[str, float]) -> None:
        if row["epoch"] == 1:
            _reset_peak_memory(device)

    result = fit(model, _TrainOnly(bench.task), config, device=device, progress=False, on_epoch=after_epoch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    memory = distributed.gather(round(_peak_memory_mib(device), 1))

    def validate() -> float:
        started = time.perf_counter()
        bench.validation.validate(model)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    val_seconds = distributed.from_main(validate)
    steps = bench.task.steps_per_epoch
    images = steps * bench.batch * where.size
    epoch_seconds = result.history[1]["seconds"]
    record = {
        "batch_per_process": bench.batch,
        "global_batch": bench.batch * where.size,
        "steps_per_process": steps,
        "images_per_epoch": images,
        "warmup_epoch_seconds": round(result.history[0]["seconds"], 3),
        "epoch_seconds": round(epoch_seconds, 3),
        "images_per_s": round(images / epoch_seconds, 3),
        "peak_memory_mib": memory,
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM)",
        "val_images": args.val_images,
        "val_seconds": round(val_seconds, 3),
        "val_images_per_s": round(args.val_images / val_seconds, 3),
        "launch": result.launch,
    }
    return record


def hardware(device: str) -> dict[str, Any]:
    """The machine: CPU model and cores, GPU name, library versions."""
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {"cpu": cpu, "cpu_cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}
    if device == "cuda":
        out["gpu"] = torch.cuda.get_device_name(0)
        out["gpus_visible"] = torch.cuda.device_count()
    return out


def cmd_measure(args: argparse.Namespace) -> int:
    from bloodlib import runtime

    runtime.configure()
    import torch

    from bloodlib import distributed
    from bloodlib.fsutil import atomic_write_text

    if args.device == "cuda" and not torch.cuda.is_available():
        _log("paper_profile: --device cuda but CUDA is not available (use --device cpu)")
        return 2
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // local))
    models = MODELS if args.models == "all" else tuple(args.models.split(","))
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        _log(f"paper_profile: unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
        return 2
    with distributed.process_group(backend="nccl" if args.device == "cuda" else "gloo") as where:
        out: dict[str, Any] = {
            "what": "paper profile, measured: two epochs of --steps steps per process through bloodlib.training.fit, "
            "the second timed; synthetic images of the real sizes",
            "device": args.device,
            "processes": where.size,
            "threads_per_process": torch.get_num_threads(),
            "steps": args.steps,
            "max_batch": args.max_batch if args.max_batch < 10**6 else None,
            "hardware": hardware(args.device),
            "models": {},
        }
        with tempfile.TemporaryDirectory() as folder:
            for name in models:
                started = time.perf_counter()
                record = measure_model(name, args, Path(folder) / name.replace("/", "_"))
                if args.device == "cuda":
                    torch.cuda.empty_cache()  # the model is gone: its cached blocks too
                out["models"][name] = record
                if where.is_main:
                    _log(
                        f"{name:22s} {where.size} x batch {record['batch_per_process']:3d}: "
                        f"{record['images_per_s']:8.2f} images/s, epoch of {record['images_per_epoch']} images "
                        f"{record['epoch_seconds']:.1f} s, peak {max(record['peak_memory_mib']):.0f} MiB, "
                        f"validation {record['val_images_per_s']:.2f} images/s "
                        f"({time.perf_counter() - started:.0f} s)"
                    )
                if where.is_main and args.out:  # after every model: a cut-short run keeps what it measured
                    atomic_write_text(Path(args.out), json.dumps(out, indent=2) + "\n")
        if where.is_main and not args.out:
            print(json.dumps(out, indent=2))
    return 0


# -- estimate --


def count_sizes() -> dict[str, Any]:
    """The image counts of :data:`RECORDED_SIZES`, counted on the data (``BLOODLIB_DATA`` or the cache)."""
    import collections
    import warnings

    from bloodlib.classification import train as wbc
    from bloodlib.detection import train as det
    from bloodlib.general import detector as gd
    from bloodlib.params import load_params

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = det.load_parts(load_params("01_detection", "paper"))
        frames, *_ = wbc.dataset2_frames(load_params("02_wbc_subtypes", "paper"))
        general = gd.load_parts(load_params("05_generalisation", "paper"))
    sizes = json.loads(json.dumps(RECORDED_SIZES))
    sizes["detection"] = {"train": len(parts["train"]), "val": len(parts["val"])}
    sizes["wbc"] = {"val": len(frames["val"])}
    sizes["general_detector"] = {
        part: dict(collections.Counter(a.source for a in general[part])) for part in ("train", "val")
    }
    sizes["general_classifier"]["val"]["dataset2"] = len(frames["val"])
    return sizes


def _validations(epochs: int, every: int) -> int:
    """How often :func:`fit` validates: every ``every`` epochs and after the last."""
    return epochs // every + (epochs % every != 0)


def recipe(sizes: dict[str, Any]) -> list[dict[str, Any]]:
    """Every training run of the paper profile: measured architecture, epochs, images per epoch,
    validations and validation images."""
    from bloodlib.params import load_params

    det = load_params("01_detection", "paper")
    wbc = load_params("02_wbc_subtypes", "paper")
    gen = load_params("05_generalisation", "paper")
    runs = [
        {
            "notebook": "01_detection",
            "run": f"ssd_{backbone}",
            "model": f"detection/ssd_{backbone}",
            "epochs": epochs,
            "train_images": sizes["detection"]["train"],
            "validations": _validations(epochs, det.eval_every),
            "val_images": sizes["detection"]["val"],
        }
        for backbone, epochs in (("vgg16", det.vgg16_epochs), ("alexnet", det.alexnet_epochs))
    ]
    for name in wbc.models:
        epochs = wbc.epochs_custom if name in ("arch1", "arch2") else wbc.epochs_standard
        runs.append(
            {
                "notebook": "02_wbc_subtypes",
                "run": name,
                "model": f"wbc/{name}",
                "epochs": epochs,
                "train_images": wbc.samples_per_epoch,
                "validations": epochs,
                "val_images": sizes["wbc"]["val"],
            }
        )
    train, val = sizes["general_detector"]["train"], sizes["general_detector"]["val"]
    detectors = [("all sources", gen.epochs, sum(train.values()), sum(val.values()))]
    detectors += [(source, gen.cross_source_epochs, train[source], val[source]) for source in sorted(train)]
    for label, epochs, n_train, n_val in detectors:
        runs.append(
            {
                "notebook": "05_generalisation",
                "run": f"general detector ({label})",
                "model": "general/detector",
                "epochs": epochs,
                "train_images": n_train,
                "validations": _validations(epochs, gen.eval_every),
                "val_images": n_val,
            }
        )
    cls_val = sizes["general_classifier"]["val"]
    settings = len(gen.loso_stains) + int(gen.loso_without_jitter)
    classifiers = [("both sources", gen.classifier_epochs, sum(cls_val.values()), 1)]
    classifiers += [(f"{source} alone", gen.loso_epochs, n, settings) for source, n in sorted(cls_val.items())]
    for label, epochs, n_val, copies in classifiers:
        for copy in range(copies):
            runs.append(
                {
                    "notebook": "05_generalisation",
                    "run": f"{gen.classifier_model} ({label}){f' #{copy + 1}' if copies > 1 else ''}",
                    "model": f"wbc/{gen.classifier_model}",
                    "epochs": epochs,
                    "train_images": wbc.samples_per_epoch,
                    "validations": epochs,
                    "val_images": n_val,
                }
            )
    return runs


def estimate(measurement: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The recipe's wall time from one measurement file (one number of processes)."""
    rows, missing = [], set()
    for run in runs:
        m = measurement["models"].get(run["model"])
        if m is None:
            missing.add(run["model"])
            continue
        usable = run["train_images"] // m["global_batch"] * m["global_batch"] or run["train_images"]
        train_s = run["epochs"] * usable / m["images_per_s"]
        val_s = run["validations"] * run["val_images"] / m["val_images_per_s"]
        rows.append(
            {**run, "train_hours": train_s / 3600, "val_hours": val_s / 3600, "hours": (train_s + val_s) / 3600}
        )
    by_notebook: dict[str, float] = {}
    for row in rows:
        by_notebook[row["notebook"]] = by_notebook.get(row["notebook"], 0.0) + row["hours"]
    return {
        "device": measurement["device"],
        "processes": measurement["processes"],
        "hardware": measurement["hardware"],
        "hours": sum(by_notebook.values()),
        "hours_by_notebook": by_notebook,
        "not_measured": sorted(missing),
        "runs": rows,
    }


def cmd_estimate(args: argparse.Namespace) -> int:
    from bloodlib.fsutil import atomic_write_text

    try:
        sizes, counted = count_sizes(), True
    except Exception as err:  # no data here: the recorded counts
        _log(f"paper_profile: image counts from RECORDED_SIZES ({type(err).__name__}: {err})")
        sizes, counted = RECORDED_SIZES, False
    runs = recipe(sizes)
    out = {
        "what": "estimated wall time of the paper profile's training: epochs x images / measured images/s + "
        "validations x images / measured validation images/s, per run, summed (runs are sequential)",
        "image_counts": sizes,
        "image_counts_from": "the data (BLOODLIB_DATA)" if counted else "RECORDED_SIZES in bench/paper_profile.py",
        "estimates": [estimate(json.loads(Path(p).read_text()), runs) for p in args.measurements],
    }
    for e in out["estimates"]:
        notebooks = ", ".join(f"{k} {v:.1f} h" for k, v in e["hours_by_notebook"].items())
        missing = f"; not measured, left out: {', '.join(e['not_measured'])}" if e["not_measured"] else ""
        _log(f"{e['processes']} process(es) on {e['device']}: {e['hours']:.1f} h ({notebooks}{missing})")
    text = json.dumps(out, indent=2) + "\n"
    if args.out:
        atomic_write_text(Path(args.out), text)
    else:
        print(text, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    measure = commands.add_parser("measure", help="time each model (run with torchrun for N processes)")
    measure.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    measure.add_argument("--steps", type=int, default=20, help="optimizer steps per process in each of 2 epochs")
    measure.add_argument("--val-images", type=int, default=64, help="images of the timed validation")
    measure.add_argument("--models", default="all", help=f"comma-separated, from: {', '.join(MODELS)}")
    measure.add_argument(
        "--max-batch",
        type=int,
        default=10**6,
        help="cap on the batch per process (default: the profile's; on a CPU, e.g. 32 keeps memory and time small)",
    )
    measure.add_argument("--threads", type=int, help="torch threads per process (default: cores / processes)")
    measure.add_argument("--out", help="JSON file (default: stdout)")
    measure.set_defaults(func=cmd_measure)
    est = commands.add_parser("estimate", help="the full recipe's wall time from measure's JSON files")
    est.add_argument("measurements", nargs="+", help="JSON files written by measure")
    est.add_argument("--out", help="JSON file (default: stdout)")
    est.set_defaults(func=cmd_estimate)
    args = parser.parse_args(argv)
    if min(getattr(args, name, 1) for name in ("steps", "val_images", "max_batch")) < 1:
        parser.error("--steps, --val-images and --max-batch must be >= 1")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
