"""Model bundles: one archive of the trained models a profile's reports and ``bloodlib analyze`` use.

An instructor trains once and hands the class one file; ``bloodlib models import`` puts its models
into the model cache (:mod:`bloodlib.modelcache`), so that ``make reports`` and ``bloodlib analyze``
find them and train nothing.

**Which models.** For each notebook, :data:`NOTEBOOK_RUNS` lists the training runs it loads from the
cache, by their parameters (the tasks' own ``run_params``): Task 1's SSD300s, Task 2's CNNs, the general
detectors and WBC classifiers of notebook 05, and the models notebook 04 (and ``bloodlib analyze``)
uses. Each is looked up by parameters (:func:`bloodlib.modelcache.find_run`, the newest finished run;
data-derived parameters such as validation groups left out), so exporting needs the models, not the
data. Side files travel with them: ``stain.json`` beside each general classifier, the colour model of
each general detector (``general/colour/<key>/colour.json``) and, with notebook 04, every cached
counting-threshold file (``pipeline/count_thresholds/*/thresholds.json``, a few hundred bytes each; their
keys hash the detector and the validation data, which a bundle cannot recompute without the data, so the
ones no model here uses are carried but never read). The predictions the reports kept for these models
(``predictions/<task>/<key>/*.npy``, :func:`bloodlib.modelcache.cached_output`) travel too, with the
seconds predicting took (``*.seconds.json``, for the index's "with empty caches"), so a class's render
does not predict again either; import checks each is a numeric array (read without unpickling) and each
record a number of seconds, and adds them beside the predictions already there. A bundle never holds
checkpoints (``checkpoint.pt``), the scikit-learn COVID-19 model of notebook 04 (a pickle: it is
refitted on OSR in seconds) or cached crops.

**Layout.** ``manifest.json`` first, then ``models/<task>/<key>/<file>`` laid out like the models root.
The manifest records the format, bloodlib's version and git commit, torch's version, the profile and
the notebooks' parameters, every run (task, key, parameters, data fingerprints, best epoch) and the
size and sha256 of every file. tar.gz by default, zip when the file name ends in ``.zip``; the same
models give the same bytes (fixed timestamps and order).

**Import** refuses an archive before writing anything when a member is unsafe (absolute path, ``..``,
drive letter, link, device: :mod:`bloodlib.data.download`'s checks), is not a file a bundle may hold
(by path and name), is missing from the manifest or disagrees with it. It then extracts into a staging
folder inside the models root, checks every sha256, checks that each run's folder name is the key of
its ``run.json`` and that ``final.pt`` is what ``run.json`` recorded, reads every ``final.pt`` with
``torch.load(weights_only=True)`` (tensors only: nothing is unpickled) and moves each run into place.
A bundle is as trustworthy as whoever made it: the checks guarantee that it cannot run code or write
outside the models root, and that it arrived intact (compare the archive's sha256, printed by
``export``, with ``import --sha256``), not that its weights are good.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bloodlib.data.download import UnsafeArchiveError, _tar_kind, _unsafe_name, _zip_kind, extract_archive, sha256_file
from bloodlib.modelcache import ModelRun, find_run, load_final, models_root, numeric_array

FORMAT = "bloodlib-models"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PREFIX = "models/"
#: the models root's folder of kept predictions (:func:`bloodlib.modelcache.cached_output`)
PREDICTIONS = "predictions"
#: Largest bundle import accepts (sum of its files); the paper profile's models are about 1 GB.
MAX_TOTAL_BYTES = 8 << 30
MAX_MANIFEST_BYTES = 16 << 20

_SEGMENT = r"[A-Za-z0-9_+-]+"
_KEY = re.compile(r"[0-9a-f]{16}")
#: (task folder, names of the files its training runs may hold) of every trained model a bundle carries.
_RUN_FILES: tuple[tuple[str, str], ...] = (
    (rf"detection/ssd_{_SEGMENT}", r"final\.pt|run\.json"),
    (rf"wbc_subtypes/{_SEGMENT}", r"final\.pt|run\.json"),
    (rf"general/detector/{_SEGMENT}", r"final\.pt|run\.json"),
    (rf"general/classifier/{_SEGMENT}", r"final\.pt|run\.json|stain\.json"),
)
#: (task folder, names of the files a folder of that task may hold): every path a bundle may contain --
#: the runs, their side files and the predictions kept for them.
ALLOWED: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = (
    *((re.compile(task), re.compile(files)) for task, files in _RUN_FILES),
    (re.compile(r"general/colour"), re.compile(r"colour\.json")),
    (re.compile(r"pipeline/count_thresholds"), re.compile(r"thresholds\.json")),
    (
        re.compile(rf"{PREDICTIONS}/(?:{'|'.join(task for task, _ in _RUN_FILES)})"),
        re.compile(r"[a-z_]+-[0-9a-f]{16}\.(?:npy|seconds\.json)"),
    ),
)
#: Folders of side files (JSON keyed by a detector and data), not training runs.
SIDE_TASKS = ("general/colour", "pipeline/count_thresholds")


class BundleError(ValueError):
    """A bundle cannot be made (a model is missing) or is damaged; the message says which file and why."""


@dataclasses.dataclass(frozen=True)
class WantedRun:
    """A training run a notebook loads from the model cache, identified by its parameters.

    Attributes:
        label: what it is, e.g. ``"01_detection: SSD300 vgg16 (profile cpu)"``.
        task: the run's task folder, e.g. ``"detection/ssd_vgg16"``.
        params: the run's parameters as its ``run.json`` stores them.
        ignore: key paths left out of the comparison (parameters derived from the data).
        train: the command that trains it.
    """

    label: str
    task: str
    params: dict[str, Any]
    ignore: tuple[tuple[str, ...], ...] = ()
    train: str = ""


def _detection_runs(profile: str, root: Path | None) -> list[WantedRun]:
    from bloodlib.detection import train as detection
    from bloodlib.params import load_params

    p = load_params("01_detection", profile, root)
    return [_detector(p, backbone, profile, "01_detection") for backbone in detection.BACKBONES]


def _detector(p: Any, backbone: str, profile: str, notebook: str) -> WantedRun:
    from bloodlib.detection import train as detection

    return WantedRun(
        f"{notebook}: SSD300 {backbone} (profile {profile})",
        f"{detection.TASK}/ssd_{backbone}",
        detection.run_params(p, backbone),
        train=f"bloodlib train detection --profile {profile}",
    )


def _wbc_runs(profile: str, root: Path | None) -> list[WantedRun]:
    from bloodlib.params import load_params

    p = load_params("02_wbc_subtypes", profile, root)
    return [_wbc(p, name, profile, "02_wbc_subtypes") for name in p.models]


def _wbc(p: Any, name: str, profile: str, notebook: str) -> WantedRun:
    from bloodlib.classification import train as wbc

    return WantedRun(
        f"{notebook}: WBC classifier {name} (profile {profile})",
        f"{wbc.TASK}/{name}",
        wbc.run_params(p, name, []),
        (("split", "val_groups"),),
        f"bloodlib train wbc --profile {profile}",
    )


def _general_detector(p: Any, profile: str, notebook: str, sources: tuple[str, ...], epochs: int) -> WantedRun:
    from bloodlib.general import detector

    name = "all" if sources == detector.SOURCES else "+".join(sources)
    return WantedRun(
        f"{notebook}: general detector, {name} (profile {profile})",
        f"{detector.TASK}/{name}",
        detector.run_params(p, sources, epochs),
        train=f"bloodlib train general --profile {profile}",
    )


def _general_classifier(p: Any, profile: str, notebook: str, variant: Any, epochs: int) -> WantedRun:
    from bloodlib.general import classifier

    return WantedRun(
        f"{notebook}: general WBC classifier, {variant.name} (profile {profile})",
        f"{classifier.TASK}/{variant.slug}",
        classifier.run_params(p, classifier.recipe_params(p), [], variant, epochs),
        (("recipe", "split", "val_groups"),),
        f"bloodlib train general --profile {profile}",
    )


def _deployed_general(p: Any, profile: str, notebook: str) -> list[WantedRun]:
    from bloodlib.general import classifier, detector

    return [
        _general_detector(p, profile, notebook, detector.SOURCES, p.epochs),
        _general_classifier(p, profile, notebook, classifier.deployed_variant(p), p.classifier_epochs),
    ]


def _generalisation_runs(profile: str, root: Path | None) -> list[WantedRun]:
    from bloodlib.general import classifier, detector
    from bloodlib.params import load_params

    notebook = "05_generalisation"
    p = load_params(notebook, profile, root)
    render = f"bloodlib report --profile {profile} --only {notebook}"
    runs = _deployed_general(p, profile, notebook)
    runs += [
        dataclasses.replace(_general_detector(p, profile, notebook, (s,), p.cross_source_epochs), train=render)
        for s in detector.SOURCES
    ]
    settings = [(stain, True) for stain in p.loso_stains] + ([("none", False)] if p.loso_without_jitter else [])
    for left_out in classifier.SOURCES:
        trained_on = tuple(s for s in classifier.SOURCES if s != left_out)
        for stain, jitter in settings:
            variant = classifier.Variant(trained_on, stain, jitter)
            wanted = _general_classifier(p, profile, notebook, variant, p.loso_epochs)
            runs.append(dataclasses.replace(wanted, train=render))
    return runs


def _pipeline_runs(profile: str, root: Path | None) -> list[WantedRun]:
    from bloodlib.params import load_params

    notebook = "04_pipeline"
    p = load_params(notebook, profile, root)
    if p.models == "general":
        return _deployed_general(load_params("05_generalisation", p.general_profile, root), p.general_profile, notebook)
    detection = load_params("01_detection", p.detection_profile, root)
    wbc = load_params("02_wbc_subtypes", p.classifier_profile, root)
    return [
        _detector(detection, p.detection_backbone, p.detection_profile, notebook),
        _wbc(wbc, p.classifier_model, p.classifier_profile, notebook),
    ]


#: notebook -> the training runs it loads from the model cache (``(profile, project root) -> runs``). A notebook
#: that trains a new model adds it here, or a bundle lacks it and ``make reports`` trains it after an import.
NOTEBOOK_RUNS: dict[str, Callable[[str, Path | None], list[WantedRun]]] = {
    "01_detection": _detection_runs,
    "02_wbc_subtypes": _wbc_runs,
    "04_pipeline": _pipeline_runs,
    "05_generalisation": _generalisation_runs,
}


def wanted_runs(profile: str, notebooks: Iterable[str] | None = None, root: Path | None = None) -> list[WantedRun]:
    """The training runs the ``notebooks`` (default: every notebook that loads models) of ``profile`` use.

    Raises:
        ValueError: a notebook name is not one of :data:`NOTEBOOK_RUNS`.
    """
    chosen = list(NOTEBOOK_RUNS) if notebooks is None else list(notebooks)
    unknown = [n for n in chosen if n not in NOTEBOOK_RUNS]
    if unknown:
        raise ValueError(
            f"no trained models in notebook(s) {unknown}; notebooks with models: {', '.join(NOTEBOOK_RUNS)}"
        )
    return [run for name in chosen for run in NOTEBOOK_RUNS[name](profile, root)]


def _file_entry(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def _run_record(run: ModelRun, labels: list[str]) -> dict[str, Any]:
    info = json.loads(run.info_path.read_text(encoding="utf-8"))
    return {
        "task": run.task,
        "key": run.key,
        "for": labels,
        "params": run.params,
        "data": run.data_checksums,
        "best_epoch": info.get("best_epoch"),
        "train_seconds": info.get("train_seconds"),
    }


def select_files(
    profile: str, notebooks: Iterable[str] | None = None, *, models: Path | None = None, root: Path | None = None
) -> tuple[list[tuple[str, Path]], list[dict[str, Any]]]:
    """The files of a bundle (``(archive name, path)``, sorted) and a record per run.

    Raises:
        BundleError: a run is not in the models root (the message lists every missing one and how to train it).
    """
    from bloodlib.general.detector import TASK as GENERAL_DETECTOR

    base = Path(models) if models is not None else models_root()
    chosen = list(NOTEBOOK_RUNS) if notebooks is None else list(notebooks)
    found: dict[str, tuple[ModelRun, list[str]]] = {}
    missing = []
    for wanted in wanted_runs(profile, chosen, root):
        run = find_run(base, wanted.task, wanted.params, wanted.ignore)
        if run is None:
            missing.append(f"{wanted.label}: not in {base / wanted.task} (`{wanted.train}`)")
            continue
        found.setdefault(f"{run.task}/{run.key}", (run, []))[1].append(wanted.label)
    if missing:
        raise BundleError("the models root lacks trained model(s):\n  " + "\n  ".join(missing))
    folders = [run.folder for run, _ in found.values()]
    folders += [
        base / "general" / "colour" / run.key for run, _ in found.values() if run.task == f"{GENERAL_DETECTOR}/all"
    ]
    if "04_pipeline" in chosen:
        folders += [p.parent for p in (base / "pipeline" / "count_thresholds").glob("*/thresholds.json")]
    folders += [base / PREDICTIONS / run.task / run.key for run, _ in found.values()]
    files = []
    for folder in folders:
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            name = PREFIX + path.relative_to(base).as_posix()
            if path.is_file() and not path.is_symlink() and allowed_path(name):
                files.append((name, path))
    for run, _ in found.values():  # the weights are what run.json recorded
        load_final_check(run.folder)
    records = [_run_record(run, labels) for run, labels in found.values()]
    return sorted(files), sorted(records, key=lambda r: (r["task"], r["key"]))


def load_final_check(folder: Path) -> None:
    """Check that ``final.pt`` in ``folder`` is the file its ``run.json`` recorded (size, sha256), without loading it.

    Raises:
        BundleError: it is not.
    """
    info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    expected = info.get("files", {}).get("final.pt")
    if not expected:
        raise BundleError(f"{folder / 'run.json'} records no size and sha256 of final.pt")
    actual = _file_entry(folder / "final.pt")
    if actual != {"size": expected["size"], "sha256": expected["sha256"]}:
        raise BundleError(f"{folder / 'final.pt'} differs from what {folder / 'run.json'} recorded (damaged)")


def allowed_path(name: str) -> bool:
    """Whether archive member ``name`` is a file a bundle may hold (``manifest.json`` or a model file of :data:`ALLOWED`)."""
    if name == MANIFEST:
        return True
    if not name.startswith(PREFIX) or _unsafe_name(name) or "\\" in name:
        return False
    *task, key, file = name[len(PREFIX) :].split("/")
    if not task or not _KEY.fullmatch(key):
        return False
    return any(pattern.fullmatch("/".join(task)) and files.fullmatch(file) for pattern, files in ALLOWED)


def manifest_for(
    profile: str, notebooks: list[str], files: list[tuple[str, Path]], runs: list[dict[str, Any]], root: Path | None
) -> dict[str, Any]:
    """The manifest of a bundle (see the module docstring)."""
    import torch

    from bloodlib import __version__
    from bloodlib.params import as_dict, load_params
    from bloodlib.paths import project_root
    from bloodlib.report.provenance import git_commit

    data: dict[str, str] = {}
    for run in runs:
        data.update(run["data"])
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "bloodlib": {"version": __version__, "git_commit": git_commit(root or project_root())},
        "torch": torch.__version__.split("+")[0],
        "profile": profile,
        "notebooks": notebooks,
        "parameters": {name: as_dict(load_params(name, profile, root)) for name in notebooks},
        "data": dict(sorted(data.items())),
        "runs": runs,
        "files": {name: _file_entry(path) for name, path in files},
    }


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, 0o644, 0, tarfile.REGTYPE
    return info


def _write_archive(target: Path, manifest: bytes, files: list[tuple[str, Path]]) -> None:
    """``manifest.json`` then ``files`` into a tar.gz (or a zip when ``target`` ends in .zip), timestamps fixed."""
    with open(target, "wb") as raw:
        if target.name.endswith(".zip"):
            with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(zipfile.ZipInfo(MANIFEST, (1980, 1, 1, 0, 0, 0)), manifest)
                for name, path in files:
                    info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
                    info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o100644 << 16
                    with open(path, "rb") as src, zf.open(info, "w") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
            return
        with (
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w") as tf,
        ):
            tf.addfile(_tar_info(MANIFEST, len(manifest)), io.BytesIO(manifest))
            for name, path in files:
                with open(path, "rb") as src:
                    tf.addfile(_tar_info(name, path.stat().st_size), src)


def export_bundle(
    path: str | Path,
    *,
    profile: str,
    notebooks: list[str] | None = None,
    models: Path | None = None,
    root: Path | None = None,
) -> dict[str, Any]:
    """Write the bundle of ``profile``'s models (of ``notebooks``, default all) to ``path``; returns its manifest.

    The archive is written to a temporary file beside ``path`` and renamed, so ``path`` is either the
    old file or the complete new one.

    Raises:
        BundleError: a model is missing (the message says how to train it).
        ValueError: an unknown notebook or profile.
    """
    from bloodlib.params import check_profile

    check_profile(profile)
    path = Path(path)
    chosen = list(NOTEBOOK_RUNS) if notebooks is None else list(notebooks)
    files, runs = select_files(profile, chosen, models=models, root=root)
    manifest = manifest_for(profile, chosen, files, runs, root)
    text = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        _write_archive(Path(tmp), text, files)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return manifest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclasses.dataclass
class Member:
    """One archive member: its name, kind (``file``, ``dir``, ``symlink``, ``hardlink``, ``device``) and size."""

    name: str
    kind: str
    size: int


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) in (b"PK\x03\x04", b"PK\x05\x06") and zipfile.is_zipfile(fh)


def read_members(path: Path) -> tuple[list[Member], bytes | None]:
    """Every member of the archive at ``path`` and the bytes of its ``manifest.json`` (None if it has none).

    Raises:
        BundleError: not a tar or zip archive, or unreadable.
    """
    try:
        if _is_zip(path):
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
                members = [Member(i.filename, _zip_kind(i), i.file_size) for i in infos]
                manifest = next((i for i in infos if i.filename == MANIFEST and _zip_kind(i) == "file"), None)
                if manifest is not None and manifest.file_size <= MAX_MANIFEST_BYTES:
                    return members, zf.read(manifest)
                return members, None
        if not tarfile.is_tarfile(path):
            raise BundleError(f"{path} is neither a tar nor a zip archive")
        with tarfile.open(path, "r:*") as tf:
            infos = tf.getmembers()
            members = [Member(m.name, _tar_kind(m), m.size) for m in infos]
            manifest = next((m for m in infos if m.name == MANIFEST and m.isreg()), None)
            if manifest is not None and manifest.size <= MAX_MANIFEST_BYTES:
                handle = tf.extractfile(manifest)
                return members, handle.read() if handle else None
            return members, None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise BundleError(f"{path} is not a readable archive: {err}") from err


def check_members(path: Path, members: list[Member], manifest: dict[str, Any]) -> None:
    """Refuse unsafe or unexpected members and any disagreement with the manifest, before anything is written.

    Raises:
        UnsafeArchiveError: an absolute path, a ``..`` component, a drive letter, a link or a device.
        BundleError: a member a bundle may not hold, a duplicate, a file the manifest does not list (or
            lists with another size), a listed file the archive lacks, or a bundle over :data:`MAX_TOTAL_BYTES`.
    """
    seen: set[str] = set()
    for m in members:
        if _unsafe_name(m.name):
            raise UnsafeArchiveError(f"unsafe member path {m.name!r} in {path}")
        if m.kind not in ("file", "dir"):
            raise UnsafeArchiveError(f"refusing {m.kind} member {m.name!r} in {path}")
        if m.kind == "dir":
            if not (PREFIX.startswith(m.name.rstrip("/") + "/") or m.name.startswith(PREFIX)):
                raise BundleError(f"unexpected folder {m.name!r} in {path}")
            continue
        if not allowed_path(m.name):
            raise BundleError(f"unexpected member {m.name!r} in {path}: not a file a model bundle holds")
        if m.name in seen:
            raise BundleError(f"member {m.name!r} appears twice in {path}")
        seen.add(m.name)
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        raise BundleError(f"the manifest of {path} lists no files")
    sizes = {m.name: m.size for m in members if m.kind == "file" and m.name != MANIFEST}
    for name in sorted(set(sizes) - set(listed)):
        raise BundleError(f"member {name!r} of {path} is not in its manifest")
    for name in sorted(set(listed) - set(sizes)):
        raise BundleError(f"{path} lacks {name!r}, which its manifest lists")
    for name, size in sizes.items():
        if size != listed[name].get("size"):
            raise BundleError(
                f"member {name!r} of {path} has {size} bytes, its manifest says {listed[name].get('size')}"
            )
    if sum(sizes.values()) > MAX_TOTAL_BYTES:
        raise BundleError(f"{path} holds {sum(sizes.values())} bytes, more than a model bundle may ({MAX_TOTAL_BYTES})")


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the bundle at ``path``, after checking every member's name, kind and size against it
    (nothing is extracted).

    Raises:
        BundleError, UnsafeArchiveError: see :func:`check_members`; also a missing or malformed manifest.
    """
    path = Path(path)
    members, raw = read_members(path)
    if raw is None:
        raise BundleError(
            f"{path} has no {MANIFEST} (or it is larger than {MAX_MANIFEST_BYTES} bytes): not a model bundle"
        )
    try:
        manifest = json.loads(raw)
    except ValueError as err:
        raise BundleError(f"the {MANIFEST} of {path} is not JSON: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path} is not a bloodlib model bundle (its manifest's format is not {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path} is a version {manifest.get('format_version')} model bundle; this bloodlib reads version {FORMAT_VERSION}"
        )
    check_members(path, members, manifest)
    return manifest


