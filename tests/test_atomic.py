"""Atomic writes: the umask decides the mode (never 0600), a failed write keeps the old file, no temp files."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from semcolor.atomic import atomic_output, copy_file_atomic, write_json_atomic, write_text_atomic


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda value: os.umask(value)
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def writers(tmp_path: Path):
    """Every atomic writer of the project, each writing one file into tmp_path; name -> (path, write)."""
    from semcolor.evaluation.tiles import write_png
    from semcolor.app.photo_io import write_image_atomic
    from semcolor.training.checkpoint import save_checkpoint

    image = np.zeros((4, 4, 3), np.uint8)
    return {
        "text": lambda: write_text_atomic(tmp_path / "a.txt", "x"),
        "json": lambda: write_json_atomic(tmp_path / "a.json", {"a": 1}),
        "image": lambda: write_image_atomic(tmp_path / "a_color.png", image),
        "grid": lambda: write_png(image, tmp_path / "grid.png"),
        "checkpoint": lambda: save_checkpoint(tmp_path / "m.pt", {"model": {}}),
        "copy": lambda: copy_file_atomic(__file__, tmp_path / "copy.py"),
    }


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_every_writer_respects_the_umask(tmp_path, umask, mask, expected):
    for name, write in writers(tmp_path).items():
        umask(mask)
        written = Path(write())
        assert mode(written) == expected, (name, oct(mode(written)))
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "report.md"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_output(target, text=True) as stream:
            stream.write("half of the new")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_a_failed_copy_keeps_the_old_model(tmp_path, monkeypatch):
    source = tmp_path / "partial.pt"
    source.write_bytes(b"new" * 1000)
    target = tmp_path / "models" / "sdc_paper.pt"
    target.parent.mkdir()
    target.write_bytes(b"old model")

    def copy_half(reader, writer, length=0):
        writer.write(reader.read(100))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", copy_half)
    with pytest.raises(OSError, match="No space"):
        copy_file_atomic(source, target)
    assert target.read_bytes() == b"old model"
    assert [p.name for p in target.parent.iterdir()] == ["sdc_paper.pt"]
    monkeypatch.undo()
    copy_file_atomic(source, target)
    assert target.read_bytes() == source.read_bytes()
