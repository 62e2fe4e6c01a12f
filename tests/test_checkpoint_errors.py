"""Bad checkpoints: every kind is refused with one line naming the file and what to do, never a traceback,
never torch's advice to load with weights_only=False; a pickle that would run code runs nothing."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from semcolor.cli import main
from semcolor.training.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from tests.inference_models import GRIDNET_CONFIG, SDC_CONFIG, save_model, save_sdc_pair
from tests.mlflow_store import migrated_mlflow_db  # noqa: F401  (fixture)

PHOTO = "brian-61OqtzLUWko-unsplash.png"


class RunsCode:
    """Unpickling this would run a shell command (a malicious 'checkpoint')."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def bad_checkpoints(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase its error must contain)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = save_model(folder / "good.pt", "sdc", SDC_CONFIG, seed=1)
    files: dict[str, tuple[Path, str]] = {}
    (folder / "random.pt").write_bytes(random.Random(0).randbytes(4096))
    files["random"] = (folder / "random.pt", "not a PyTorch checkpoint")
    (folder / "empty.pt").write_bytes(b"")
    files["empty"] = (folder / "empty.pt", "not a PyTorch checkpoint")
    (folder / "truncated.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["truncated"] = (folder / "truncated.pt", "not a PyTorch checkpoint")
    torch.save([1, 2, 3], folder / "list.pt")
    files["list"] = (folder / "list.pt", "not a semcolor checkpoint")
    torch.save({"format_version": 1, "weights": {}}, folder / "keys.pt")
    files["keys"] = (folder / "keys.pt", "not a semcolor checkpoint")
    payload = torch.load(good, weights_only=True)
    torch.save({**payload, "model_config": {**SDC_CONFIG, "width": 0.25}}, folder / "mismatch.pt")
    files["mismatch"] = (folder / "mismatch.pt", "do not fit")
    torch.save({**payload, "model_config": {**SDC_CONFIG, "widht": 0.25}}, folder / "badconfig.pt")
    files["badconfig"] = (folder / "badconfig.pt", "widht")
    torch.save({**payload, "model_name": "no_such_model"}, folder / "unknown.pt")
    files["unknown"] = (folder / "unknown.pt", "no_such_model")
    torch.save({**payload, "format_version": 99}, folder / "version.pt")
    files["version"] = (folder / "version.pt", "format 99")
    torch.save(RunsCode(folder / "pwned"), folder / "malicious.pt")
    files["malicious"] = (folder / "malicious.pt", "could run code")
    return files


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return bad_checkpoints(tmp_path_factory.mktemp("bad"))


def assert_one_clean_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    for forbidden in ("Traceback", "weights_only", "Re-running", "torch.load"):
        assert forbidden not in text, text
    return lines[0]


@pytest.mark.parametrize("name", ["random", "empty", "truncated", "list", "keys", "mismatch", "badconfig",
                                  "unknown", "version", "malicious"])
def test_load_refuses_with_a_clear_reason(bad, name):
    path, phrase = bad[name]
    with pytest.raises(CheckpointError) as caught:
        model_from_checkpoint(path)  # loads, then rebuilds the model: every check on the way
    message = assert_one_clean_line(str(caught.value))
    assert str(path) in message and phrase in message, message
    assert not (path.parent / "pwned").exists()


def test_colorize_and_edit_exit_2_with_one_line(bad, tmp_path, shared_dir, capsys):
    photo = str(shared_dir / "photos" / PHOTO)
    for name, (path, phrase) in bad.items():
        status = main(["colorize", photo, "--model", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
        line = assert_one_clean_line(capsys.readouterr().err)
        assert status == 2 and str(path) in line and phrase in line, (name, line)
    path, phrase = bad["malicious"]
    status = main(["edit", photo, "--model", str(path), "--no-browser", "--out", str(tmp_path / "edits")])
    line = assert_one_clean_line(capsys.readouterr().err)
    assert status == 2 and phrase in line
    assert not (path.parent / "pwned").exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_wrong_segmenter_is_named(tmp_path, shared_dir, capsys, bad):
    sdc, gridnet = save_sdc_pair(tmp_path)
    other = save_model(tmp_path / "gridnet7.pt", "gridnet", {**GRIDNET_CONFIG, "num_classes": 7}, seed=3)
    photo = str(shared_dir / "photos" / PHOTO)
    for segmenter, phrase in [(bad["truncated"][0], "not a PyTorch checkpoint"), (sdc, "must be gridnet"),
                              (other, "predicts 7 classes")]:
        status = main(["colorize", photo, "--model", str(sdc), "--segmenter", str(segmenter),
                       "--out", str(tmp_path / "out"), "--no-progress"])
        line = assert_one_clean_line(capsys.readouterr().err)
        assert status == 2 and phrase in line, line


@pytest.mark.slow
def test_the_console_script_prints_no_traceback(bad, tmp_path, shared_dir):
    path, _ = bad["malicious"]
    script = Path(sys.executable).with_name("semcolor")
    done = subprocess.run([str(script), "colorize", str(shared_dir / "photos" / PHOTO), "--model", str(path),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    line = assert_one_clean_line(done.stderr)
    assert "refused" in line and str(path) in line
    assert not (path.parent / "pwned").exists()


@pytest.mark.slow
def test_model_references_that_lead_nowhere(tmp_path, shared_dir, migrated_mlflow_db, monkeypatch, capsys):
    """A mistyped registered name, a missing run, a dead tracking server: one line each, exit 2."""
    from tests.mlflow_store import copy_store

    photo = str(shared_dir / "photos" / PHOTO)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", copy_store(migrated_mlflow_db, tmp_path / "store"))
    for reference, phrase in [("models:/semcolor-sdc-papre@champion", "no registered model 'semcolor-sdc-papre'"),
                              ("runs:/0123456789abcdef0123456789abcdef/model", "0123456789abcdef")]:
        status = main(["colorize", photo, "--model", reference, "--out", str(tmp_path / "o"), "--no-progress"])
        line = assert_one_clean_line(capsys.readouterr().err)
        assert status == 2 and reference in line and phrase in line, line
    dead = socket.create_server(("127.0.0.1", 0))
    dead_uri = f"http://127.0.0.1:{dead.getsockname()[1]}"
    dead.close()  # nothing listens there now: MLflow alone would retry for minutes
    script = Path(sys.executable).with_name("semcolor")
    done = subprocess.run([str(script), "colorize", photo, "--model", "models:/semcolor-sdc-paper@champion",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": dead_uri})
    line = assert_one_clean_line(done.stderr)
    assert done.returncode == 2 and f"the MLflow tracking server {dead_uri} is not reachable" in line, line


def test_a_model_uri_without_a_store_creates_none(tmp_path, shared_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    status = main(["colorize", str(shared_dir / "photos" / PHOTO), "--model", "models:/semcolor-sdc-paper@champion",
                   "--out", "out", "--no-progress"])
    line = assert_one_clean_line(capsys.readouterr().err)
    assert status == 2 and "no MLflow store at sqlite:///" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no mlflow.db, no mlruns/, no out/
