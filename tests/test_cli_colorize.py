"""`semcolor colorize`: photos of every kind in, a result per photo out, failures reported, exit status."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semcolor.cli import COMMANDS, main
from semcolor.color import rgb8_to_lab
from semcolor.photo_io import read_photo
from tests.inference_models import NUM_CLASSES, PSC_CONFIG, save_model, save_sdc_pair

REAL = ["brian-61OqtzLUWko-unsplash.png", "lena-varzar-GGfVWu1Xpfo-unsplash.png"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    sdc, gridnet = save_sdc_pair(folder)
    psc = save_model(folder / "psc.pt", "psc_plain", PSC_CONFIG, seed=4)
    return {"sdc": sdc, "gridnet": gridnet, "psc": psc}


@pytest.fixture
def mixed_folder(tmp_path, shared_dir) -> Path:
    """A user's folder: real photos made gray, in color, 16-bit, palette, RGBA, rotated, and bad files."""
    folder = tmp_path / "photos"
    (folder / "holiday").mkdir(parents=True)
    photos = shared_dir / "photos"
    Image.open(photos / REAL[0]).convert("L").save(folder / "gray.png")  # a color photo converted to gray
    shutil.copy(photos / REAL[1], folder / "holiday" / "color.png")
    rgb = np.asarray(Image.open(photos / REAL[1]).convert("RGB"))
    Image.fromarray((rgb[..., 1].astype(np.uint16) * 257)[:200, :300]).save(folder / "deep16.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(folder / "palette.bmp")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.webp", lossless=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb[:160, :320]).save(folder / "holiday" / "rotated.jpg", exif=exif, quality=92)
    Image.fromarray(rgb).save(folder / "cut.jpg", quality=90)
    (folder / "cut.jpg").write_bytes((folder / "cut.jpg").read_bytes()[:4000])
    (folder / "notes.png").write_text("not an image at all")
    Image.new("L", (1500, 1000), 3).save(folder / "bomb.tif", compression="tiff_deflate")
    (folder / "readme.txt").write_text("skipped: not an image extension")
    return folder


GOOD = {"gray.png": (352, 352), "holiday/color.png": (352, 352), "deep16.png": (200, 300),
        "palette.bmp": (352, 352), "alpha.webp": (352, 352), "holiday/rotated.jpg": (320, 160)}
BAD = {"cut.jpg": "truncated or corrupt", "notes.png": "not an image",
       "bomb.tif": "1000x1500|1500x1000 = 1500000 pixels exceeds the limit of 1000000"}


