"""The shape every dataset source shares: archives as data, split lists, classes, label decoding.

A source is one small class (torchvision-style). It never downloads by itself: the download flow fetches
``archives`` into ``data/raw/<name>/`` and extracts them into ``data/extracted/<name>/``; the source then
reads that extracted tree. Listing is separated from loading so conversion can fan items out to processes:
``list_items`` is cheap and returns picklable ``Item``s, ``load`` decodes one into a ``Sample``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

IGNORE_INDEX = 255  # label value meaning "void / boundary / unlabeled": excluded from losses and metrics


@dataclass(frozen=True)
class Archive:
    """One downloadable file. ``sha256``/``md5`` None means no published checksum: the download flow
    records the sha256 of the first download and verifies against it afterwards."""

    url: str
    filename: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    extract: bool = True  # False for files used as they are (a JSON annotation file, say)


@dataclass(frozen=True)
class Item:
    """A reference to one sample in an extracted tree: picklable, cheap, no pixels yet."""

    key: str  # unique within the source, safe as a WebDataset key (no dots, no slashes)
    split: str
    paths: tuple[str, ...]  # the files load() reads, absolute
    original_id: str


@dataclass
class Sample:
    """One decoded sample.

    image: uint8 RGB, shape (H, W, 3), sRGB values in [0, 255].
    label: uint8, shape (H, W), class index in [0, num_classes) or IGNORE_INDEX (255).
    metadata: JSON-serialisable facts (source, split, original id, original size ...).
    """

    key: str
    image: np.ndarray
    label: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)


class SampleError(Exception):
    """One input cannot be turned into a sample (corrupt image, label of another size, missing file).

    The converter skips the item under its explicit skip policy and records ``reason`` in the manifest."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason

    def __reduce__(self):  # picklable with its two arguments, so it crosses process and Dask boundaries
        return (SampleError, (self.key, self.reason))


class Source:
    """Base class of every dataset source. Subclasses set the class attributes and implement
    ``list_items`` and ``load``."""

    name: ClassVar[str]
    archives: ClassVar[tuple[Archive, ...]] = ()
    splits: ClassVar[tuple[str, ...]] = ("train", "val")
    class_names: ClassVar[tuple[str, ...]] = ()
    ignore_index: ClassVar[int] = IGNORE_INDEX

    def __init__(self, root: str | Path):
        """``root``: the extraction directory of this source, ``data/extracted/<name>``."""
        self.root = Path(root)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def list_items(self, split: str) -> list[Item]:
        """All items of ``split`` in sorted key order. Raises FileNotFoundError naming the missing
        file and how to get it when the extracted tree is absent."""
        raise NotImplementedError

    def load(self, item: Item) -> Sample:
        """Decode one item; raises SampleError for bad data."""
        raise NotImplementedError

    def samples(self, split: str) -> Iterator[Sample]:
        """Convenience: every sample of a split, in order (raises on the first bad one)."""
        for item in self.list_items(split):
            yield self.load(item)

    def describe(self) -> Mapping[str, Any]:
        """Facts written into the shard manifest."""
        return {"source": self.name, "class_names": list(self.class_names), "ignore_index": self.ignore_index}

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"{self.name}: unknown split {split!r}; choose one of {list(self.splits)}")
