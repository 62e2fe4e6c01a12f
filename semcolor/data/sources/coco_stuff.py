"""COCO-stuff, 10k (``coco_stuff10k``) and 164k (``coco_stuff164k``): 182 classes (80 things used of 91 thing
ids, 91 stuff) + unlabeled.

One class index convention for ALL COCO-stuff data written by semcolor (the convention of the published
164k PNG label maps):

    class index = COCO-stuff ``labels.txt`` id - 1     (0 person, 1 bicycle, ..., 181 wood)
    255         = unlabeled (``labels.txt`` id 0)      (IGNORE_INDEX)

so ``class_names`` has 182 entries, ``class_names[i]`` being ``labels.txt`` id ``i + 1``. The three label
formats are converted into it explicitly:

- 10k ``.mat`` files store ``S`` = the ``labels.txt`` id (0 unlabeled): ``coco_stuff_ids_to_indices``
  maps 0 -> 255 and k -> k - 1;
- 164k PNGs already store id - 1 with 255 unlabeled: read as they are, values checked;
- COCO-format JSON annotations (``category_id`` = ``labels.txt`` id) are rendered by
  ``render_coco_stuff_label``: start from 255, paint each annotation's mask with ``category_id - 1``.

Eleven thing ids (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91) never occur in the data; their indices stay in
the class list so that index = id - 1 holds everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pycocotools import mask as mask_utils

from semcolor.data.sources.labels import (
    check_key,
    decode_image_and_label,
    missing_tree_error,
    read_id_list,
    read_mat_label_array,
    read_palette_indices,
    read_rgb_image,
)
from semcolor.data.sources.base import IGNORE_INDEX, Archive, Item, Sample, SampleError, Source
from semcolor.data.sources.class_lists import ClassNamesFromList, read_class_list

COCO_STUFF_NUM_CLASSES = 182  # labels.txt ids 1..182 -> class indices 0..181
COCO_STUFF_OTHER_ID = 183  # "other" in stuff_*2017.json: all thing pixels merged (the 2017 stuff challenge)

COCO_STUFF10K_ZIP = Archive(
    url="http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/cocostuff-10k-v1.1.zip",
    filename="cocostuff-10k-v1.1.zip",
    size=None,  # about 2.0 GB; no exact size or checksum is published: recorded on first download
)
COCO_STUFF164K_LABELS_ZIP = Archive(
    url="http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/stuffthingmaps_trainval2017.zip",
    filename="stuffthingmaps_trainval2017.zip",
    size=None,  # about 659 MB; no exact size or checksum is published: recorded on first download
)
# sha256 sums of the COCO 2017 zips as published in tensorflow-datasets' url_checksums/coco2017.txt (the same
# values are in torchvision's prototype coco.py); the download flow verifies every download against them.
COCO2017_TRAIN_IMAGES_ZIP = Archive(
    url="http://images.cocodataset.org/zips/train2017.zip", filename="train2017.zip", size=19_336_861_798,
    sha256="69a8bb58ea5f8f99d24875f21416de2e9ded3178e903f1f7603e283b9e06d929",
)
COCO2017_VAL_IMAGES_ZIP = Archive(
    url="http://images.cocodataset.org/zips/val2017.zip", filename="val2017.zip", size=815_585_330,
    sha256="4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05",
)
# Needed only for label_source="json".
COCO2017_INSTANCES_ZIP = Archive(
    url="http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
    filename="annotations_trainval2017.zip", size=252_907_541,
    sha256="113a836d90195ee1f884e704da6304dfaaecff1f023f49b6ca93c4aaae470268",
)
# no published checksum: recorded on first download (data/checksums/coco_stuff164k.json) and verified after
COCO2017_STUFF_ANNOTATIONS_ZIP = Archive(
    url="http://images.cocodataset.org/annotations/stuff_annotations_trainval2017.zip",
    filename="stuff_annotations_trainval2017.zip",
)


def _coco_stuff_class_names() -> tuple[str, ...]:
    ids_to_names = read_class_list("cocostuff-labels.txt")
    expected = list(range(COCO_STUFF_NUM_CLASSES + 1))
    if sorted(ids_to_names) != expected or ids_to_names[0] != "unlabeled":
        raise ValueError("cocostuff-labels.txt must list ids 0 (unlabeled) to 182 exactly once")
    return tuple(ids_to_names[label_id] for label_id in range(1, COCO_STUFF_NUM_CLASSES + 1))


# ---------------------------------------------------------------------------------------------------------
# Label conversions (pure functions)


def coco_stuff_ids_to_indices(ids: np.ndarray) -> np.ndarray:
    """``labels.txt`` ids (0 = unlabeled, 1..182) -> class indices uint8 (0..181, 255).

    This is the 10k ``.mat`` ``S`` -> PNG convention step: 0 -> 255, k -> k - 1. Any integer dtype; floats
    only if every value is whole (MATLAB may store labels as double). ValueError listing the offending
    values if any id is outside 0..182 (a wrong file, not something to clip)."""
    ids = np.asarray(ids)
    if np.issubdtype(ids.dtype, np.floating) and np.array_equal(ids, np.round(ids)):
        ids = ids.astype(np.int64)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"COCO-stuff ids must be whole numbers, got dtype {ids.dtype}")
    values = np.unique(ids)
    bad = values[(values < 0) | (values > COCO_STUFF_NUM_CLASSES)]
    if bad.size:
        raise ValueError(f"COCO-stuff ids {bad.tolist()} are outside 0 (unlabeled) .. 182")
    wide = ids.astype(np.int16)
    return np.where(wide == 0, IGNORE_INDEX, wide - 1).astype(np.uint8)


def coco_stuff_indices_to_ids(indices: np.ndarray) -> np.ndarray:
    """Class indices (uint8, 0..181 or 255 unlabeled) -> ``labels.txt`` ids uint16 (0 unlabeled, 1..182):
    the inverse of ``coco_stuff_ids_to_indices`` (PNG -> ``.mat`` convention). ValueError on other values."""
    indices = np.asarray(indices)
    values = np.unique(indices)
    bad = values[((values < 0) | (values >= COCO_STUFF_NUM_CLASSES)) & (values != IGNORE_INDEX)]
    if bad.size:
        raise ValueError(f"COCO-stuff class indices {bad.tolist()} are outside 0..181 and not 255")
    wide = indices.astype(np.int32)
    return np.where(wide == IGNORE_INDEX, 0, wide + 1).astype(np.uint16)


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode one COCO ``segmentation`` into a bool mask of shape (height, width).

    Accepts the three COCO encodings, as ``pycocotools.coco.COCO.annToMask`` does: a list of polygons
    ``[[x0, y0, x1, y1, ...], ...]`` (pixel coordinates), an uncompressed RLE ``{"size": [h, w], "counts":
    [run lengths]}`` (crowd annotations) and a compressed RLE (``counts`` a string). Polygons with fewer
    than 3 points are dropped (they have no area; pycocotools would read 4 numbers as a box).
    ValueError for anything else or an RLE whose size is not (height, width)."""
    if isinstance(segmentation, list):
        polygons = [polygon for polygon in segmentation if len(polygon) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if [int(value) for value in segmentation["size"]] != [height, width]:
            raise ValueError(f"RLE size {segmentation['size']} differs from the image size {[height, width]}")
        if isinstance(segmentation["counts"], list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
    else:
        raise ValueError(f"unknown COCO segmentation encoding: {type(segmentation).__name__}")
    return mask_utils.decode(rle).astype(bool)


def render_coco_stuff_label(
    annotations: Iterable[Mapping[str, Any]], height: int, width: int, include_crowd: bool = False
) -> np.ndarray:
    """Render COCO-format annotations of one image into a label map: uint8 (height, width), class index =
    ``category_id - 1`` (0..181), 255 where no annotation paints.

    Follows COCO-stuff's own ``cocoSegmentationToSegmentationMap`` (cocostuffapi), with our index
    convention: annotations are painted in the order given; where masks overlap, the LATER annotation
    overwrites (cocostuffapi raises instead when its overlap check is on). Crowd annotations
    (``iscrowd`` = 1) are skipped unless ``include_crowd``, as cocostuffapi does by default: their pixels
    stay 255. Category 183 ("other", the merged things of the stuff-only JSON) is skipped, because the
    things' own annotations (``instances_*.json``) carry their classes. ValueError for another category
    outside 1..182."""
    label = np.full((height, width), IGNORE_INDEX, dtype=np.uint8)
    for annotation in annotations:
        if annotation.get("iscrowd", 0) and not include_crowd:
            continue
        category_id = int(annotation["category_id"])
        if category_id == COCO_STUFF_OTHER_ID:
            continue
        if not 1 <= category_id <= COCO_STUFF_NUM_CLASSES:
            raise ValueError(
                f"annotation {annotation.get('id')}: category_id {category_id} is outside 1..182"
            )
        label[segmentation_to_mask(annotation["segmentation"], height, width)] = category_id - 1
    return label


def read_coco_stuff_mat_label(path: str | Path) -> np.ndarray:
    """Read a COCO-stuff 10k ``annotations/<id>.mat`` and return its ``S`` in our convention: uint8 (H, W),
    class index = id - 1, 255 unlabeled. ValueError naming the file if it is unreadable, has no 2-D ``S``,
    or holds ids outside 0..182."""
    return read_mat_label_array(path, "S", coco_stuff_ids_to_indices,
                                "a COCO-stuff 10k annotation has 'S' and 'names'")


def _image_metadata(source: str, item: Item, image: np.ndarray) -> dict[str, Any]:
    """Per-sample facts; ``original_size`` is [width, height] in pixels (as every source writes it)."""
    height, width = image.shape[:2]
    return {
        "source": source,
        "split": item.split,
        "original_id": item.original_id,
        "original_size": [int(width), int(height)],
    }


def _download_hint(source_name: str) -> str:
    """The command that produces a source's extracted tree (quoted in missing-tree errors)."""
    return f"dvc repro download@{source_name}"


_LABEL_CONVENTION = "class index = COCO-stuff labels.txt id - 1 (0 person ... 181 wood); 255 = unlabeled"


# ---------------------------------------------------------------------------------------------------------
# COCO-stuff 10k


class CocoStuff10k(Source):
    """COCO-stuff 10k v1.1: 9000 train / 1000 test images of COCO train2014, ``.mat`` label maps.

    Extracted tree (``root`` = ``data/extracted/coco_stuff10k``), as the zip unpacks::

        root/images/COCO_train2014_<12 digits>.jpg
        root/annotations/COCO_train2014_<12 digits>.mat     S (H, W): 0 unlabeled, 1..182 labels.txt ids
        root/imageLists/{all,train,test}.txt                 ids without extension

    Splits: ``train`` = ``imageLists/train.txt``; ``val`` = ``imageLists/test.txt``. The release has no
    validation list; its test list (with labels) is what papers, including Pixelated Semantic
    Colorization, evaluate on, so it is our ``val``. Keys are the ids (``COCO_train2014_000000000077``).
    Labels: see the module docstring (``S`` 0 -> 255, k -> k - 1)."""

    name: ClassVar[str] = "coco_stuff10k"
    archives: ClassVar[tuple[Archive, ...]] = (COCO_STUFF10K_ZIP,)
    splits: ClassVar[tuple[str, ...]] = ("train", "val")
    class_names = ClassNamesFromList(_coco_stuff_class_names)

    split_list_files: ClassVar[Mapping[str, str]] = {"train": "train.txt", "val": "test.txt"}

    def split_ids(self, split: str) -> list[str]:
        """Ids of ``split`` from ``imageLists/``, sorted; FileNotFoundError saying how to get the tree."""
        self._check_split(split)
        path = self.root / "imageLists" / self.split_list_files[split]
        if not path.is_file():
            raise missing_tree_error(path, f"the {self.name} split list {split!r}", _download_hint(self.name))
        return sorted(read_id_list(path))

    def list_items(self, split: str) -> list[Item]:
        """One item per listed id, sorted; missing files surface as SampleError in ``load``."""
        return [
            Item(
                key=image_id,
                split=split,
                paths=(
                    str(self.root / "images" / f"{image_id}.jpg"),
                    str(self.root / "annotations" / f"{image_id}.mat"),
                ),
                original_id=image_id,
            )
            for image_id in self.split_ids(split)
        ]

    def load(self, item: Item) -> Sample:
        """Image uint8 (H, W, 3) RGB; label uint8 (H, W), 0..181 or 255. SampleError for a missing or corrupt
        file, an ``S`` of another size than the image, or ids outside 0..182."""
        image_path, label_path = (Path(path) for path in item.paths)
        image, label = decode_image_and_label(
            item.key, image_path, label_path, read_coco_stuff_mat_label, self.num_classes, self.ignore_index
        )
        metadata = _image_metadata(self.name, item, image)
        return Sample(key=item.key, image=image, label=label, metadata=metadata)

    def describe(self) -> Mapping[str, Any]:
        return {
            **super().describe(),
            "label_convention": _LABEL_CONVENTION,
            "val_list": "imageLists/test.txt",
        }


# ---------------------------------------------------------------------------------------------------------
# COCO-stuff 164k


@dataclass
class _AnnotationIndex:
    """What ``label_source="json"`` needs from the JSON files of one split: per image file name its COCO
    image id and size, and per image id its annotations in file order (files in the order given)."""

    images: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # file_name -> (id, height, width)
    annotations: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


def _read_annotation_index(paths: Sequence[Path]) -> _AnnotationIndex:
    index = _AnnotationIndex()
    for path in paths:
        with open(path, encoding="utf-8") as stream:
            document = json.load(stream)
        for image in document.get("images", []):
            entry = (int(image["id"]), int(image["height"]), int(image["width"]))
            known = index.images.setdefault(image["file_name"], entry)
            if known != entry:
                raise ValueError(
                    f"{path}: image {image['file_name']} is {entry} (id, height, width) here "
                    f"but {known} in an earlier file"
                )
        for annotation in document.get("annotations", []):
            # keep only what rendering needs: the full train JSONs are large
            index.annotations.setdefault(int(annotation["image_id"]), []).append(
                {
                    "id": annotation.get("id"),
                    "category_id": annotation["category_id"],
                    "segmentation": annotation["segmentation"],
                    "iscrowd": annotation.get("iscrowd", 0),
                }
            )
    return index


class CocoStuff164k(Source):
    """COCO-stuff 164k: COCO 2017 images (118287 train / 5000 val) with stuff+thing label maps.

    Extracted tree (``root`` = ``data/extracted/coco_stuff164k``; every archive unpacks into it, so the COCO
    JPEGs and the label PNGs share a directory and differ by extension)::

        root/{train2017,val2017}/<12 digits>.jpg     from train2017.zip / val2017.zip
        root/{train2017,val2017}/<12 digits>.png     stuffthingmaps_trainval2017.zip: id - 1, 255 unlabeled
        root/annotations/instances_{train,val}2017.json, stuff_{train,val}2017.json   (label_source="json")

    ``label_source``: ``"png"`` (default) reads the published label maps; ``"json"`` renders them from the
    COCO-format JSON annotations (``annotation_files``, ``{split}`` filled in, read in order, later
    annotations overwriting earlier ones) with ``render_coco_stuff_label``; ``include_crowd`` as there.
    Both give the same convention (module docstring). In json mode each process reads the split's JSON
    files once, on its first ``list_items``/``load`` (the full train files take GBs of memory).

    Items are the JPEGs of the split, keyed by their 12-digit id; a missing label PNG, or an image missing
    from the JSON, is a SampleError in ``load``."""

    name: ClassVar[str] = "coco_stuff164k"
    archives: ClassVar[tuple[Archive, ...]] = (
        COCO_STUFF164K_LABELS_ZIP,
        COCO2017_TRAIN_IMAGES_ZIP,
        COCO2017_VAL_IMAGES_ZIP,
    )
    # Extra archives for label_source="json" (not downloaded by default).
    annotation_archives: ClassVar[tuple[Archive, ...]] = (
        COCO2017_INSTANCES_ZIP,
        COCO2017_STUFF_ANNOTATIONS_ZIP,
    )
    splits: ClassVar[tuple[str, ...]] = ("train", "val")
    class_names = ClassNamesFromList(_coco_stuff_class_names)
    label_sources: ClassVar[tuple[str, ...]] = ("png", "json")

    image_dir: ClassVar[str] = "{split}2017"
    label_dir: ClassVar[str] = "{split}2017"
    default_annotation_files: ClassVar[tuple[str, ...]] = (
        "annotations/instances_{split}2017.json",
        "annotations/stuff_{split}2017.json",
    )

    def __init__(
        self,
        root: str | Path,
        label_source: str = "png",
        include_crowd: bool = False,
        annotation_files: Sequence[str] | None = None,
    ):
        """``root``: the extracted tree. ``label_source``: "png" or "json". ``include_crowd``: paint crowd
        annotations in json mode. ``annotation_files``: JSON paths relative to ``root`` with ``{split}``
        (default: instances then stuff, as in ``default_annotation_files``)."""
        super().__init__(root)
        if label_source not in self.label_sources:
            raise ValueError(
                f"{self.name}: label_source must be one of {list(self.label_sources)}, got {label_source!r}"
            )
        self.label_source = label_source
        self.include_crowd = bool(include_crowd)
        if annotation_files is None:
            annotation_files = self.default_annotation_files
        self.annotation_files = tuple(annotation_files)
        if not self.annotation_files:
            raise ValueError(f"{self.name}: annotation_files must name at least one JSON file")
        self._indexes: dict[str, _AnnotationIndex] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Items fan out to worker processes with the source: never ship the (large) JSON index along.
        return {**self.__dict__, "_indexes": {}}

    def split_dir(self, template: str, split: str) -> Path:
        return self.root / template.format(split=split)

    def annotation_paths(self, split: str) -> tuple[Path, ...]:
        return tuple(self.root / template.format(split=split) for template in self.annotation_files)

    def annotation_index(self, split: str) -> _AnnotationIndex:
        """The parsed JSON annotations of ``split`` (read once per process); FileNotFoundError if absent."""
        if split not in self._indexes:
            paths = self.annotation_paths(split)
            for path in paths:
                if not path.is_file():
                    raise missing_tree_error(
                        path, f"the {self.name} JSON annotations ({split})", _download_hint(self.name)
                    )
            self._indexes[split] = _read_annotation_index(paths)
        return self._indexes[split]

    def list_items(self, split: str) -> list[Item]:
        """One item per JPEG in ``<split>2017/``, sorted by id; FileNotFoundError if there is none."""
        self._check_split(split)
        image_dir = self.split_dir(self.image_dir, split)
        jpegs = image_dir.glob("*.jpg") if image_dir.is_dir() else ()
        image_ids = sorted(check_key(path.stem, path) for path in jpegs)
        if not image_ids:
            what = f"the {self.name} {split} images (*.jpg)"
            raise missing_tree_error(image_dir, what, _download_hint(self.name))
        if self.label_source == "json":
            self.annotation_index(split)  # fail now, not per item, if the JSON is absent or broken
            label_paths = tuple(str(path) for path in self.annotation_paths(split))
        label_dir = self.split_dir(self.label_dir, split)
        return [
            Item(
                key=image_id,
                split=split,
                paths=(str(image_dir / f"{image_id}.jpg"),)
                + ((str(label_dir / f"{image_id}.png"),) if self.label_source == "png" else label_paths),
                original_id=image_id,
            )
            for image_id in image_ids
        ]

    def load(self, item: Item) -> Sample:
        """Image uint8 (H, W, 3) RGB; label uint8 (H, W), 0..181 or 255. SampleError for a missing or corrupt
        file, a label of another size than the image, out-of-range values, or (json) an image the JSON
        does not list or lists with another size."""
        image_path = Path(item.paths[0])
        if self.label_source == "png":
            label_path = Path(item.paths[1])
            image, label = decode_image_and_label(
                item.key, image_path, label_path, read_palette_indices, self.num_classes, self.ignore_index
            )
        else:
            image, label = self._load_json_labelled(item, image_path)
        metadata = _image_metadata(self.name, item, image)
        return Sample(key=item.key, image=image, label=label, metadata=metadata)

    def _load_json_labelled(self, item: Item, image_path: Path) -> tuple[np.ndarray, np.ndarray]:
        if not image_path.is_file():
            raise SampleError(item.key, f"missing file {image_path}")
        try:
            image = read_rgb_image(image_path)
        except (OSError, ValueError, SyntaxError) as error:
            raise SampleError(item.key, f"cannot decode image {image_path}: {error}") from error
        index = self.annotation_index(item.split)
        entry = index.images.get(image_path.name)
        if entry is None:
            raise SampleError(item.key, f"{image_path.name} is not listed in {', '.join(item.paths[1:])}")
        image_id, height, width = entry
        if (height, width) != image.shape[:2]:
            raise SampleError(
                item.key,
                f"the JSON gives {image_path.name} as {width}x{height} (WxH) but the image is "
                f"{image.shape[1]}x{image.shape[0]}",
            )
        try:
            annotations = index.annotations.get(image_id, [])
            label = render_coco_stuff_label(annotations, height, width, self.include_crowd)
        except (ValueError, KeyError, TypeError) as error:
            reason = f"cannot render the JSON annotations of image {image_id}: {error}"
            raise SampleError(item.key, reason) from error
        return image, label

    def describe(self) -> Mapping[str, Any]:
        facts: dict[str, Any] = {
            **super().describe(),
            "label_convention": _LABEL_CONVENTION,
            "label_source": self.label_source,
        }
        if self.label_source == "json":
            facts.update(
                annotation_files=list(self.annotation_files),
                include_crowd=self.include_crowd,
                overlap="later annotation wins",
            )
        return facts