def _check_staged(staging: Path, manifest: dict[str, Any]) -> list[Path]:
    """Check every extracted file against the manifest and every run's files; the folders to place."""
    for name, entry in manifest["files"].items():
        actual = _file_entry(staging / name)
        if actual != {"size": entry.get("size"), "sha256": entry.get("sha256")}:
            raise BundleError(f"{name}: sha256 or size differs from the manifest (the bundle is damaged)")
        if name.endswith(".json"):
            try:
                json.loads((staging / name).read_text(encoding="utf-8"))
            except ValueError as err:
                raise BundleError(f"{name} is not JSON: {err}") from err
    folders = sorted({(staging / name).parent for name in manifest["files"]})
    for folder in folders:
        relative = folder.relative_to(staging / PREFIX).as_posix()
        task, key = relative.rsplit("/", 1)
        if task in SIDE_TASKS:
            continue  # a colour model or counting thresholds: JSON, checked above
        if task.startswith(f"{PREDICTIONS}/"):
            _check_predictions(folder, f"{PREFIX}{relative}")
            continue
        if not ((folder / "run.json").is_file() and (folder / "final.pt").is_file()):
            raise BundleError(f"{PREFIX}{relative}: a training run needs both run.json and final.pt")
        info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        run = ModelRun(task, info.get("params", {}), info.get("data", {}))
        if info.get("task") != task or info.get("key") != key or run.key != key:
            raise BundleError(f"{PREFIX}{relative}: its run.json describes another run (task or key differ)")
        try:
            weights, _ = load_final(folder)  # size and sha256 against run.json, then tensors only
        except Exception as err:
            raise BundleError(f"{PREFIX}{relative}/final.pt cannot be read as weights: {err}") from err
        if not isinstance(weights, dict):
            raise BundleError(f"{PREFIX}{relative}/final.pt holds no state dict")
    return folders


