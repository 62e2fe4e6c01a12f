"""Builders of small fixture archives in the exact layouts of the real dataset releases.

Shared by the source tests (extract with plain ``tarfile``, read through the sources) and the download /
shard end-to-end tests (serve the archive over HTTP and run the real flows). Every builder returns the
archive's path and writes the same bytes for the same arguments (fixed tar metadata, fixed gzip header,
seeded pixels), so checksums can be computed once and reused.

This module holds the layout-independent pieces: deterministic tar/tgz writing, JPEG encoding and digests.
One module per release family holds the layouts (``voc``: VOC2012 tar and SBD tgz).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

# 2012-05-11 00:00 UTC, the VOC2012 release day: every member gets this mtime so the bytes never depend
# on when the fixture was built.
FIXED_MTIME = 1336694400


def _member_info(name: str, kind: bytes, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mtime = FIXED_MTIME
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tar(path: Path, files: Mapping[str, bytes], gzip_compressed: bool = False) -> Path:
    """Write ``files`` (member path -> bytes) as a tar (or .tgz) at ``path``; returns ``path``.

    Directory entries for every parent are written first, as real release tars have them, then files in
    sorted order. Deterministic: fixed mtime/owner/mode, GNU format, gzip header without name or time.
    The archive appears atomically (temp file + os.replace)."""
    directories: set[str] = set()
    for name in files:
        directories.update(str(parent) for parent in PurePosixPath(name).parents if str(parent) != ".")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for directory in sorted(directories):
            tar.addfile(_member_info(directory, tarfile.DIRTYPE))  # tarfile appends the "/"
        for name in sorted(files):
            data = files[name]
            tar.addfile(_member_info(name, tarfile.REGTYPE, len(data)), io.BytesIO(data))
    payload = buffer.getvalue()
    if gzip_compressed:
        compressed = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0) as gz:
            gz.write(payload)
        payload = compressed.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(payload)
    os.replace(temporary, path)
    return path


def encode_jpeg(image: np.ndarray, quality: int = 92) -> bytes:
    """Baseline JPEG bytes of a uint8 (H, W, 3) RGB array (deterministic for a given array)."""
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def truncate(data: bytes, fraction: float = 0.5) -> bytes:
    """The first ``fraction`` of ``data``: a realistic corrupt file (an interrupted copy)."""
    return data[: max(1, int(len(data) * fraction))]


def file_digests(path: Path) -> dict[str, object]:
    """``{"size": bytes, "sha256": hex, "md5": hex}`` of a file, to fill an ``Archive`` for a served
    fixture."""
    data = Path(path).read_bytes()
    return {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
    }
