"""Inputs of `bloodlib analyze`: samples from paths, and every bad-image case read safely."""

from __future__ import annotations

import numpy as np
import pytest

from bloodlib.pipeline.io import ERROR, WARNING, ImageInputError, load_image, plan_inputs
from tests.pipeline_helpers import bad_inputs, bccd_images, colour_image, make_unreadable, write_rgb


def load(path, **kw):
    return load_image(path, max_side=kw.get("max_side", 4000), min_side=kw.get("min_side", 32))


def test_colour_image_loads_unchanged(tmp_path):
    rgb = colour_image()
    image = load(write_rgb(tmp_path / "ok.png", rgb))
    assert image.rgb.dtype == np.uint8 and image.rgb.shape == (120, 160, 3) and image.rgb.flags.writeable
    assert np.array_equal(image.rgb, rgb) and image.scale == 1.0 and image.warnings == []
    assert (image.width, image.height) == (160, 120)


@pytest.mark.parametrize(
    "case,words",
    [("not_an_image", "not an image"), ("truncated", "truncated or corrupt"), ("grayscale", "grayscale image")],
)
def test_bad_files_raise_clear_errors(tmp_path, case, words):
    files = bad_inputs(tmp_path)
    with pytest.raises(ImageInputError, match=words):
        load(files[case])


def test_empty_gray16_and_gray_as_rgb_are_refused(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageInputError, match="empty file"):
        load(tmp_path / "empty.jpg")
    gray16 = colour_image()[..., 0].astype(np.uint16) * 257
    with pytest.raises(ImageInputError, match="grayscale image"):
        load(write_rgb(tmp_path / "g16.png", gray16))
    flat = np.repeat(colour_image()[..., :1], 3, axis=2)
    with pytest.raises(ImageInputError, match="R = G = B"):
        load(write_rgb(tmp_path / "flat.png", flat))
    with pytest.raises(ImageInputError, match="smaller than 32 px"):
        load(write_rgb(tmp_path / "tiny.png", colour_image(20, 20)))


def test_rgba_and_16_bit_colour_are_converted_with_a_warning(tmp_path):
    files = bad_inputs(tmp_path)
    rgba = load(files["rgba"])
    assert rgba.rgb.shape == (120, 160, 3) and any("alpha channel" in w for w in rgba.warnings)
    expected = (colour_image(seed=1).astype(float) * 128 + 255 * 127) / 255  # alpha 128 over white
    assert np.abs(rgba.rgb.astype(float) - expected).max() <= 2
    png16 = load(files["png16"])
    assert png16.rgb.dtype == np.uint8 and any("16-bit PNG" in w for w in png16.warnings)
    assert np.abs(png16.rgb.astype(int) - colour_image(seed=2)).max() <= 1


def test_large_image_is_resized_with_a_warning(tmp_path):
    files = bad_inputs(tmp_path)
    image = load(files["too_large"])
    assert max(image.rgb.shape[:2]) == 4000 and (image.width, image.height) == (4400, 3300)
    assert image.scale == pytest.approx(4000 / 4400) and "over 4000 px a side: resized" in image.warnings[0]


def test_unreadable_file_is_an_error(tmp_path, monkeypatch):
    files = bad_inputs(tmp_path)
    make_unreadable(files["unreadable"], monkeypatch)
    with pytest.raises(ImageInputError, match="cannot read file"):
        load(files["unreadable"])


def test_plan_names_samples_and_reports_bad_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    smear = tmp_path / "smear"
    write_rgb(smear / "a.png", colour_image())
    write_rgb(smear / "a.jpg", colour_image())
    write_rgb(smear / "b c.png", colour_image())
    (smear / ".hidden").write_text("x")
    (smear / "sub").mkdir()
    single = write_rgb(tmp_path / "other" / "smear.png", colour_image())
    plan = plan_inputs([smear, tmp_path / "empty", tmp_path / "missing", single])
    assert list(plan.samples) == ["smear", "empty", "missing", "smear-2"]
    assert [f.name for f in plan.samples["smear"]] == ["a.jpg", "a.png", "b_c"]
    assert plan.samples["smear-2"][0].path == single
    levels = {(p.sample, p.level): p.message for p in plan.problems}
    assert levels[("empty", ERROR)].startswith("empty folder")
    assert levels[("missing", ERROR)] == "path does not exist"
    assert "sub-folder not analysed" in levels[("smear", WARNING)]


def test_real_bccd_image_loads(tmp_path):
    image = load(bccd_images(1)[0])
    assert image.rgb.shape == (480, 640, 3) and image.warnings == []
