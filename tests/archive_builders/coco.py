"""Tiny COCO-stuff archives in the exact real layouts, deterministic for given arguments.

- ``build_coco_stuff10k_zip``: ``cocostuff-10k-v1.1.zip`` with ``images/*.jpg``, ``annotations/*.mat``
  (``S`` uint16 = labels.txt ids, 0 unlabeled; ``names``) and ``imageLists/{all,train,test}.txt``.
- ``build_coco_stuff164k_zips``: ``stuffthingmaps_trainval2017.zip`` (``{train,val}2017/*.png``, mode L,
  value = id - 1, 255 unlabeled), ``train2017.zip`` / ``val2017.zip`` (``{split}2017/*.jpg``),
  ``annotations_trainval2017.zip`` (``annotations/instances_{split}2017.json``: things as polygons, crowd
  things as uncompressed RLE) and ``stuff_annotations_trainval2017.zip``
  (``annotations/stuff_{split}2017.json``: stuff and the merged-things class 183 "other" as compressed RLE).
  The PNGs are the ground truth the JSON annotations encode (crowd regions unlabeled, as cocostuffapi's
  default rendering leaves them).

The label content is a function of (image id, size, seed) exposed here (``coco_stuff10k_fixture_ids``,
``coco_stuff164k_fixture_labels``) so tests can compare what a source reads with what was written. Both
always contain some known values: 10k maps have id 1 (person) in the top-left corner, id 182 (wood) in the
bottom-right corner and 0 (unlabeled) in the bottom rows; in 164k maps the first listed train image has
thing id 1 (person) and stuff id 182 (wood), and every image has two unlabeled bottom rows.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from PIL import Image
from pycocotools import mask as mask_utils

from tests.archive_builders import encode_jpeg, truncate

ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
UNUSED_THING_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
USED_THING_IDS = tuple(i for i in range(1, 92) if i not in UNUSED_THING_IDS)  # 80 classes
STUFF_IDS = tuple(range(92, 183))  # 91 classes
OTHER_ID = 183


# ---------------------------------------------------------------------------------------------------------
# Deterministic writers shared by the builders


def fixture_rng(seed: int, image_id: str | int) -> np.random.Generator:
    """The random generator for one fixture item: independent of the other items and of their order."""
    return np.random.default_rng([seed, zlib.crc32(str(image_id).encode())])


def fixture_image(image_id: str | int, size: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth random RGB image, uint8 (height, width, 3), deterministic for (id, size, seed)."""
    height, width = size
    rng = fixture_rng(seed + 1, image_id)
    coarse = rng.integers(0, 256, size=(max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR))


def corrupt_jpeg(image: np.ndarray) -> bytes:
    """A JPEG cut short: PIL opens its header but fails to decode the pixels."""
    return truncate(encode_jpeg(image), 1 / 3)


