"""`bloodlib analyze` end to end with tiny untrained models: bad inputs, outputs, exit codes, determinism."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from bloodlib import cli
from bloodlib.pipeline import NOTICE
from bloodlib.pipeline import models as pipeline_models
from tests.pipeline_helpers import bad_inputs, bccd_images, make_unreadable, tiny_models


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Tiny models instead of the cache's; the COVID-19 model is fitted into a temporary models root."""
    monkeypatch.setenv("BLOODLIB_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr(pipeline_models, "load_models", lambda p, **kw: tiny_models())
    return tmp_path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def analyze(*args: str) -> int:
    return cli.main(["analyze", *map(str, args), "--profile", "quick", "--quiet"])


def test_bad_inputs_are_reported_and_the_rest_goes_on(env, monkeypatch):
    smear = env / "smear"
    files = bad_inputs(smear)
    make_unreadable(files["unreadable"], monkeypatch)
    for path in bccd_images(2):
        shutil.copy(path, smear)
    (env / "empty").mkdir()
    single = shutil.copy(bccd_images(3)[2], env / "single.jpg")
    out = env / "out"
    assert analyze(smear, env / "empty", env / "missing", single, "--out", out) == 1

    messages = {(m["sample"], Path(m["path"]).name, m["level"]): m["message"] for m in read_csv(out / "messages.csv")}
    for name, words in (
        ("notes.txt", "not an image"),
        ("truncated.jpg", "truncated or corrupt"),
        ("grayscale.png", "grayscale image"),
        ("unreadable.jpg", "cannot read file"),
    ):
        assert words in messages[("smear", name, "error")]
    for name, words in (("rgba.png", "alpha channel"), ("png16.png", "16-bit PNG"), ("too_large.jpg", "resized")):
        assert words in messages[("smear", name, "warning")]
    assert "empty folder" in messages[("empty", "empty", "error")]
    assert messages[("missing", "missing", "error")] == "path does not exist"

    folder = out / "samples" / "smear"
    analysed = {"rgba", "png16", "too_large", "BloodImage_00000", "BloodImage_00001"}
    assert {p.name.split(".")[0] for p in folder.glob("*.detections.csv")} == analysed
    assert {p.name.split(".")[0] for p in folder.glob("*.annotated.png")} == analysed
    fields = {row["field"]: row for row in read_csv(folder / "fields.csv")}
    assert fields["truncated"]["status"] == "failed" and fields["too_large"]["status"] == "ok"
    big = json.loads((folder / "too_large.detections.json").read_text())
    assert (big["width"], big["height"]) == (4400, 3300) and big["analysed_size"] == [4000, 3000]
    assert max(d["box"][2] for d in big["detections"]) > 4000  # boxes in the file's own pixels

    summary = read_csv(out / "summary.csv")
    assert [r["sample"] for r in summary] == ["empty", "missing", "single", "smear"]
    by = {r["sample"]: r for r in summary}
    assert by["smear"]["status"] == "ok" and by["smear"]["fields"] == "9" and by["smear"]["fields_analysed"] == "5"
    assert by["empty"]["status"] == by["missing"]["status"] == "failed"
    assert 0 <= float(by["smear"]["covid19_probability"]) <= 1 and by["smear"]["covid19_low_confidence"] == "true"
    assert "fewer than 100" in by["smear"]["covid19_reasons"]


def test_outputs_state_the_notice_are_atomic_and_byte_identical(env):
    smear = env / "smear"
    smear.mkdir()
    for path in bccd_images(3):
        shutil.copy(path, smear)
    outs = [env / "a", env / "b"]
    for out in outs:
        assert analyze(smear, "--out", out, "--age", "70", "--sex", "F") == 0
    a, b = outs
    csvs = sorted(p.relative_to(a) for p in a.rglob("*.csv"))
    assert len(csvs) == 6  # summary, messages, fields and one detection table per image
    for rel in csvs:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        assert read_csv(a / rel) == [] or all(row["notice"] == NOTICE for row in read_csv(a / rel)), rel
    for path in a.rglob("*.json"):
        assert json.loads(path.read_text())["notice"] == NOTICE
    for path in a.rglob("*.png"):
        with Image.open(path) as image:
            assert image.text["Disclaimer"] == NOTICE
    assert NOTICE in (a / "NOTICE.txt").read_text()
    assert not [p for p in a.rglob("*") if p.name.endswith(".tmp")]
    sample = json.loads((a / "samples" / "smear" / "sample.json").read_text())
    assert sample["covid19"]["demographics"] == {"age": 70.0, "sex": "F"} and "age, sex" in sample["covid19"]["model"]
    assert sample["counts_total"]["wbc"] == sum(sample["differential"]["counts"].values())


def test_missing_models_exit_3_and_bad_arguments_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BLOODLIB_MODELS", str(tmp_path / "models"))
    image = bccd_images(1)[0]
    assert cli.main(["analyze", str(image), "--out", str(tmp_path / "o"), "--quiet"]) == 3  # environment: no models
    err = capsys.readouterr().err
    assert "no trained general detector" in err and "bloodlib train general --profile cpu" in err
    assert cli.main(["analyze", str(image), "--out", str(tmp_path / "o"), "--model-set", "bccd", "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "no trained vgg16 detector" in err and "bloodlib train --profile cpu" in err
    assert cli.main(["analyze", str(image), "--model-set", "bccd", "--um-per-pixel", "0.1", "--quiet"]) == 2
    assert "--um-per-pixel needs the general models" in capsys.readouterr().err
    assert cli.main(["analyze", str(image), "--out", str(tmp_path / "o"), "--age", "50", "--quiet"]) == 2
    assert "give both --age and --sex" in capsys.readouterr().err


def test_without_osr_counts_still_come_out(env, monkeypatch):
    from bloodlib.pipeline import covid

    def no_osr(p, root):
        raise FileNotFoundError("OSR (covid-osr) is not available")

    monkeypatch.setattr(covid, "load_or_fit", no_osr)
    image = shutil.copy(bccd_images(1)[0], env / "one.jpg")
    out = env / "out"
    assert analyze(image, "--out", out) == 0
    (row,) = read_csv(out / "summary.csv")
    assert row["status"] == "ok" and row["covid19_probability"] == "" and "OSR" in row["covid19_reasons"]
    assert any("no COVID-19 model" in m["message"] for m in read_csv(out / "messages.csv"))


def test_train_defaults_to_all_tasks():
    assert cli.build_parser().parse_args(["train"]).task == "all"
    assert cli.build_parser().parse_args(["train", "wbc", "--profile", "quick"]).task == "wbc"
