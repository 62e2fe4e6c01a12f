"""The `semcolor` command itself: --version, complete --help texts, the default model after `make demo`,
--fast, and the setup errors found before any photo is colorized (exit status 2, one line)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import semcolor
from semcolor.cli import COMMANDS, build_parser, main
from tests.inference_models import PSC_CONFIG, save_model, save_sdc_pair

PHOTO = "brian-61OqtzLUWko-unsplash.png"
SCRIPT = Path(sys.executable).with_name("semcolor")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    sdc, gridnet = save_sdc_pair(folder)
    return {"sdc": sdc, "gridnet": gridnet, "psc": save_model(folder / "psc.pt", "psc_embed", PSC_CONFIG, seed=4)}


@pytest.fixture
def demo_project(tmp_path, models, monkeypatch, shared_dir):
    """A folder as `make demo` leaves it, without a tracking store: models/sdc_paper.pt + gridnet_gray.pt."""
    (tmp_path / "models").mkdir()
    shutil.copy(models["sdc"], tmp_path / "models" / "sdc_paper.pt")
    shutil.copy(models["gridnet"], tmp_path / "models" / "gridnet_gray.pt")
    shutil.copy(shared_dir / "photos" / PHOTO, tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def test_version():
    done = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"semcolor {semcolor.__version__}"


def option_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    return formatter._expand_help(action) if action.help else ""


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_has_help_with_its_default(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        text = option_help(sub, action)
        assert text.strip(), f"{command} {action.dest}: no help text"
        default = action.default
        trivial = default is None or default is False or default == argparse.SUPPRESS or default == []
        if action.option_strings and not trivial and not action.required:
            shown = str(default)
            assert "default" in text and shown in text, f"{command} {action.option_strings}: {text!r}"


def test_the_demo_checkpoint_is_the_default_model(demo_project, capsys):
    assert main(["colorize", "photo.png", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "models/sdc_paper.pt" in err and "models/gridnet_gray.pt" in err
    image = np.asarray(Image.open(demo_project / "colorized" / "photo_color.png"))
    assert image.shape == (352, 352, 3)


def test_no_default_model_is_one_line(tmp_path, monkeypatch, shared_dir, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    photo = str(shared_dir / "photos" / PHOTO)
    for argv in (["colorize", photo], ["edit", photo, "--no-browser"]):
        assert main(argv) == 2
        line = one_line(capsys.readouterr().err)
        assert "--model" in line and "models/sdc_paper.pt" in line and "make demo" in line, line
    assert not (tmp_path / "mlflow.db").exists()  # looking for a champion created no tracking store


@pytest.mark.slow
def test_the_champion_is_the_default_model(tmp_path, migrated_mlflow_db, monkeypatch, shared_dir, capsys):
    from tests.mlflow_store import SDC_CONFIG, copy_store, log_training_run, tracking_store

    uri = copy_store(migrated_mlflow_db, tmp_path / "store")
    with tracking_store(uri, tmp_path):
        run = log_training_run(tmp_path, "sdc", "paper", "synthetic", "sdc", SDC_CONFIG)
        import mlflow

        mlflow.MlflowClient().set_registered_model_alias(run.registered_name, "champion", run.version)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        shutil.copy(shared_dir / "photos" / PHOTO, tmp_path / "photo.png")
        assert main(["colorize", "photo.png", "--out", "out", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"models:/{run.registered_name}@champion" in err and f"version {run.version}" in err, err
    assert (tmp_path / "out" / "photo_color.png").is_file()


def test_fast_is_the_pixelcnn_mean(tmp_path, models, shared_dir, capsys):
    photo = str(shared_dir / "photos" / PHOTO)
    common = ["--model", str(models["psc"]), "--no-progress"]
    assert main(["colorize", photo, "--out", str(tmp_path / "a"), "--fast", *common]) == 0
    assert main(["colorize", photo, "--out", str(tmp_path / "b"), "--fast", "--seed", "5", *common]) == 0
    assert main(["colorize", photo, "--out", str(tmp_path / "c"), *common]) == 0
    name = f"{Path(PHOTO).stem}_color.png"
    fast = np.asarray(Image.open(tmp_path / "a" / name))
    assert np.array_equal(fast, np.asarray(Image.open(tmp_path / "b" / name)))  # no sampling: seed-free
    assert not np.array_equal(fast, np.asarray(Image.open(tmp_path / "c" / name)))  # not a sample
    capsys.readouterr()
    assert main(["colorize", photo, "--out", str(tmp_path / "d"), "--fast", "--samples", "2", *common]) == 2
    assert "--fast" in one_line(capsys.readouterr().err)
    assert main(["colorize", photo, "--out", str(tmp_path / "d"), "--fast", "--model", str(models["sdc"]),
                 "--segmenter", str(models["gridnet"]), "--no-progress"]) == 2
    assert "--fast" in one_line(capsys.readouterr().err)


def test_the_input_folder_as_output_folder(tmp_path, models, shared_dir, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(shared_dir / "photos" / PHOTO, folder / "a.png")
    common = ["--model", str(models["sdc"]), "--segmenter", str(models["gridnet"]), "--no-progress",
              "--save-map"]
    assert main(["colorize", str(folder), "--out", str(folder), *common]) == 0
    assert "colorized 1 of 1" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_color.png", "a_map.png"]
    assert main(["colorize", str(folder), "--out", str(folder), *common]) == 0  # again: its own results skipped
    err = capsys.readouterr().err
    assert "colorized 1 of 1" in err and "2 earlier results" in err, err
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_color.png", "a_map.png"]
    # the output folder above the input folder: the photos are still found
    assert main(["colorize", str(folder), "--out", str(tmp_path), *common]) == 0
    assert (tmp_path / "a_color.png").is_file()


def test_an_unwritable_out_is_found_before_colorizing(tmp_path, models, shared_dir, capsys):
    photo = str(shared_dir / "photos" / PHOTO)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "sub", Path("/proc/semcolor-out")):
        status = main(["colorize", photo, "--model", str(models["sdc"]), "--segmenter", str(models["gridnet"]),
                       "--out", str(out), "--no-progress"])
        line = one_line(capsys.readouterr().err)
        assert status == 2 and str(out) in line and "--out" in line, line


def test_files_that_are_not_photos_are_named(tmp_path, models, shared_dir, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(shared_dir / "photos" / PHOTO, folder / "a.png")
    Image.open(folder / "a.png").convert("P").save(folder / "old.gif")
    (folder / "notes.txt").write_text("x")
    (folder / ".hidden").write_text("x")
    assert main(["colorize", str(folder), "--model", str(models["sdc"]), "--segmenter", str(models["gridnet"]),
                 "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 files that are not photos by their extension" in err and "old.gif" in err, err
    assert ".hidden" not in err
