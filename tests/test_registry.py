"""Data registry: resolution order, verification against checksums, atomic fetch with fallbacks."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from bloodlib.data import registry
from bloodlib.data.checks import Check, tree_digest
from tests.http_helpers import TruncatingHandler, make_tar, serve_directory, serve_handler


@pytest.fixture
def isolated(data_root, tmp_path, monkeypatch):
    """An empty cache and no local data folder (``data_root`` is read before it is unset)."""
    monkeypatch.setenv("BLOODLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BLOODLIB_DATA", raising=False)
    return tmp_path


@pytest.mark.parametrize("name", list(registry.DATASETS))
def test_shared_copy_matches_registry_checksums(name, data_root):
    """The registry's checksums describe the real data (every file hashed)."""
    result = registry.verify(name)
    assert result.ok, result.problems
    assert result.path == data_root.resolve() / name


def test_locate_prefers_bloodlib_data_then_cache(isolated, data_root, monkeypatch):
    local = isolated / "local"
    (local / "covid-osr").mkdir(parents=True)
    shutil.copy(data_root / "covid-osr" / "covid_study_v2.xlsx", local / "covid-osr")
    cached = isolated / "cache" / "data" / "covid-osr"
    cached.mkdir(parents=True)
    shutil.copy(data_root / "covid-osr" / "covid_study_v2.xlsx", cached)
    monkeypatch.setenv("BLOODLIB_DATA", str(local))
    assert registry.locate("covid-osr", download=False) == local / "covid-osr"
    monkeypatch.setenv("BLOODLIB_DATA", str(isolated / "empty"))
    assert registry.locate("covid-osr", download=False) == cached


def test_missing_data_is_a_clear_error(isolated):
    with pytest.raises(registry.DataNotFoundError, match="bloodlib data fetch covid-osr"):
        registry.locate("covid-osr", download=False)
    with pytest.raises(KeyError, match="unknown data set 'nope'"):
        registry.get_spec("nope")


def test_verify_detects_a_changed_byte(isolated, data_root, monkeypatch):
    local = isolated / "local" / "covid-osr"
    local.mkdir(parents=True)
    data = bytearray((data_root / "covid-osr" / "covid_study_v2.xlsx").read_bytes())
    data[100] ^= 0xFF
    (local / "covid_study_v2.xlsx").write_bytes(bytes(data))
    monkeypatch.setenv("BLOODLIB_DATA", str(isolated / "local"))
    result = registry.verify("covid-osr")
    assert not result.ok and "covid_study_v2.xlsx: sha256" in result.problems[0]
    with pytest.raises(registry.DataMismatchError, match="data set covid-osr .* does not match the registry"):
        registry.verified_checksums("covid-osr")
    monkeypatch.setenv("BLOODLIB_DATA", str(data_root))
    assert registry.verified_checksums("covid-osr") == registry.verify("covid-osr").as_dict()["sha256"]


# ---------------------------------------------------------------- fetch against a loopback server

FILES = {"Repo-abc/data/a.txt": b"alpha\n", "Repo-abc/data/sub/b.txt": b"beta\n", "Repo-abc/README": b"r\n"}


def fake_spec(tmp_path: Path, *sources: registry.Source) -> registry.DatasetSpec:
    reference = tmp_path / "reference"
    for name, data in FILES.items():
        if name.startswith("Repo-abc/data/"):
            path = reference / name.removeprefix("Repo-abc/data/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    digest, count = tree_digest(reference)
    return registry.DatasetSpec(
        name="fake",
        title="fake",
        homepage="",
        license="",
        sources=sources,
        checks=(Check(".", digest, count),),
        notes=("see the fake notes",),
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "fake") if folder.exists() else []


def test_fetch_good_archive_then_reuse(isolated, monkeypatch):
    served = isolated / "srv"
    served.mkdir()
    make_tar(served / "repo.tar.gz", FILES)
    with serve_directory(served) as base:
        spec = fake_spec(isolated, registry.Source(url=f"{base}/repo.tar.gz", mapping=(("Repo-abc/data/", ""),)))
        monkeypatch.setitem(registry.DATASETS, "fake", spec)
        folder = registry.fetch("fake")
    assert folder == isolated / "cache" / "data" / "fake"
    assert (folder / "sub" / "b.txt").read_bytes() == b"beta\n" and not (folder / "README").exists()
    assert leftovers(folder.parent) == []
    assert registry.locate("fake", download=False) == folder  # the server is gone: no download needed
    assert registry.verify("fake").ok


def test_fetch_falls_back_and_refuses_wrong_content(isolated, monkeypatch):
    served = isolated / "srv"
    served.mkdir()
    make_tar(served / "wrong.tar.gz", {**FILES, "Repo-abc/data/a.txt": b"tampered\n"})
    make_tar(served / "good.tar.gz", FILES)
    archive_sha = hashlib.sha256((served / "good.tar.gz").read_bytes()).hexdigest()
    with serve_directory(served) as base:
        mapping = (("Repo-abc/data/", ""),)
        wrong = registry.Source(url=f"{base}/wrong.tar.gz", mapping=mapping)
        bad_sha = registry.Source(url=f"{base}/good.tar.gz", mapping=mapping, sha256="0" * 64)
        good = registry.Source(url=f"{base}/good.tar.gz", mapping=mapping, sha256=archive_sha)
        monkeypatch.setitem(registry.DATASETS, "fake", fake_spec(isolated, wrong, bad_sha))
        with pytest.raises(registry.DataNotFoundError) as err, pytest.warns(UserWarning, match="trying the next"):
            registry.fetch("fake")
        assert "content differs" in str(err.value) and "sha256" in str(err.value)
        assert "see the fake notes" in str(err.value)
        assert leftovers(isolated / "cache" / "data") == [] and not (isolated / "cache" / "data" / "fake").exists()
        monkeypatch.setitem(registry.DATASETS, "fake", fake_spec(isolated, wrong, good))
        with pytest.warns(UserWarning):
            assert registry.fetch("fake").is_dir()


def test_fetch_interrupted_download_leaves_nothing(isolated, monkeypatch):
    with serve_handler(TruncatingHandler) as base:
        monkeypatch.setitem(
            registry.DATASETS, "fake", fake_spec(isolated, registry.Source(url=f"{base}/x.tar.gz", mapping=(("", ""),)))
        )
        with pytest.raises(registry.DataNotFoundError, match="300 of 1000"):
            registry.fetch("fake")
    assert leftovers(isolated / "cache" / "data") == []
    assert not (isolated / "cache" / "data" / "fake").exists()


def test_kaggle_credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    assert registry.kaggle_headers() is None
    (tmp_path / "kaggle.json").write_text('{"username": "ann", "key": "k"}')
    assert registry.kaggle_headers() == {"Authorization": "Basic YW5uOms="}