def _check_predictions(folder: Path, shown: str) -> None:
    """Every kept prediction in ``folder`` is a numeric ``.npy`` array (read without unpickling anything),
    every ``.seconds.json`` beside them ``{"seconds": <number>}``."""
    import numpy as np

    for path in sorted(folder.iterdir()):
        if path.name.endswith(".seconds.json"):
            record = json.loads(path.read_text(encoding="utf-8"))
            seconds = record.get("seconds") if isinstance(record, dict) else None
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
                raise BundleError(f"{shown}/{path.name} records no number of seconds: {record!r}")
            continue
        try:
            numeric_array(np.load(path, allow_pickle=False), f"{shown}/{path.name}")
        except (OSError, ValueError, EOFError) as err:
            raise BundleError(f"{shown}/{path.name} is not a numeric array: {err}") from err


@dataclasses.dataclass
class ImportResult:
    """What :func:`import_bundle` did: folders placed and folders already present (identical), relative to the models root."""

    manifest: dict[str, Any]
    placed: list[str]
    present: list[str]
    warnings: list[str]


def _same_folder(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(
        p.name for p in b.iterdir() if not p.name.startswith(".") and p.name != "checkpoint.pt"
    ) and all(sha256_file(a / n) == sha256_file(b / n) for n in names)


def _add_files(folder: Path, target: Path) -> None:
    """Copy each file of ``folder`` into ``target`` (atomically), keeping the files already there."""
    from bloodlib.fsutil import atomic_write_bytes

    for path in sorted(folder.iterdir()):
        if not (target / path.name).is_file() or sha256_file(target / path.name) != sha256_file(path):
            atomic_write_bytes(target / path.name, path.read_bytes())


def import_bundle(path: str | Path, *, models: Path | None = None, sha256: str | None = None) -> ImportResult:
    """Verify the bundle at ``path`` and place its models under ``models`` (default: the models root).

    Nothing is written when a check fails; see the module docstring for the checks. A run already in the
    models root with identical files is left as it is; one with other files (or unfinished) is replaced.

    Raises:
        BundleError, UnsafeArchiveError: the bundle is unsafe, damaged or not a model bundle.
    """
    import torch

    from bloodlib.fsutil import replace_dir

    path = Path(path)
    if sha256 is not None and sha256_file(path) != sha256.strip().lower():
        raise BundleError(f"{path}: its sha256 is {sha256_file(path)}, not the expected {sha256}")
    manifest = read_manifest(path)
    base = Path(models) if models is not None else models_root()
    base.mkdir(parents=True, exist_ok=True)
    warnings = []
    here = torch.__version__.split("+")[0]
    if manifest.get("torch") != here:
        warnings.append(
            f"the models were trained with torch {manifest.get('torch')}, this environment has {here}: "
            "the detectors' cache keys include torch's version, so notebooks would train them anew"
        )
    staging = Path(tempfile.mkdtemp(dir=base, prefix=".import-"))
    placed, present = [], []
    try:
        extract_archive(path, staging)
        for folder in _check_staged(staging, manifest):
            relative = folder.relative_to(staging / PREFIX)
            target = base / relative
            if relative.parts[0] == PREDICTIONS:
                _add_files(folder, target)
                continue
            if target.is_dir() and _same_folder(folder, target):
                present.append(relative.as_posix())
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            replace_dir(folder, target)
            placed.append(relative.as_posix())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ImportResult(manifest, placed, present, warnings)


def bundle_summary(manifest: dict[str, Any]) -> list[str]:
    """Lines describing a manifest: profile, versions, runs, files and size."""
    total = sum(entry["size"] for entry in manifest["files"].values())
    lines = [
        f"profile {manifest.get('profile')}; notebooks {', '.join(manifest.get('notebooks', []))}",
        f"bloodlib {manifest['bloodlib'].get('version')} ({manifest['bloodlib'].get('git_commit')}), torch {manifest.get('torch')}",
        f"{len(manifest['runs'])} trained models, {len(manifest['files'])} files, {total / 1e6:.1f} MB",
    ]
    lines += [f"  {run['task']}/{run['key']}  best epoch {run.get('best_epoch')}" for run in manifest["runs"]]
    return lines


__all__ = [
    "BundleError",
    "ImportResult",
    "UnsafeArchiveError",
    "WantedRun",
    "export_bundle",
    "import_bundle",
    "read_manifest",
    "wanted_runs",
]
