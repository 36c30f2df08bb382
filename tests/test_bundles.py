"""Model bundles: export -> import round trip on tiny runs, and import refusing crafted archives."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from bloodlib import bundles, cli
from bloodlib.bundles import BundleError, UnsafeArchiveError, WantedRun, export_bundle, import_bundle
from bloodlib.modelcache import ModelRun, find_run, load_final

TASK = "wbc_subtypes/arch2"
PARAMS = {"model": "arch2", "epochs": 1, "split": {"val_groups": [3, 5]}}
DATA = {"blood-cells": "ab" * 32}


def tiny_run(root: Path, task: str = TASK, params: dict | None = None) -> ModelRun:
    """A finished run of a 4-weight linear layer under ``root``."""
    run = ModelRun(task, params or PARAMS, DATA, root)
    run.save_final(torch.nn.Linear(2, 2).state_dict(), history=[{"epoch": 1}], best_epoch=1, train_seconds=0.1)
    return run


@pytest.fixture
def fake_notebook(monkeypatch: pytest.MonkeyPatch) -> str:
    """A notebook ``99_fake`` that loads the run of :func:`tiny_run` (validation groups ignored) and no parameters."""
    wanted = WantedRun("99_fake: arch2", TASK, {**PARAMS, "split": {}}, (("split", "val_groups"),), "train it")
    monkeypatch.setitem(bundles.NOTEBOOK_RUNS, "99_fake", lambda profile, root: [wanted])
    monkeypatch.setattr(bundles, "manifest_for", _manifest_without_params(bundles.manifest_for))
    return "99_fake"


def _manifest_without_params(manifest_for):
    def wrapped(profile, notebooks, files, runs, root):  # 99_fake has no params/<profile>/99_fake.yaml
        return manifest_for(profile, [], files, runs, root) | {"notebooks": notebooks}

    return wrapped


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_round_trip_places_the_models_where_the_cache_finds_them(tmp_path, fake_notebook, suffix):
    source = tmp_path / "instructor"
    run = tiny_run(source)
    (run.folder / "checkpoint.pt").write_bytes(b"never exported")
    (run.folder / "notes.txt").write_text("never exported")
    bundle = tmp_path / f"models{suffix}"
    manifest = export_bundle(bundle, profile="quick", notebooks=[fake_notebook], models=source)

    assert sorted(manifest["files"]) == [f"models/{TASK}/{run.key}/final.pt", f"models/{TASK}/{run.key}/run.json"]
    assert manifest["runs"][0]["key"] == run.key and manifest["runs"][0]["data"] == DATA
    entry = manifest["files"][f"models/{TASK}/{run.key}/final.pt"]
    assert entry["sha256"] == hashlib.sha256(run.final_path.read_bytes()).hexdigest()

    student = tmp_path / "student"
    result = import_bundle(bundle, models=student)
    assert result.placed == [f"{TASK}/{run.key}"] and result.present == [] and result.warnings == []
    found = find_run(student, TASK, PARAMS)
    assert found is not None and found.key == run.key
    weights, info = load_final(found.folder)
    assert torch.equal(weights["weight"], load_final(run.folder)[0]["weight"]) and info["best_epoch"] == 1
    assert not (found.folder / "checkpoint.pt").exists() and not (found.folder / "notes.txt").exists()
    assert [p.name for p in student.iterdir()] == ["wbc_subtypes"]  # the staging folder is gone

    again = import_bundle(bundle, models=student)
    assert again.placed == [] and again.present == [f"{TASK}/{run.key}"]


def test_kept_predictions_travel_with_their_model(tmp_path, fake_notebook):
    """The predictions a report kept for a model go into the bundle and come back where
    cached_output finds them (the student's render does not predict again); a student's own kept
    predictions stay."""
    import numpy as np

    from bloodlib.modelcache import cached_output

    source = tmp_path / "instructor"
    run = tiny_run(source)
    logits = cached_output(run, "logits", {"canvases": "abc"}, lambda: np.arange(8.0).reshape(4, 2))
    bundle = tmp_path / "models.tar.gz"
    manifest = export_bundle(bundle, profile="quick", notebooks=[fake_notebook], models=source)
    kept, seconds = sorted(n for n in manifest["files"] if n.startswith("models/predictions/"))
    assert kept.startswith(f"models/predictions/{TASK}/{run.key}/logits-") and kept.endswith(".npy")
    assert seconds == kept.removesuffix(".npy") + ".seconds.json"  # the index's "with empty caches" needs it

    student = tmp_path / "student"
    own = student / "predictions" / TASK / run.key / "logits-0123456789abcdef.npy"
    own.parent.mkdir(parents=True)
    np.save(own, np.zeros(3))
    result = import_bundle(bundle, models=student)
    assert result.placed == [f"{TASK}/{run.key}"] and own.is_file()
    placed = ModelRun(TASK, PARAMS, DATA, student)

    def never() -> np.ndarray:
        raise AssertionError("predicted again although the bundle brought the predictions")

    assert np.array_equal(cached_output(placed, "logits", {"canvases": "abc"}, never), logits)
    record = student / seconds.removeprefix("models/")
    assert json.loads(record.read_text()) == json.loads((source / seconds.removeprefix("models/")).read_text())


def test_import_refuses_predictions_that_are_not_numeric_arrays(tmp_path):
    import numpy as np

    files = _run_files(tmp_path)
    key = next(iter(files)).split("/")[-2]
    name = f"models/predictions/{TASK}/{key}/logits-{'0' * 16}.npy"
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _assert_refused(
        _bundle(tmp_path, {**files, name: buffer.getvalue()}), tmp_path / "root", BundleError, "not a numeric"
    )
    record = f"models/predictions/{TASK}/{key}/logits-{'0' * 16}.seconds.json"
    _assert_refused(
        _bundle(tmp_path, {**files, record: b'{"seconds": "soon"}'}), tmp_path / "root", BundleError, "no number"
    )
    odd = f"models/predictions/{TASK}/{key}/logits.pkl"
    _assert_refused(
        _bundle(tmp_path, {**files, odd: b"x"}), tmp_path / "root", BundleError, "not a file a model bundle"
    )


def test_the_same_models_give_the_same_bundle(tmp_path, fake_notebook):
    source = tmp_path / "models"
    tiny_run(source)
    first, second = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    export_bundle(first, profile="quick", notebooks=[fake_notebook], models=source)
    export_bundle(second, profile="quick", notebooks=[fake_notebook], models=source)
    assert first.read_bytes() == second.read_bytes()


def test_export_names_every_missing_model_and_how_to_train_it(tmp_path, fake_notebook):
    with pytest.raises(BundleError, match=r"99_fake: arch2: not in .*wbc_subtypes/arch2 \(`train it`\)"):
        export_bundle(tmp_path / "m.tar.gz", profile="quick", notebooks=[fake_notebook], models=tmp_path / "empty")
    assert not (tmp_path / "m.tar.gz").exists()


def test_export_refuses_weights_that_differ_from_their_run_json(tmp_path, fake_notebook):
    run = tiny_run(tmp_path / "models")
    data = bytearray(run.final_path.read_bytes())
    data[-1] ^= 1
    run.final_path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="differs from what .*run.json recorded"):
        export_bundle(tmp_path / "m.tar.gz", profile="quick", notebooks=[fake_notebook], models=tmp_path / "models")


def test_wanted_runs_cover_every_notebook_with_models():
    runs = bundles.wanted_runs("quick")
    tasks = {run.task for run in runs}
    assert {"detection/ssd_vgg16", "detection/ssd_alexnet", "wbc_subtypes/arch2", "general/detector/all"} <= tasks
    assert "general/classifier/dataset2+PBC_none_jitter" in tasks
    assert all(bundles.allowed_path(f"models/{task}/{'0' * 16}/final.pt") for task in tasks)
    with pytest.raises(ValueError, match="no trained models in notebook"):
        bundles.wanted_runs("quick", ["03_covid_diagnosis"])


# ---- crafted archives -------------------------------------------------------------------------

KEY = "0123456789abcdef"


def _tar(path: Path, members: list[tuple[str, bytes | tarfile.TarInfo]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, content in members:
            if isinstance(content, tarfile.TarInfo):
                tf.addfile(content)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
    return path


def _manifest(files: dict[str, bytes], **extra) -> bytes:
    entries = {n: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in files.items()}
    manifest = {
        "format": bundles.FORMAT,
        "format_version": bundles.FORMAT_VERSION,
        "bloodlib": {"version": "0", "git_commit": "x"},
        "torch": torch.__version__.split("+")[0],
        "profile": "quick",
        "notebooks": [],
        "runs": [],
        "files": entries,
    }
    return json.dumps(manifest | extra).encode()


def _bundle(tmp_path: Path, files: dict[str, bytes], *, extra=(), manifest: bytes | None = None) -> Path:
    members = [("manifest.json", manifest if manifest is not None else _manifest(files))]
    return _tar(tmp_path / "crafted.tar.gz", members + list(files.items()) + list(extra))


def _run_files(tmp_path: Path, weights: bytes | None = None, **changes) -> dict[str, bytes]:
    """``final.pt`` and ``run.json`` of a consistent run (optionally other weights, or other run.json fields)."""
    source = tiny_run(tmp_path / "source")
    final = weights if weights is not None else source.final_path.read_bytes()
    info = json.loads(source.info_path.read_text())
    info["files"]["final.pt"] = {"size": len(final), "sha256": hashlib.sha256(final).hexdigest()}
    info.update(changes)
    folder = f"models/{TASK}/{source.key}"
    return {f"{folder}/final.pt": final, f"{folder}/run.json": json.dumps(info).encode()}


def _link(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _assert_refused(bundle: Path, root: Path, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        import_bundle(bundle, models=root)
    assert not root.exists() or [p for p in root.rglob("*") if not p.is_dir()] == []


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("/etc/evil", "unsafe member path"),
        (f"models/{TASK}/../../../evil/{KEY}/run.json", "unsafe member path"),
        ("C:/evil/run.json", "unsafe member path"),
        (f"models/{TASK}/{KEY}/model.pkl", "not a file a model bundle holds"),
        (f"models/{TASK}/{KEY}/checkpoint.pt", "not a file a model bundle holds"),
        (f"models/wbc_subtypes/canvases/{KEY}.pt", "not a file a model bundle holds"),
        ("README.txt", "not a file a model bundle holds"),
        (f"models/{TASK}/not-a-key/final.pt", "not a file a model bundle holds"),
    ],
)
def test_import_refuses_unsafe_or_unexpected_paths(tmp_path, name, match):
    error = UnsafeArchiveError if "unsafe" in match else BundleError
    _assert_refused(_bundle(tmp_path, {name: b"x"}), tmp_path / "root", error, match)


@pytest.mark.parametrize(
    ("kind", "target", "word"),
    [
        (tarfile.SYMTYPE, "/etc/passwd", "symlink"),
        (tarfile.LNKTYPE, "manifest.json", "hardlink"),
        (tarfile.CHRTYPE, "", "device"),
        (tarfile.FIFOTYPE, "", "device"),
    ],
)
def test_import_refuses_links_and_devices(tmp_path, kind, target, word):
    bundle = _bundle(tmp_path, {}, extra=[("x", _link(f"models/{TASK}/{KEY}/run.json", kind, target))])
    _assert_refused(bundle, tmp_path / "root", UnsafeArchiveError, f"refusing {word} member")


def test_import_refuses_a_zip_symlink(tmp_path):
    bundle = tmp_path / "crafted.zip"
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("manifest.json", _manifest({}))
        link = zipfile.ZipInfo(f"models/{TASK}/{KEY}/run.json")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "/etc/passwd")
    _assert_refused(bundle, tmp_path / "root", UnsafeArchiveError, "refusing symlink member")


def test_import_refuses_disagreements_with_the_manifest(tmp_path):
    files = _run_files(tmp_path)
    (final, final_bytes), (info, info_bytes) = files.items()
    root = tmp_path / "root"
    unlisted = _bundle(tmp_path, files, manifest=_manifest({info: info_bytes}))
    _assert_refused(unlisted, root, BundleError, "is not in its manifest")
    lacking = _bundle(tmp_path, {info: info_bytes}, manifest=_manifest(files))
    _assert_refused(lacking, root, BundleError, "which its manifest lists")
    resized = _bundle(tmp_path, files, manifest=_manifest({info: info_bytes, final: final_bytes + b"0"}))
    _assert_refused(resized, root, BundleError, "its manifest says")
    altered = bytearray(final_bytes)
    altered[-1] ^= 1
    tampered = _bundle(tmp_path, {info: info_bytes, final: bytes(altered)}, manifest=_manifest(files))
    _assert_refused(tampered, root, BundleError, "sha256 or size differs from the manifest")
    twice = _bundle(tmp_path, files, extra=[(info, info_bytes)])
    _assert_refused(twice, root, BundleError, "appears twice")


def test_import_refuses_a_run_json_of_another_run(tmp_path):
    files = _run_files(tmp_path, params={**PARAMS, "epochs": 99})  # its key is not the folder's name
    _assert_refused(_bundle(tmp_path, files), tmp_path / "root", BundleError, "describes another run")


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_import_unpickles_nothing(tmp_path):
    marker = tmp_path / "code-ran"
    buffer = io.BytesIO()
    torch.save({"weight": _Exploit(marker)}, buffer)  # a consistent bundle whose weights carry code
    files = _run_files(tmp_path, weights=buffer.getvalue())
    _assert_refused(_bundle(tmp_path, files), tmp_path / "root", BundleError, "cannot be read as weights")
    assert not marker.exists()
    plain = tmp_path / "plain.tar.gz"
    _tar(plain, [("manifest.json", _manifest({})), ("x", pickle.dumps(_Exploit(marker)))])
    _assert_refused(plain, tmp_path / "root", BundleError, "not a file a model bundle holds")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"not an archive at all", "neither a tar nor a zip"),
        (None, "has no manifest.json"),
        (b"{not json", "is not JSON"),
        (json.dumps({"format": "other"}).encode(), "not a bloodlib model bundle"),
        (_manifest({}, format_version=99), "version 99 model bundle"),
    ],
)
def test_import_refuses_what_is_not_a_bundle(tmp_path, content, match):
    if content is None:
        bundle = _tar(tmp_path / "b.tar.gz", [("other.txt", b"x")])
    elif content.startswith(b"not"):
        bundle = tmp_path / "b.tar.gz"
        bundle.write_bytes(content)
    else:
        bundle = _tar(tmp_path / "b.tar.gz", [("manifest.json", content)])
    _assert_refused(bundle, tmp_path / "root", BundleError, match)


def test_cli_import_exits_2_on_a_refused_bundle(tmp_path, capsys):
    bundle = _bundle(tmp_path, {"/etc/evil": b"x"})
    assert cli.main(["models", "import", str(bundle), "--models", str(tmp_path / "root")]) == 2
    assert "unsafe member path" in capsys.readouterr().err
    assert cli.main(["models", "verify", str(bundle)]) == 2
