"""Fault suite, files: atomic writes are durable (file and folder fsynced), leave the old file on failure, and
give the permissions a plain ``open()``/``mkdir()`` gives under the umask (tested under 022 and 077), for the
atomic writer, the staging folders, the model cache and ``bloodlib analyze``'s outputs."""

from __future__ import annotations

import errno
import os
import shutil
import stat

import pytest
import torch

from bloodlib import cli, fsutil
from bloodlib.modelcache import ModelRun
from tests.fault_helpers import leftovers


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_and_staging_folders_honour_the_umask(tmp_path, umask):
    assert fsutil.current_umask() == umask
    written = fsutil.atomic_write_text(tmp_path / "new" / "a.txt", "x")
    assert mode(written) == 0o666 & ~umask and mode(written.parent) == 0o777 & ~umask
    staging = fsutil.staging_dir(tmp_path, ".out.staging-")
    assert mode(staging) == 0o777 & ~umask
    (tmp_path / "plain.txt").write_text("x")
    assert mode(written) == mode(tmp_path / "plain.txt")  # what open() gives


def test_model_cache_files_honour_the_umask(tmp_path, umask):
    run = ModelRun("t/net", {}, {}, tmp_path)
    model = torch.nn.Linear(1, 1)
    run.save_checkpoint({"model": model.state_dict()})
    assert mode(run.checkpoint_path) == 0o666 & ~umask
    run.save_final(model.state_dict(), history=[], best_epoch=1, train_seconds=0.0)
    assert mode(run.final_path) == mode(run.info_path) == 0o666 & ~umask
    assert mode(run.folder) == 0o777 & ~umask


def test_analyze_outputs_honour_the_umask(tmp_path, monkeypatch, umask):
    from bloodlib.pipeline import models as pipeline_models
    from tests.pipeline_helpers import bccd_images, tiny_models

    monkeypatch.setenv("BLOODLIB_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr(pipeline_models, "load_models", lambda p, **kw: tiny_models())
    image = shutil.copy(bccd_images(1)[0], tmp_path / "one.jpg")
    out = tmp_path / "out"
    assert cli.main(["analyze", str(image), "--out", str(out), "--profile", "quick", "--quiet"]) == 0
    files = [p for p in out.rglob("*") if p.is_file()]
    folders = [out, *(p for p in out.rglob("*") if p.is_dir())]
    assert len(files) >= 6 and {mode(p) for p in files} == {0o666 & ~umask}
    assert {mode(p) for p in folders} == {0o777 & ~umask}


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = fsutil.atomic_write_text(tmp_path / "runs.json", "old")
    real = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        fsutil.atomic_write_text(target, "new")
    monkeypatch.setattr(os, "fsync", real)
    assert target.read_text() == "old" and leftovers(tmp_path) == []


def test_atomic_writes_fsync_the_file_then_its_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def record(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real(fd)

    monkeypatch.setattr(os, "fsync", record)
    fsutil.atomic_write_bytes(tmp_path / "final.pt", b"weights")
    assert synced == [False, True]  # the data before the rename, the folder entry after it
    synced.clear()
    new = fsutil.staging_dir(tmp_path, ".x-")
    fsutil.replace_dir(new, tmp_path / "x")
    assert synced == [True]
