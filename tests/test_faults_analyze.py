"""Fault suite, ``bloodlib analyze``: the output folder is owned by the run (replaced whole, never a mix of
two runs; interrupts and full disks leave the previous result), ``--out`` where a swap could lose files is
refused, and hostile inputs are per-file errors. Tiny untrained models stand in for the cache's."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import struct
import zlib
from pathlib import Path

import pytest

from bloodlib import cli
from bloodlib.pipeline import io as pipeline_io
from bloodlib.pipeline import models as pipeline_models
from bloodlib.pipeline import outputs
from tests.fault_helpers import leftovers, snapshot
from tests.pipeline_helpers import bccd_images, tiny_models


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOODLIB_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr(pipeline_models, "load_models", lambda p, **kw: tiny_models())
    return tmp_path


def analyze(*args) -> int:
    return cli.main(["analyze", *map(str, args), "--profile", "quick", "--quiet", "--no-images"])


def samples(env: Path, *names: str) -> list[Path]:
    folders = []
    for k, name in enumerate(names):
        folder = env / name
        folder.mkdir()
        shutil.copy(bccd_images(k + 1)[k], folder)
        folders.append(folder)
    return folders


def record_reads(monkeypatch, log: Path) -> None:
    """Log the name of every file :func:`pipeline_io.read_bytes` opens to ``log`` (DataLoader workers included)."""
    real = pipeline_io.read_bytes

    def read(path, *args):
        with open(log, "a", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(Path(path).name + "\n")
        return real(path, *args)

    monkeypatch.setattr(pipeline_io, "read_bytes", read)


def reads(log: Path) -> list[str]:
    return sorted(log.read_text(encoding="utf-8").split()) if log.exists() else []


def messages(out: Path) -> dict[str, str]:
    with (out / "messages.csv").open(newline="", encoding="utf-8") as handle:
        return {Path(row["path"]).name: row["message"] for row in csv.DictReader(handle) if row["level"] == "error"}


# ---------------------------------------------------------------- the output folder


def test_a_second_run_replaces_the_whole_folder(env):
    a, b = samples(env, "A", "B")
    out = env / "R"
    assert analyze(a, b, "--out", out) == 0
    assert (out / "samples" / "B").is_dir()
    assert analyze(a, "--out", out) == 0
    with (out / "summary.csv").open() as handle:
        assert [row["sample"] for row in csv.DictReader(handle)] == ["A"]
    assert not (out / "samples" / "B").exists()  # nothing of the first run is left beside the second
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["tool"] == "bloodlib analyze" and info["inputs"] == [str(a)]
    assert leftovers(env) == []


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_run_leaves_the_previous_result(env, monkeypatch, capsys, how):
    a, b = samples(env, "A", "B")
    out = env / "R"
    assert analyze(a, b, "--out", out) == 0
    before = snapshot(out)
    real = outputs.write_field

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)  # some outputs of the new run are written (into its staging folder)
        if how == "ctrl-c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(outputs, "write_field", interrupted)
    capsys.readouterr()
    assert analyze(a, "--out", out) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "left as it was" in err and "Traceback" not in err
    assert snapshot(out) == before and leftovers(env) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_a_full_disk_leaves_the_previous_result_and_exits_3(env, monkeypatch, capsys):
    a, b = samples(env, "A", "B")
    out = env / "R"
    assert analyze(a, b, "--out", out) == 0
    before = snapshot(out)
    real = outputs.atomic_write_text

    def full(path, text):
        if path.name == "fields.csv":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, text)

    monkeypatch.setattr(outputs, "atomic_write_text", full)
    import bloodlib.pipeline.analyze as analyze_module

    monkeypatch.setattr(analyze_module, "atomic_write_text", full)
    capsys.readouterr()
    assert analyze(a, "--out", out) == 3
    err = capsys.readouterr().err
    assert "disk full" in err and "fields.csv" in err and "left as it was" in err and "Traceback" not in err
    assert snapshot(out) == before and leftovers(env) == []


def test_an_unwritable_output_place_exits_3(env, monkeypatch, capsys):
    (a,) = samples(env, "A")
    import bloodlib.pipeline.analyze as analyze_module

    def denied(parent, prefix):
        raise PermissionError(errno.EACCES, "Permission denied", str(parent))

    monkeypatch.setattr(analyze_module, "staging_dir", denied)  # as root, chmod would not stop the write
    assert analyze(a, "--out", env / "R") == 3
    err = capsys.readouterr().err
    assert f"permission denied: {env}" in err and "Traceback" not in err and not (env / "R").exists()


def test_out_inside_an_input_folder_is_refused(env, capsys):
    (a,) = samples(env, "A")
    before = snapshot(a)
    assert analyze(a, "--out", a / "results") == 2
    err = capsys.readouterr().err
    assert "is inside the input folder" in err and snapshot(a) == before and not (a / "results").exists()


def test_out_holding_an_input_is_refused(env, capsys):
    (a,) = samples(env, "A")
    assert analyze(a, "--out", env) == 2
    assert "holds the input" in capsys.readouterr().err and (a / os.listdir(a)[0]).is_file()


def test_out_with_other_files_is_refused(env, capsys):
    (a,) = samples(env, "A")
    other = env / "thesis"
    other.mkdir()
    (other / "chapter1.tex").write_text("precious")
    assert analyze(a, "--out", other) == 2
    assert "not an earlier output of bloodlib analyze" in capsys.readouterr().err
    assert snapshot(other) == {"chapter1.tex": b"precious"}


def test_stale_staging_of_a_killed_run_is_removed(env):
    (a,) = samples(env, "A")
    dead = env / ".R.staging-999999999-abc"  # no such process
    dead.mkdir()
    (dead / "summary.csv").write_text("half")
    assert analyze(a, "--out", env / "R") == 0
    assert not dead.exists() and leftovers(env) == []


# ---------------------------------------------------------------- hostile inputs


def test_fifo_and_devices_are_per_file_errors_and_never_read(env, monkeypatch):
    (a,) = samples(env, "A")
    os.mkfifo(a / "pipe.jpg")  # reading it would block forever
    os.symlink("/dev/zero", a / "zero.png")  # reading it would never end
    os.symlink(a / "pipe.jpg", a / "link-to-pipe.jpg")
    os.symlink(env / "nowhere.jpg", a / "dangling.jpg")
    good = next(p for p in a.iterdir() if p.name.startswith("BloodImage"))
    os.symlink(good, a / "link-to-image.jpg")
    record_reads(monkeypatch, env / "reads.log")
    out = env / "R"
    assert analyze(a, "--out", out) == 1
    errors = messages(out)
    assert "not a regular file (a FIFO, a named pipe)" in errors["pipe.jpg"]
    assert "not a regular file (a character device" in errors["zero.png"]
    assert "not a regular file (a FIFO, a named pipe)" in errors["link-to-pipe.jpg"]
    assert "broken symbolic link" in errors["dangling.jpg"]
    assert reads(env / "reads.log") == sorted([good.name, "link-to-image.jpg"])  # only regular files were opened
    assert (out / "samples" / "A" / "link-to-image.detections.csv").is_file()


def test_a_file_over_the_size_limit_is_refused_before_reading(env, monkeypatch):
    (a,) = samples(env, "A")
    (a / "slide.svs").write_bytes(b"\0" * 300_000)
    record_reads(monkeypatch, env / "reads.log")
    out = env / "R"
    assert analyze(a, "--out", out, "--max-file-mb", "0.2") == 1
    assert "0.3 MB, over the limit of 0.2 MB: not read" in messages(out)["slide.svs"]
    assert len(reads(env / "reads.log")) == 1 and "slide.svs" not in reads(env / "reads.log")


def test_only_jpeg_png_bmp_tiff_are_decoded_whatever_the_name(env, monkeypatch):
    from PIL import Image

    (a,) = samples(env, "A")
    (a / "scan.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n")
    (a / "field.png").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    gif = a / "anim.jpg"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(gif, format="GIF")
    log = env / "opened.log"
    real = Image.open

    def spy(fp, *args, **kwargs):
        with open(log, "a") as handle:
            handle.write(f"{kwargs.get('formats')}\n")
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    out = env / "R"
    assert analyze(a, "--out", out) == 1
    for name in ("scan.jpg", "field.png", "anim.jpg"):
        assert "only JPEG, PNG, BMP and TIFF files are read" in messages(out)[name]
    assert log.read_text().split("\n")[:-1] == ["['JPEG']"]  # Pillow only saw the one JPEG, told its format


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels (a decompression bomb's header) with one tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_before_decoding(env):
    (a,) = samples(env, "A")
    (a / "bomb.png").write_bytes(png_header(12_000, 12_000))  # over the limit, under Pillow's own guard
    (a / "huge.png").write_bytes(png_header(40_000, 40_000))  # over Pillow's own guard too
    out = env / "R"
    assert analyze(a, "--out", out) == 1
    errors = messages(out)
    assert "12000x12000 px, over the limit of 100 megapixels: not decoded" in errors["bomb.png"]
    assert "1600 megapixels, over the limit of 100 megapixels: not decoded" in errors["huge.png"]


def test_odd_and_non_utf8_names_get_safe_outputs_and_the_batch_goes_on(env):
    a = env / "A"
    a.mkdir()
    image = bccd_images(1)[0].read_bytes()
    names = [b"caf\xe9.jpg", b"line\nbreak\x1b[31m.jpg", ("x" * 240 + ".jpg").encode(), "Ω.jpg".encode()]
    for name in names:
        with open(os.path.join(os.fsencode(a), name), "wb") as handle:
            handle.write(image)
    out = env / "R"
    assert analyze(a, "--out", out) == 0
    produced = sorted(p.name for p in (out / "samples" / "A").glob("*.detections.csv"))
    assert len(produced) == 4 and all(len(name) < 120 and name.isascii() for name in produced)
    text = (out / "samples" / "A" / "fields.csv").read_text(encoding="utf-8")  # valid UTF-8 throughout
    assert "caf\\xe9.jpg" in text and "line\\nbreak\\x1b[31m.jpg" in text and "\x1b" not in text
    assert "Ω.jpg" in text
