"""The augmented VOC2012 set (``voc2012_aug``): 10582 train images (VOC + SBD labels), VOC val (1449) as val.

train = sorted(set(VOC train + SBD train + SBD val) - VOC val), val = VOC val: the "trainaug" setup used by
DeepLab and by Pixelated Semantic Colorization. An id that has a VOC ``SegmentationClass`` PNG (every id of
the VOC train/val lists) takes its image and label from VOC, so VOC's finer labels with their 255 void band
win over SBD's; every other id takes image ``img/<id>.jpg`` and label ``cls/<id>.mat`` from SBD. Image and
label always come from the same release, so they were annotated on the same file.

Extracted tree: both archives unpack side by side into one root (``data/extracted/voc2012_aug``); their top
directories differ, so nothing collides::

    root/VOCdevkit/VOC2012/...          (VOCtrainval_11-May-2012.tar, see voc2012.py)
    root/benchmark_RELEASE/dataset/...  (benchmark.tgz, see sbd.py)

``voc_root``/``sbd_root`` point at trees extracted elsewhere instead (e.g. ``data/extracted/voc2012`` and
``data/extracted/sbd``) so the two 1.4-2 GB archives need not be downloaded twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from semcolor.sources.labels import (
    decode_image_and_label,
    missing_tree_error,
    read_palette_indices,
    sample_metadata,
)
from semcolor.sources.base import Archive, Item, Sample, Source
from semcolor.sources.sbd import SBD_BENCHMARK, Sbd, read_sbd_segmentation
from semcolor.sources.voc2012 import VOC2012_TRAINVAL, VOC_CLASS_NAMES, Voc2012

LABEL_ORIGIN_VOC = "voc"
LABEL_ORIGIN_SBD = "sbd"


def compose_train_ids(
    voc_train: Iterable[str], voc_val: Iterable[str], sbd_train: Iterable[str], sbd_val: Iterable[str]
) -> list[str]:
    """The augmented training ids: sorted(set(voc_train + sbd_train + sbd_val) - voc_val).

    Removing VOC val keeps the validation images out of training even though SBD's lists contain many of
    them. On the real lists this gives 10582 ids."""
    union = set(voc_train) | set(sbd_train) | set(sbd_val)
    return sorted(union - set(voc_val))


class Voc2012Aug(Source):
    """VOC2012 + SBD: labels 0 background, 1-20 VOC classes, 255 void (only in VOC-origin labels).

    Metadata per sample: ``source``, ``split``, ``original_id``, ``original_size`` ([width, height] in
    pixels) and ``label_origin`` ("voc" or "sbd": the release the image and label were read from)."""

    name: ClassVar[str] = "voc2012_aug"
    archives: ClassVar[tuple[Archive, ...]] = (VOC2012_TRAINVAL, SBD_BENCHMARK)
    splits: ClassVar[tuple[str, ...]] = ("train", "val")
    class_names: ClassVar[tuple[str, ...]] = VOC_CLASS_NAMES

    def __init__(
        self, root: str | Path, voc_root: str | Path | None = None, sbd_root: str | Path | None = None
    ):
        """``root``: the directory both archives were extracted into (``data/extracted/voc2012_aug``).
        ``voc_root``/``sbd_root``: the extraction roots of ``voc2012``/``sbd`` when reusing those instead."""
        super().__init__(root)
        self.voc = Voc2012(self.root if voc_root is None else voc_root)
        self.sbd = Sbd(self.root if sbd_root is None else sbd_root)
        # The command to quote when a tree is missing depends on which stage was meant to produce it.
        self._voc_hint = f"dvc repro download@{self.name if voc_root is None else self.voc.name}"
        self._sbd_hint = f"dvc repro download@{self.name if sbd_root is None else self.sbd.name}"

    def _voc_ids(self, split: str) -> list[str]:
        path = self.voc.split_file(split)
        if not path.is_file():
            what = f"the VOC2012 split list {split!r} (needed by {self.name})"
            raise missing_tree_error(path, what, self._voc_hint)
        return self.voc.split_ids(split)

    def _sbd_ids(self, split: str) -> list[str]:
        path = self.sbd.split_file(split)
        if not path.is_file():
            what = f"the SBD split list {split!r} (needed by {self.name})"
            raise missing_tree_error(path, what, self._sbd_hint)
        return self.sbd.split_ids(split)

    def split_ids(self, split: str) -> list[str]:
        """Sorted ids of ``split``: the composed 10582-id train set, or VOC val."""
        self._check_split(split)
        voc_val = self._voc_ids("val")
        if split == "val":
            return voc_val
        return compose_train_ids(
            self._voc_ids("train"), voc_val, self._sbd_ids("train"), self._sbd_ids("val")
        )

    def list_items(self, split: str) -> list[Item]:
        """Items sorted by key; ``paths`` = (image, label) from VOC for ids in VOC's segmentation lists,
        else from SBD. Reads only the four split lists."""
        ids = self.split_ids(split)
        voc_labelled = set(self._voc_ids("train")) | set(self._voc_ids("val"))
        items = []
        for image_id in ids:
            origin = self.voc if image_id in voc_labelled else self.sbd
            paths = (str(origin.image_path(image_id)), str(origin.label_path(image_id)))
            items.append(Item(key=image_id, split=split, paths=paths, original_id=image_id))
        return items

    def load(self, item: Item) -> Sample:
        """Decode ``item`` with the reader of its label's release (palette PNG or SBD ``.mat``).
        SampleError as in ``Voc2012.load``."""
        image_path, label_path = (Path(path) for path in item.paths)
        if label_path.suffix == ".mat":
            origin, read_label = LABEL_ORIGIN_SBD, read_sbd_segmentation
        else:
            origin, read_label = LABEL_ORIGIN_VOC, read_palette_indices
        image, label = decode_image_and_label(
            item.key, image_path, label_path, read_label, self.num_classes, self.ignore_index
        )
        metadata = {**sample_metadata(self.name, item, image), "label_origin": origin}
        return Sample(key=item.key, image=image, label=label, metadata=metadata)
