"""PASCAL-Context, 59 classes + background (``pascal_context``), from the Stanford ``.mat`` release.

Images are VOC2010's; labels are ``trainval/<id>.mat`` with ``LabelMap`` (H, W), values 1..459 indexing the
459-class ``labels.txt``. We map them to 60 class indices in the VOC-first order of
``class_lists/pascal-context-59.txt`` (0 background, 1-20 the VOC classes, 21 bag ... 59 wood), the order
of the Semantic-driven Colorization release:

- a 459-class id whose name is one of the 59 maps to that class's index;
- every other id maps to 0 = background. This is the standard "60 classes incl. background" setting
  (FCN's PASCAL-Context layer, the Detail API's 59-category masks, the PNGs most toolkits train on):
  the 400 rarer classes are background, not ignored, so 255 never occurs in these labels. A ``LabelMap``
  value 0 (no label, which the release should not contain) is background too.

Three of the 59 names are spelled differently in the 459-class list (FCN's loader notes the same):
``diningtable`` = ``table``, ``bedcloth`` = ``bedclothes``, ``clothes`` = ``cloth``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from semcolor.data.sources.labels import (
    decode_image_and_label,
    missing_tree_error,
    read_id_list,
    read_mat_label_array,
)
from semcolor.data.sources.base import Archive, Item, Sample, Source
from semcolor.data.sources.class_lists import ClassNamesFromList, read_class_list

PASCAL_CONTEXT_FULL_NUM_CLASSES = 459
PASCAL_CONTEXT_BACKGROUND = 0

# 59-class list spelling -> 459-class labels.txt spelling, where they differ.
NAMES_59_TO_459: Mapping[str, str] = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}

VOC2010_TRAINVAL = Archive(
    url="http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar",
    filename="VOCtrainval_03-May-2010.tar",
    size=None,  # not verified here; recorded on first download
    md5="da459979d0c395079b5c75ee67908abb",
)
PASCAL_CONTEXT_TRAINVAL = Archive(
    url="https://cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz",
    filename="trainval.tar.gz",
    size=None,  # about 30.7 MB; no exact size or checksum published: recorded on first download
)


def _pascal_context_class_names() -> tuple[str, ...]:
    names = read_class_list("pascal-context-59.txt")
    if sorted(names) != list(range(60)) or names[0] != "background":
        raise ValueError("pascal-context-59.txt must list ids 0 (background) to 59 exactly once")
    return tuple(names[index] for index in range(60))


@functools.cache
def context459_to_59_lut() -> np.ndarray:
    """Lookup table uint8 of shape (460,): ``lut[label_map_value]`` = our class index (0..59).

    ``lut[0]`` = 0 and every 459-class id outside the 59 -> 0 (background); see the module docstring.
    ValueError if one of the 59 names is missing from the 459-class list (the packaged lists disagree)."""
    full_names = read_class_list("pascal-context-459.txt")
    if sorted(full_names) != list(range(1, PASCAL_CONTEXT_FULL_NUM_CLASSES + 1)):
        raise ValueError("pascal-context-459.txt must list ids 1..459 exactly once")
    full_ids_by_name = {name: full_id for full_id, name in full_names.items()}
    lut = np.full(PASCAL_CONTEXT_FULL_NUM_CLASSES + 1, PASCAL_CONTEXT_BACKGROUND, dtype=np.uint8)
    for index, name in enumerate(PascalContext.class_names):
        if index == PASCAL_CONTEXT_BACKGROUND:
            continue
        full_name = NAMES_59_TO_459.get(name, name)
        if full_name not in full_ids_by_name:
            raise ValueError(f"59-class name {name!r} ({full_name!r}) is not in pascal-context-459.txt")
        lut[full_ids_by_name[full_name]] = index
    lut.setflags(write=False)
    return lut


def context459_to_59(label_map: np.ndarray) -> np.ndarray:
    """459-class ``LabelMap`` (integers 0..459) -> uint8 class indices 0..59 (VOC-first order).

    ValueError listing the values above 459 or below 0."""
    label_map = np.asarray(label_map)
    if not np.issubdtype(label_map.dtype, np.integer):
        raise ValueError(f"LabelMap must hold integers, got dtype {label_map.dtype}")
    values = np.unique(label_map)
    bad = values[(values < 0) | (values > PASCAL_CONTEXT_FULL_NUM_CLASSES)]
    if bad.size:
        raise ValueError(f"LabelMap values {bad.tolist()} are outside 0..459")
    return context459_to_59_lut()[label_map.astype(np.int64)]


def read_pascal_context_label(path: str | Path) -> np.ndarray:
    """Read ``trainval/<id>.mat`` and return its ``LabelMap`` mapped to 0..59 (uint8, (H, W)).
    ValueError naming the file if it is unreadable, has no 2-D ``LabelMap``, or holds values above 459."""
    return read_mat_label_array(path, "LabelMap", context459_to_59, "a PASCAL-Context label file has one")

class PascalContext(Source):
    """PASCAL-Context 59 + background on VOC2010 images: 4998 train / 5105 val (10103 labelled images).

    Extracted tree (``root`` = ``data/extracted/pascal_context``; both archives unpack into it)::

        root/VOCdevkit/VOC2010/JPEGImages/<id>.jpg                 from VOCtrainval_03-May-2010.tar
        root/VOCdevkit/VOC2010/ImageSets/Main/{train,val}.txt      the split lists
        root/trainval/<id>.mat                                     from trainval.tar.gz: LabelMap 1..459
        root/labels.txt                                            the 459 names (checked if present)

    Splits: the Stanford release ships no split lists; the standard split (used by the Detail API and the
    segmentation toolkits) is VOC2010's ``ImageSets/Main/{train,val}.txt``, whose 4998 + 5105 = 10103 ids
    are exactly the images the release labels. Every listed id is an item: an id whose ``.mat`` (or JPEG)
    is missing is a SampleError in ``load``, counted by the converter, never silently left out.
    Keys are the VOC ids (``2008_000002``). Labels: module docstring."""

    name: ClassVar[str] = "pascal_context"
    archives: ClassVar[tuple[Archive, ...]] = (VOC2010_TRAINVAL, PASCAL_CONTEXT_TRAINVAL)
    splits: ClassVar[tuple[str, ...]] = ("train", "val")
    class_names = ClassNamesFromList(_pascal_context_class_names)

    devkit_dir: ClassVar[str] = "VOCdevkit/VOC2010"
    label_dir: ClassVar[str] = "trainval"

    def split_ids(self, split: str) -> list[str]:
        """Ids of ``split`` from ``ImageSets/Main/<split>.txt``, sorted; FileNotFoundError if absent."""
        self._check_split(split)
        path = self.root / self.devkit_dir / "ImageSets" / "Main" / f"{split}.txt"
        if not path.is_file():
            hint = f"dvc repro download@{self.name}"
            raise missing_tree_error(path, f"the VOC2010 split list {split!r}", hint)
        return sorted(read_id_list(path))

    def check_release_labels(self) -> None:
        """If the release's ``labels.txt`` is extracted, it must equal the packaged 459-class list (our
        mapping is by id); ValueError naming the first differing id otherwise."""
        path = self.root / "labels.txt"
        if not path.is_file():
            return
        packaged = read_class_list("pascal-context-459.txt")
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            index_text, _, name = line.partition(":")
            full_id = int(index_text) if index_text.strip().isdigit() else -1
            if packaged.get(full_id) != name.strip():
                raise ValueError(
                    f"{path}: line {line!r} differs from the packaged 459-class list "
                    f"({full_id}: {packaged.get(full_id)!r}); the LabelMap ids would be misread"
                )

    def list_items(self, split: str) -> list[Item]:
        """One item per listed id, sorted by key."""
        image_ids = self.split_ids(split)
        self.check_release_labels()
        image_dir = self.root / self.devkit_dir / "JPEGImages"
        label_dir = self.root / self.label_dir
        return [
            Item(
                key=image_id,
                split=split,
                paths=(str(image_dir / f"{image_id}.jpg"), str(label_dir / f"{image_id}.mat")),
                original_id=image_id,
            )
            for image_id in image_ids
        ]

    def load(self, item: Item) -> Sample:
        """Image uint8 (H, W, 3) RGB; label uint8 (H, W) in 0..59. SampleError for a missing or corrupt file,
        a LabelMap of another size than the image, or LabelMap values above 459."""
        image_path, label_path = (Path(path) for path in item.paths)
        image, label = decode_image_and_label(
            item.key, image_path, label_path, read_pascal_context_label, self.num_classes, self.ignore_index
        )
        height, width = image.shape[:2]
        metadata: dict[str, Any] = {
            "source": self.name,
            "split": item.split,
            "original_id": item.original_id,
            "original_size": [int(width), int(height)],  # [width, height] in pixels
        }
        return Sample(key=item.key, image=image, label=label, metadata=metadata)

    def describe(self) -> Mapping[str, Any]:
        return {
            **super().describe(),
            "label_convention": "VOC-first 59 classes + 0 background; the other 400 classes -> background",
            "split_lists": "VOCdevkit/VOC2010/ImageSets/Main/{train,val}.txt",
        }