@pytest.mark.slow
def test_a_mixed_folder(mixed_folder, tmp_path, models, capsys):
    before = {p: p.read_bytes() for p in mixed_folder.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    status = main(["colorize", str(mixed_folder), "--model", str(models["sdc"]),
                   "--segmenter", str(models["gridnet"]), "--out", str(out), "--save-map",
                   "--max-pixels", "1000000", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1
    for name, reason in BAD.items():
        lines = [line for line in err.splitlines() if line.startswith("FAILED") and name in line]
        assert len(lines) == 1, err
        assert any(r in lines[0] for r in reason.split("|")), lines[0]
    assert "colorized 6 of 9 photos" in err and "3 failed" in err
    for name, shape in GOOD.items():
        stem = Path(name).with_suffix("")
        image = np.asarray(Image.open(out / f"{stem}_color.png"))
        assert image.shape == (*shape, 3), name
        source_L = read_photo(mixed_folder / name).lightness
        assert np.abs(rgb8_to_lab(image)[..., 0] - source_L).max() < 1.0, name
        semantic_map = Image.open(out / f"{stem}_map.png")
        assert semantic_map.mode == "P" and semantic_map.size == shape[::-1]
        assert np.asarray(semantic_map).max() < NUM_CLASSES
    assert not list(out.glob("cut*")) and not list(out.rglob("*.tmp"))
    assert {p: p.read_bytes() for p in mixed_folder.rglob("*") if p.is_file()} == before  # inputs untouched


def test_outputs_beside_inputs_never_overwrite_one(tmp_path, shared_dir, models, capsys):
    folder = tmp_path / "here"
    folder.mkdir()
    shutil.copy(shared_dir / "photos" / REAL[0], folder / "a.png")
    shutil.copy(shared_dir / "photos" / REAL[1], folder / "a_color.png")  # an input named like a's output
    before = (folder / "a_color.png").read_bytes()
    status = main(["colorize", str(folder / "a.png"), str(folder / "a_color.png"),
                   "--model", str(models["sdc"]), "--segmenter", str(models["gridnet"]),
                   "--out", str(folder), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1
    assert "a_color.png: refusing to overwrite an input file" in err
    assert (folder / "a_color.png").read_bytes() == before
    assert (folder / "a_color_color.png").is_file()


def test_a_given_semantic_map_and_its_rules(tmp_path, shared_dir, models, capsys):
    photo = shared_dir / "photos" / REAL[0]
    common = ["--model", str(models["sdc"]), "--segmenter", str(models["gridnet"]), "--no-progress"]
    assert main(["colorize", str(photo), "--out", str(tmp_path / "predicted"), "--save-map", *common]) == 0
    predicted = np.asarray(Image.open(tmp_path / "predicted" / f"{Path(REAL[0]).stem}_map.png"))
    edited = predicted.copy()
    edited[100:200, 100:200] = (edited[100:200, 100:200] + 1) % NUM_CLASSES
    Image.fromarray(edited).save(tmp_path / "edited.png")
    assert main(["colorize", str(photo), "--out", str(tmp_path / "edited"), "--semantic-map",
                 str(tmp_path / "edited.png"), *common]) == 0
    name = f"{Path(REAL[0]).stem}_color.png"
    a = np.asarray(Image.open(tmp_path / "predicted" / name)).astype(int)
    b = np.asarray(Image.open(tmp_path / "edited" / name)).astype(int)
    diff = np.abs(a - b).sum(-1)
    assert diff[100:200, 100:200].mean() > 5 * diff[:, 250:].mean()
    capsys.readouterr()
    assert main(["colorize", str(photo), str(photo), "--out", str(tmp_path / "x"), "--semantic-map",
                 str(tmp_path / "edited.png"), *common]) == 2
    assert "--semantic-map applies to one photo" in capsys.readouterr().err
    Image.fromarray(np.full((352, 352), 40, np.uint8)).save(tmp_path / "wrong.png")
    assert main(["colorize", str(photo), "--out", str(tmp_path / "y"),
                 "--semantic-map", str(tmp_path / "wrong.png"), *common]) == 1
    assert "holds class 40" in capsys.readouterr().err


def test_samples_for_pixelcnn_only(tmp_path, shared_dir, models, capsys):
    photo = shared_dir / "photos" / REAL[1]
    out = tmp_path / "samples"
    assert main(["colorize", str(photo), "--model", str(models["psc"]), "--samples", "3", "--out", str(out),
                 "--no-progress"]) == 0
    stem = Path(REAL[1]).stem
    images = [np.asarray(Image.open(out / f"{stem}_color_s{i}.png")) for i in range(3)]
    assert all(image.shape == (352, 352, 3) for image in images)
    assert (images[0] != images[1]).mean() > 0.1 and (images[1] != images[2]).mean() > 0.1
    capsys.readouterr()
    assert main(["colorize", str(photo), "--model", str(models["sdc"]), "--samples", "2", "--out", str(out),
                 "--no-progress"]) == 2
    assert "deterministic" in capsys.readouterr().err


def test_setup_errors_exit_2(tmp_path, shared_dir, capsys):
    assert main(["colorize", str(tmp_path / "missing"), "--model", "x.pt", "--out", str(tmp_path)]) == 2
    assert "missing: no such file or directory" in capsys.readouterr().err
    assert main(["colorize", str(shared_dir / "photos" / REAL[0]), "--model", str(tmp_path / "none.pt"),
                 "--out", str(tmp_path)]) == 2
    assert "cannot load the model" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["colorize", str(empty), "--model", "x.pt", "--out", str(tmp_path)]) == 2
    assert "no photos found" in capsys.readouterr().err


@pytest.mark.slow
def test_console_script_exit_status(tmp_path, shared_dir, models):
    """The installed `semcolor` entry point, as a user runs it: a bad file among good ones -> status 1."""
    assert {"colorize", "edit"} <= set(COMMANDS)
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(shared_dir / "photos" / REAL[0], folder / "ok.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 nothing else")
    script = Path(sys.executable).with_name("semcolor")
    command = [str(script), "colorize", str(folder), "--model", str(models["sdc"]), "--segmenter",
               str(models["gridnet"]), "--out", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"{folder / 'broken.jpg'}:" in done.stderr
    assert (tmp_path / "out" / "ok_color.png").is_file()


def test_two_photos_with_one_output_name(tmp_path, shared_dir, models, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(shared_dir / "photos" / REAL[0], folder / "x.png")
    Image.open(shared_dir / "photos" / REAL[1]).convert("RGB").save(folder / "x.jpg")
    status = main(["colorize", str(folder), "--model", str(models["sdc"]), "--segmenter", str(models["gridnet"]),
                   "--out", str(tmp_path / "out"), "--no-progress"])
    assert status == 1
    assert f"x.png: its output {tmp_path / 'out' / 'x_color.png'} is also the output of" in capsys.readouterr().err
    # the first photo in sorted order (x.jpg) kept its result
    written = np.asarray(Image.open(tmp_path / "out" / "x_color.png"))
    source_L = read_photo(folder / "x.jpg").lightness
    assert np.abs(rgb8_to_lab(written)[..., 0] - source_L).max() < 1.0
