"""Registry entries that take a subset of an upstream archive: bccd-relabel, txl-pbc, pbc.

Each fetch test builds a fake upstream archive with the upstream layout (GitHub's archive of the
pinned commit): the staged files under their upstream names, plus decoys that must not land --
the upstream test split, BCCD-sourced TXL-PBC fields, PBC images outside the subset. Served on a
loopback server, the real registry entry (only its URL changed) must produce exactly the staged
layout, verified by the registry's own checksums.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest

from bloodlib.data import registry
from bloodlib.data.checks import list_files
from bloodlib.data.download import sha256_file
from bloodlib.detection.data import split_ids
from tests.http_helpers import make_tar, serve_directory
from tests.paths import require_data

TXL_ARCHIVE_ROOT = f"TXL-PBC_Dataset-{registry._TXL_SHA}/"
PBC_ARCHIVE_ROOT = f"Blood-Cell-Classification-{registry._PBC_MIRROR_SHA}/PBC_dataset_normal_DIB/"

TXL_DECOYS = {
    "README.md": b"# TXL-PBC\n",
    "TXL_PBC/images/test/held-out.jpg": b"held out",
    "TXL_PBC/labels/test/held-out.txt": b"1 0.5 0.5 0.1 0.1\n",
    "TXL_PBC/images/train/bccd-sourced.jpg": b"bccd",
    "TXL_PBC/labels/train/bccd-sourced.txt": b"1 0.5 0.5 0.1 0.1\n",
    "TXL_PBC/labels/val/bccd-test-image.txt": b"0 0.5 0.5 0.2 0.2\n",
}
PBC_DECOYS = {
    "eosinophil/EO_000001.jpg": b"earlier in sorted order",
    "neutrophil/BNE_000001.jpg": b"earlier band neutrophil",
    "basophil/BA_100102.jpg": b"a class not staged",
}


def files_under(root: Path) -> dict[str, Path]:
    return {path.relative_to(root).as_posix(): path for path in list_files(root)}


def mapping_rows(shared: Path) -> list[dict[str, str]]:
    with open(shared / "bccd-relabel" / "mapping.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Path:
    """A folder serving ``txl.tar`` and ``pbc.tar``, fake upstream archives built from the staged copies."""
    shared = require_data()
    served = tmp_path_factory.mktemp("upstream")
    txl = shared / "txl-pbc"
    members = {f"{TXL_ARCHIVE_ROOT}{name}": data for name, data in TXL_DECOYS.items()}
    members[f"{TXL_ARCHIVE_ROOT}LICENSE"] = (txl / "LICENSE").read_bytes()
    members[f"{TXL_ARCHIVE_ROOT}TXL_PBC/data.yaml"] = (txl / "data.yaml.upstream").read_bytes()
    for name, path in files_under(txl).items():
        if name.startswith(("images/", "labels/")):
            members[f"{TXL_ARCHIVE_ROOT}TXL_PBC/{name}"] = path.read_bytes()
    # TXL-PBC's split is not BCCD's: put the BCCD labels in all three upstream folders in turn.
    for i, row in enumerate(mapping_rows(shared)):
        folder = registry._TXL_SPLITS[i % 3]
        label = (shared / "bccd-relabel" / "labels" / f"{row['bccd_image']}.txt").read_bytes()
        members[f"{TXL_ARCHIVE_ROOT}TXL_PBC/labels/{folder}/{Path(row['txl_image']).stem}.txt"] = label
    make_tar(served / "txl.tar", members, mode="w")

    members = {f"{PBC_ARCHIVE_ROOT}{name}": data for name, data in PBC_DECOYS.items()}
    for name, path in files_under(shared / "pbc").items():
        if name != "SOURCE.md":
            members[f"{PBC_ARCHIVE_ROOT}{registry._PBC_FOLDERS[path.parent.name]}/{path.name}"] = path.read_bytes()
    make_tar(served / "pbc.tar", members, mode="w")
    return served


@pytest.fixture
def shared() -> Path:
    return require_data()


@pytest.fixture
def isolated(shared, tmp_path, monkeypatch) -> Path:
    """An empty cache and no local data folder (``shared`` is read before it is unset)."""
    monkeypatch.setenv("BLOODLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BLOODLIB_DATA", raising=False)
    return tmp_path


def serve_entry(monkeypatch, name: str, url: str) -> None:
    """Point the registry entry ``name`` at ``url``, all else unchanged."""
    spec = registry.get_spec(name)
    (source,) = spec.sources
    monkeypatch.setitem(
        registry.DATASETS, name, dataclasses.replace(spec, sources=(dataclasses.replace(source, url=url),))
    )


@pytest.mark.parametrize("name,archive", [("txl-pbc", "txl.tar"), ("bccd-relabel", "txl.tar"), ("pbc", "pbc.tar")])
def test_fetch_takes_exactly_the_staged_subset(name, archive, upstream, shared, isolated, monkeypatch):
    with serve_directory(upstream) as base:
        serve_entry(monkeypatch, name, f"{base}/{archive}")
        folder = registry.fetch(name)
    assert folder == isolated / "cache" / "data" / name
    assert registry.verify(name).ok, registry.verify(name).problems
    fetched, staged = files_under(folder), files_under(shared / name)
    assert sorted(fetched) == sorted(staged)  # the same layout, nothing more (no decoy, no test split)
    for relative, path in fetched.items():
        if relative != "SOURCE.md":  # documentation: the package's copy, not checked
            assert sha256_file(path) == sha256_file(staged[relative]), relative


def test_txl_pbc_members_are_train_and_val_only():
    members = registry._txl_pbc_members()
    assert len(members) == 2 * 835
    assert all(
        "/test/" not in member and not path.startswith(("images/test", "labels/test")) for member, path in members
    )


def test_bccd_relabel_members_are_bccd_train_and_val_images():
    bccd = split_ids(require_data() / "BCCD", "official", seed=0)
    targets = {path for _, path in registry._bccd_relabel_members()}
    assert len(targets) == 181
    ids = {Path(path).stem for path in targets}
    assert ids <= set(bccd["train"]) | set(bccd["val"]) and not ids & set(bccd["test"])


def test_manifests_refuse_held_out_rows(monkeypatch):
    monkeypatch.setattr(registry, "manifest_rows", lambda name: [{"split": "test", "image": "a.jpg", "source": "PBC"}])
    with pytest.raises(ValueError, match="split 'test' of a.jpg is not train or val"):
        registry._txl_pbc_members()
    row = {"bccd_image": "BloodImage_00001", "bccd_split": "test", "txl_image": "a.jpg"}
    monkeypatch.setattr(registry, "manifest_rows", lambda name: [row])
    with pytest.raises(ValueError, match="BloodImage_00001 is in BCCD's 'test' list"):
        registry._bccd_relabel_members()


def test_package_manifests_match_the_registry_checksums():
    checks = {(spec.name, check.path): check.sha256 for spec in registry.DATASETS.values() for check in spec.checks}
    for spec in registry.DATASETS.values():
        for source in spec.sources:
            for manifest, path in source.package_files:
                assert (registry.MANIFESTS_DIR / manifest).is_file(), manifest
                if (spec.name, path) in checks:
                    assert sha256_file(registry.MANIFESTS_DIR / manifest) == checks[spec.name, path], manifest


def test_pbc_file_list_follows_the_subset_rule():
    rows = registry.manifest_rows("pbc/files.csv")
    by_label: dict[str, list[str]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row["file"])
    assert {label: len(files) for label, files in by_label.items()} == dict.fromkeys(registry._PBC_FOLDERS, 600)
    assert all(files == sorted(files) for files in by_label.values())
    prefixes = [file.split("_")[0] for file in by_label["NEUTROPHIL"]]
    assert prefixes.count("BNE") == 300 and prefixes.count("SNE") == 300
    staged = require_data() / "pbc"
    assert {f"{row['label']}/{row['file']}" for row in rows} == set(files_under(staged)) - {"SOURCE.md"}
