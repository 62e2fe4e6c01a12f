"""PASCAL VOC2012 semantic segmentation (``voc2012``): 1464 train / 1449 val images, 21 classes + void.

Extracted tree (``root`` = ``data/extracted/voc2012``), as the official tar unpacks::

    root/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    root/VOCdevkit/VOC2012/SegmentationClass/<id>.png      palette PNG, pixel value = class index, 255 void
    root/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt

Subclasses that write a dataset in this same layout (the synthetic world) override ``name``, ``archives``,
``class_names`` and, if needed, the directory attributes; listing and decoding are inherited.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from semcolor.sources.labels import (
    ListedPairSource,
    decode_image_and_label,
    decode_image_and_label_resized,
    read_palette_indices,
    sample_metadata,
)
from semcolor.sources.base import Archive, Item, Sample

VOC_CLASS_NAMES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

VOC2012_TRAINVAL = Archive(
    url="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
    filename="VOCtrainval_11-May-2012.tar",
    size=1_999_639_040,
    sha256="e14f763270cf193d0b5f74b169f44157a4b0c6efa708f4dd0ff78ee691763bcb",
    md5="6cd6e144f989b92b3379bac3b3de84fd",
)


class Voc2012(ListedPairSource):
    """VOC2012 segmentation: RGB JPEGs with palette-PNG class maps (0 background, 1-20 classes, 255 void).

    ``list_items(split)``/``split_ids(split)`` (inherited) read ``ImageSets/Segmentation/<split>.txt``.

    Keys are the VOC ids (``2007_000032``). Metadata per sample: ``source``, ``split``, ``original_id``,
    ``original_size`` ([width, height] in pixels)."""

    name: ClassVar[str] = "voc2012"
    archives: ClassVar[tuple[Archive, ...]] = (VOC2012_TRAINVAL,)
    splits: ClassVar[tuple[str, ...]] = ("train", "val")
    class_names: ClassVar[tuple[str, ...]] = VOC_CLASS_NAMES

    # Where things live, relative to ``root``; class attributes so a same-layout subclass can move them.
    devkit_dir: ClassVar[str] = "VOCdevkit/VOC2012"
    image_dir: ClassVar[str] = "JPEGImages"
    label_dir: ClassVar[str] = "SegmentationClass"
    split_dir: ClassVar[str] = "ImageSets/Segmentation"
    image_suffix: ClassVar[str] = ".jpg"
    label_suffix: ClassVar[str] = ".png"

    @property
    def devkit_root(self) -> Path:
        """``root/VOCdevkit/VOC2012``: the directory holding JPEGImages, SegmentationClass, ImageSets."""
        return self.root / self.devkit_dir

    def split_file(self, split: str) -> Path:
        """``ImageSets/Segmentation/<split>.txt``: one id per line."""
        return self.devkit_root / self.split_dir / f"{split}.txt"

    def image_path(self, image_id: str) -> Path:
        return self.devkit_root / self.image_dir / f"{image_id}{self.image_suffix}"

    def label_path(self, image_id: str) -> Path:
        return self.devkit_root / self.label_dir / f"{image_id}{self.label_suffix}"

    def load(self, item: Item) -> Sample:
        """Decode ``item``: image uint8 (H, W, 3) RGB, label uint8 (H, W) with values in
        [0, num_classes) or 255. SampleError for a missing/corrupt file, a label of another size than its
        image, or out-of-range label values."""
        image_path, label_path = (Path(path) for path in item.paths)
        image, label = decode_image_and_label(
            item.key, image_path, label_path, read_palette_indices, self.num_classes, self.ignore_index
        )
        metadata = sample_metadata(self.name, item, image)
        return Sample(key=item.key, image=image, label=label, metadata=metadata)

    def load_resized(self, item: Item, size: int) -> Sample:
        """``load`` for the shard converter: image uint8 (size, size, 3) and label uint8 (size, size),
        resized as ``semcolor.shards`` stores them (JPEG draft decoding when the photo is at least twice
        ``size``, see ``semcolor.sources.labels``), with the same checks and SampleErrors as ``load``.
        ``metadata['original_size']`` is the image file's own [width, height]."""
        image_path, label_path = (Path(path) for path in item.paths)
        image, label, (height, width) = decode_image_and_label_resized(
            item.key, image_path, label_path, read_palette_indices, self.num_classes, self.ignore_index, size
        )
        metadata = {**sample_metadata(self.name, item, image), "original_size": [int(width), int(height)]}
        return Sample(key=item.key, image=image, label=label, metadata=metadata)
