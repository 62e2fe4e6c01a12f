"""Reading a shard set back: its manifest, and the samples of one shard decoded to Lab8 codes and labels.

Reads format 2 (``<key>.lab.npy``) and format 1 (``<key>.lab.png``) shards alike; the format itself is
``semcolor.data.shard_format``. Apart from the conversion (``semcolor.data.shards``) because the loader,
evaluation and integrity checks read shards without converting anything.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from semcolor.data.shard_format import (
    FORMAT1_MEMBER_SUFFIXES,
    MANIFEST_NAME,
    MEMBER_SUFFIXES,
    decode_npy,
    decode_png,
)


@dataclass(frozen=True)
class ShardSample:
    """A sample read back from a shard.

    lab8: uint8 (S, S, 3) Lab8 codes, channel last (L, a, b; decode with ``semcolor.color.decode_lab8``),
    whatever the shard format stores.
    label: uint8 (S, S), class index or 255. metadata: the parsed ``<key>.json``."""

    key: str
    lab8: np.ndarray
    label: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a shard directory; FileNotFoundError saying the build is
    incomplete when it is missing."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the shards in {out_dir} are missing or their build did not finish"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def read_shard_samples(path: str | Path) -> Iterator[ShardSample]:
    """The samples of one shard, in stored order, with lab8 and label decoded (see ``ShardSample``).

    ValueError naming the shard for a sample with missing or unexpected members."""
    path = Path(path)
    with tarfile.open(path, mode="r:") as tar:
        key: str | None = None
        members: dict[str, bytes] = {}
        for member in tar:
            if not member.isfile():
                continue
            key_part, _, suffix = member.name.partition(".")
            if key is not None and key_part != key:
                yield _shard_sample(path, key, members)
                members = {}
            key = key_part
            extracted = tar.extractfile(member)
            assert extracted is not None  # a regular file always has contents
            members[suffix] = extracted.read()
        if key is not None:
            yield _shard_sample(path, key, members)


def _shard_sample(path: Path, key: str, members: Mapping[str, bytes]) -> ShardSample:
    suffixes = sorted(members)
    if suffixes not in (sorted(MEMBER_SUFFIXES), sorted(FORMAT1_MEMBER_SUFFIXES)):
        raise ValueError(
            f"{path}: sample {key!r} has members {suffixes}, expected {list(MEMBER_SUFFIXES)} "
            f"(or format 1's {list(FORMAT1_MEMBER_SUFFIXES)})"
        )
    try:
        lab8 = decode_lab_member(members)
    except ValueError as error:
        raise ValueError(f"{path}: sample {key!r}: {error}") from None
    return ShardSample(
        key=key,
        lab8=np.moveaxis(lab8, 0, -1).copy(order="C"),  # channel last, writable
        label=decode_png(members["seg.png"]),
        metadata=json.loads(members["json"]),
    )


def decode_lab_member(members: Mapping[str, bytes]) -> np.ndarray:
    """The Lab8 code planes, uint8 (3, S, S), of a sample's members: ``lab.npy`` (format 2, a read-only
    view of its bytes) or ``lab.png`` (format 1, channel-last pixels, moved first). ValueError for an
    array of another type or shape; KeyError when the sample has neither member."""
    if "lab.npy" in members:
        planes = decode_npy(members["lab.npy"])
        if planes.dtype != np.uint8 or planes.ndim != 3 or planes.shape[0] != 3:
            raise ValueError(f"lab.npy must be uint8 (3, S, S), got {planes.dtype} {planes.shape}")
        return planes
    if "lab.png" in members:
        with Image.open(io.BytesIO(members["lab.png"])) as image:
            pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
        return pixels.transpose(2, 0, 1)
    raise KeyError("lab.npy")