def encode_gray_png(label: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(label.astype(np.uint8), mode="L").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def encode_mat(variables: Mapping[str, Any]) -> bytes:
    """A compressed MATLAB v5 file written by scipy, with a fixed header text: scipy stamps the current
    time into it, which would make the archive bytes differ from run to run."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, dict(variables), do_compression=True)
    data = bytearray(buffer.getvalue())
    header = b"MATLAB 5.0 MAT-file Platform: posix, Created on: Thu Jan  1 00:00:00 1970"
    data[:116] = header.ljust(116, b"\x00")
    return bytes(data)


def write_zip(path: Path, members: Mapping[str, bytes]) -> Path:
    """Write ``members`` (name -> bytes) as a zip with directory entries, sorted, fixed dates and modes;
    the archive appears atomically (temp file + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names: set[str] = set(members)
    for name in members:
        parts = name.split("/")[:-1]
        names.update("/".join(parts[: i + 1]) + "/" for i in range(len(parts)))
    temporary = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(temporary, "w") as archive:
        for name in sorted(names):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            if name.endswith("/"):
                info.external_attr = (0o40755 << 16) | 0x10
                archive.writestr(info, b"")
            else:
                info.external_attr = 0o100644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, members[name])
    os.replace(temporary, path)
    return path


# ---------------------------------------------------------------------------------------------------------
# COCO-stuff 10k


def coco_stuff10k_fixture_ids(image_id: str, size: tuple[int, int], seed: int) -> np.ndarray:
    """The ``S`` map written for ``image_id``: uint16 (height, width) of labels.txt ids (0 unlabeled,
    1..182). Random rectangles over a stuff background, plus the known corners described in the module
    docstring. ``size`` = (height, width), at least (8, 8)."""
    height, width = size
    rng = fixture_rng(seed, image_id)
    ids = np.full((height, width), rng.choice(STUFF_IDS), dtype=np.uint16)
    for _ in range(4):
        top, left = int(rng.integers(0, height - 2)), int(rng.integers(0, width - 2))
        bottom, right = int(rng.integers(top + 1, height)), int(rng.integers(left + 1, width))
        ids[top:bottom, left:right] = rng.choice(USED_THING_IDS + STUFF_IDS)
    ids[:3, :3] = 1  # person
    ids[-4:, -3:] = 182  # wood
    ids[-2:, : width // 2] = 0  # unlabeled
    return ids


def build_coco_stuff10k_zip(
    dest_dir: str | Path,
    train_ids: Sequence[str] = (
        "COCO_train2014_000000000077",
        "COCO_train2014_000000000109",
        "COCO_train2014_000000000149",
    ),
    test_ids: Sequence[str] = ("COCO_train2014_000000000009", "COCO_train2014_000000000025"),
    size: tuple[int, int] = (24, 32),
    seed: int = 0,
    corrupt_image_ids: Iterable[str] = (),
    missized_label_ids: Iterable[str] = (),
) -> Path:
    """Write ``dest_dir/cocostuff-10k-v1.1.zip`` and return its path.

    ``size`` = (height, width) of every image. ``corrupt_image_ids``: their JPEG is truncated.
    ``missized_label_ids``: their ``S`` is one row taller than the image. The list files hold the ids
    without extension, one per line, in the order given (``all.txt`` = train then test)."""
    corrupt, missized = set(corrupt_image_ids), set(missized_label_ids)
    names = tuple(line.split(": ", 1)[1] for line in _cocostuff_label_lines()[1:])
    members: dict[str, bytes] = {}
    for image_id in list(train_ids) + list(test_ids):
        image = fixture_image(image_id, size, seed)
        members[f"images/{image_id}.jpg"] = corrupt_jpeg(image) if image_id in corrupt else encode_jpeg(image)
        label_size = (size[0] + 1, size[1]) if image_id in missized else size
        members[f"annotations/{image_id}.mat"] = encode_mat(
            {
                "S": coco_stuff10k_fixture_ids(image_id, label_size, seed),
                "names": np.array(names, dtype=object).reshape(-1, 1),  # a 182x1 cell array
            }
        )
    members["imageLists/train.txt"] = "".join(f"{i}\n" for i in train_ids).encode()
    members["imageLists/test.txt"] = "".join(f"{i}\n" for i in test_ids).encode()
    members["imageLists/all.txt"] = "".join(f"{i}\n" for i in list(train_ids) + list(test_ids)).encode()
    return write_zip(Path(dest_dir) / "cocostuff-10k-v1.1.zip", members)


def _cocostuff_label_lines() -> list[str]:
    from semcolor.data.sources.class_lists import read_class_list

    return [f"{i}: {name}" for i, name in read_class_list("cocostuff-labels.txt").items()]


# ---------------------------------------------------------------------------------------------------------
# COCO-stuff 164k


def _fixture_annotations(
    image_id: int, size: tuple[int, int], seed: int, first: bool
) -> list[dict[str, Any]]:
    """The annotations of one image in painting order (things, crowd, stuff, other), as
    {"kind", "category_id", "rect" (top, left, bottom, right) or "mask"}: rectangles for things, masks for
    stuff (stuff excludes thing pixels, as in the real release). ``first``: force person and wood."""
    height, width = size
    rng = fixture_rng(seed, image_id)
    half_h, half_w = height // 2, width // 2
    thing_a, thing_b, thing_crowd = (int(v) for v in rng.choice(USED_THING_IDS, size=3, replace=False))
    stuff_top, stuff_bottom = (int(v) for v in rng.choice(STUFF_IDS, size=2, replace=False))
    if first:
        thing_a = 1
        stuff_bottom = 182 if stuff_top != 182 else stuff_bottom
        if thing_b == 1 or thing_crowd == 1:
            thing_b, thing_crowd = 2, 3
    # thing A, then thing B overlapping its lower-right part (B wins there: later annotations overwrite)
    rect_a = (1, 1, half_h, half_w)
    rect_b = (half_h // 2 + 1, half_w // 2 + 1, half_h + 3, half_w + 4)
    rect_crowd = (half_h + 2, width - 6, height - 3, width - 1)
    things = np.zeros(size, dtype=bool)
    for top, left, bottom, right in (rect_a, rect_b, rect_crowd):
        things[top:bottom, left:right] = True
    labelled = np.zeros(size, dtype=bool)
    labelled[: height - 2] = True  # the two bottom rows carry no annotation: unlabeled
    top_half = np.zeros(size, dtype=bool)
    top_half[:half_h] = True
    return [
        {"kind": "polygon", "category_id": thing_a, "rect": rect_a, "split_in_two": True},
        {"kind": "polygon", "category_id": thing_b, "rect": rect_b, "split_in_two": False},
        {"kind": "crowd", "category_id": thing_crowd, "rect": rect_crowd},
        {"kind": "stuff", "category_id": stuff_top, "mask": top_half & labelled & ~things},
        {"kind": "stuff", "category_id": stuff_bottom, "mask": ~top_half & labelled & ~things},
        {"kind": "stuff", "category_id": OTHER_ID, "mask": things & labelled},
    ]


def coco_stuff164k_fixture_labels(
    image_id: int, size: tuple[int, int], seed: int, first: bool = False, include_crowd: bool = False
) -> np.ndarray:
    """The class-index map (uint8, id - 1, 255 unlabeled) the fixture's annotations of ``image_id`` encode,
    painted with numpy in annotation order; crowd regions stay 255 unless ``include_crowd``; the "other"
    class is not painted. ``first``: the image is the first train image (forced person and wood)."""
    label = np.full(size, 255, dtype=np.uint8)
    for annotation in _fixture_annotations(image_id, size, seed, first):
        if annotation["category_id"] == OTHER_ID or (annotation["kind"] == "crowd" and not include_crowd):
            continue
        if "rect" in annotation:
            top, left, bottom, right = annotation["rect"]
            label[top:bottom, left:right] = annotation["category_id"] - 1
        else:
            label[annotation["mask"]] = annotation["category_id"] - 1
    return label


def _rect_polygons(rect: tuple[int, int, int, int], split_in_two: bool) -> list[list[float]]:
    """COCO polygons covering exactly the pixels rows top:bottom, cols left:right (pycocotools rasterizes
    a polygon with corners at pixel coordinates to exactly those pixels), optionally as two halves."""
    top, left, bottom, right = rect
    if split_in_two:
        middle = (left + right) // 2
        boxes = [(top, left, bottom, middle), (top, middle, bottom, right)]
    else:
        boxes = [rect]
    return [[float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)] for y0, x0, y1, x1 in boxes]


def _compressed_rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's crowd encoding: run lengths over the column-major flattened mask, starting with zeros."""
    flat = mask.astype(np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def _annotation_json(
    annotation: dict[str, Any], size: tuple[int, int], image_id: int, annotation_id: int
) -> dict[str, Any]:
    if "rect" in annotation:
        top, left, bottom, right = annotation["rect"]
        mask = np.zeros(size, dtype=bool)
        mask[top:bottom, left:right] = True
    else:
        mask = annotation["mask"]
    if annotation["kind"] == "polygon":
        segmentation: Any = _rect_polygons(annotation["rect"], annotation["split_in_two"])
    elif annotation["kind"] == "crowd":
        segmentation = _uncompressed_rle(mask)
    else:
        segmentation = _compressed_rle(mask)
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "segmentation": segmentation,
        "area": float(mask_utils.area(encoded)),
        "iscrowd": 1 if annotation["kind"] == "crowd" else 0,
        "image_id": image_id,
        "bbox": [float(v) for v in mask_utils.toBbox(encoded)],
        "category_id": annotation["category_id"],
        "id": annotation_id,
    }


def _supercategory(category_id: int) -> str:
    if category_id == OTHER_ID:
        return "other"
    return "thing" if category_id <= 91 else "stuff"


def _coco_json(
    images: list[dict[str, Any]], annotations: list[dict[str, Any]], category_ids: Sequence[int]
) -> bytes:
    names = {int(line.split(": ")[0]): line.split(": ", 1)[1] for line in _cocostuff_label_lines()}
    names[OTHER_ID] = "other"
    categories = [
        {"supercategory": _supercategory(i), "id": i, "name": names[i]}
        for i in category_ids
    ]
    document = {
        "info": {"description": "semcolor test fixture", "version": "1.0", "year": 2017},
        "licenses": [
            {"url": "http://creativecommons.org/licenses/by/2.0/", "id": 4, "name": "Attribution License"}
        ],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    return json.dumps(document, sort_keys=True).encode()


def build_coco_stuff164k_zips(
    dest_dir: str | Path,
    train_ids: Sequence[int] = (9, 25, 30),
    val_ids: Sequence[int] = (139, 285),
    size: tuple[int, int] = (24, 32),
    seed: int = 0,
    corrupt_image_ids: Iterable[int] = (),
    missized_label_ids: Iterable[int] = (),
) -> dict[str, Path]:
    """Write the five COCO-stuff 164k archives into ``dest_dir``; returns {archive file name: path}.

    ``train_ids``/``val_ids``: COCO image ids (file names are their 12-digit zero-padded form).
    ``size`` = (height, width) of every image, at least (16, 16). ``corrupt_image_ids``: truncated JPEG.
    ``missized_label_ids``: their PNG is one row taller than the image (the JSON stays consistent)."""
    height, width = size
    if height < 16 or width < 16:
        raise ValueError(f"size must be at least (16, 16), got {size}")
    corrupt, missized = set(corrupt_image_ids), set(missized_label_ids)
    first_train = train_ids[0] if train_ids else None
    labels: dict[str, bytes] = {}
    image_zips: dict[str, dict[str, bytes]] = {"train": {}, "val": {}}
    instances: dict[str, bytes] = {}
    stuff: dict[str, bytes] = {}
    for split, ids in (("train", train_ids), ("val", val_ids)):
        images, thing_annotations, stuff_annotations = [], [], []
        for image_id in ids:
            file_stem = f"{image_id:012d}"
            image = fixture_image(image_id, size, seed)
            jpeg = corrupt_jpeg(image) if image_id in corrupt else encode_jpeg(image)
            image_zips[split][f"{split}2017/{file_stem}.jpg"] = jpeg
            label = coco_stuff164k_fixture_labels(image_id, size, seed, first=image_id == first_train)
            if image_id in missized:
                label = np.concatenate([label, label[-1:]], axis=0)
            labels[f"{split}2017/{file_stem}.png"] = encode_gray_png(label)
            images.append(
                {
                    "license": 4,
                    "file_name": f"{file_stem}.jpg",
                    "coco_url": "",
                    "height": height,
                    "width": width,
                    "date_captured": "2013-11-14 17:02:52",
                    "flickr_url": "",
                    "id": int(image_id),
                }
            )
            for annotation in _fixture_annotations(image_id, size, seed, first=image_id == first_train):
                target = thing_annotations if annotation["category_id"] <= 91 else stuff_annotations
                annotation_id = int(image_id) * 100 + len(thing_annotations) + len(stuff_annotations)
                target.append(_annotation_json(annotation, size, int(image_id), annotation_id))
        instances[f"annotations/instances_{split}2017.json"] = _coco_json(
            images, thing_annotations, USED_THING_IDS
        )
        stuff[f"annotations/stuff_{split}2017.json"] = _coco_json(
            images, stuff_annotations, STUFF_IDS + (OTHER_ID,)
        )
    dest = Path(dest_dir)
    return {
        "stuffthingmaps_trainval2017.zip": write_zip(dest / "stuffthingmaps_trainval2017.zip", labels),
        "train2017.zip": write_zip(dest / "train2017.zip", image_zips["train"]),
        "val2017.zip": write_zip(dest / "val2017.zip", image_zips["val"]),
        "annotations_trainval2017.zip": write_zip(dest / "annotations_trainval2017.zip", instances),
        "stuff_annotations_trainval2017.zip": write_zip(dest / "stuff_annotations_trainval2017.zip", stuff),
    }
