"""Tiny PASCAL-Context archives in the exact real layouts, deterministic for given arguments.

- ``VOCtrainval_03-May-2010.tar``: ``VOCdevkit/VOC2010/JPEGImages/<id>.jpg`` and
  ``VOCdevkit/VOC2010/ImageSets/Main/{train,val,trainval}.txt``.
- ``trainval.tar.gz`` (the Stanford release): ``trainval/<id>.mat`` (``LabelMap`` uint16, values 1..459,
  written by scipy), ``labels.txt`` (the 459 names) and ``59_labels.txt`` (the 59 names, ids 1..59).

``pascal_context_fixture_label_map`` gives the ``LabelMap`` written for an id. Every map starts with a top
band of known 459-class ids (``KNOWN_BAND``, one column block each) so tests can check the 459 -> 59 mapping
on known values; the rest is a frequent 59-class background with random rectangles (half frequent 59-class
ids, half any id in 1..459).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from semcolor.data.sources.class_lists import read_class_list
from tests.archive_builders import encode_jpeg, write_tar
from tests.archive_builders.coco import corrupt_jpeg, encode_mat, fixture_image, fixture_rng

# 459-class ids laid out left to right in the top rows of every LabelMap:
# aeroplane(2), table(397, the 59 list's "diningtable"), bedclothes(19, "bedcloth"), cloth(80, "clothes"),
# wood(458), accordion(1, not in the 59), wool(459, not in the 59), person(284).
KNOWN_BAND = (2, 397, 19, 80, 458, 1, 459, 284)
KNOWN_BAND_ROWS = 3
# Frequent classes of the 59 (building, cat, dog, floor, grass, ground, road, sky, tree, wall, water): half
# of the random regions use them, as real maps are dominated by the 59 classes; the rest draw from 1..459.
COMMON_59_IDS = (44, 65, 113, 158, 187, 189, 324, 360, 420, 440, 445)


def pascal_context_fixture_label_map(image_id: str, size: tuple[int, int], seed: int) -> np.ndarray:
    """The ``LabelMap`` written for ``image_id``: uint16 (height, width), values 1..459. ``size`` =
    (height, width), width at least ``2 * len(KNOWN_BAND)``."""
    height, width = size
    rng = fixture_rng(seed, image_id)

    def random_id() -> int:
        return int(rng.choice(COMMON_59_IDS)) if rng.random() < 0.5 else int(rng.integers(1, 460))

    label_map = np.full((height, width), rng.choice(COMMON_59_IDS), dtype=np.uint16)
    for _ in range(6):
        top, left = int(rng.integers(KNOWN_BAND_ROWS, height - 1)), int(rng.integers(0, width - 1))
        bottom, right = int(rng.integers(top + 1, height + 1)), int(rng.integers(left + 1, width + 1))
        label_map[top:bottom, left:right] = random_id()
    block = width // len(KNOWN_BAND)
    for position, full_id in enumerate(KNOWN_BAND):
        label_map[:KNOWN_BAND_ROWS, position * block : (position + 1) * block] = full_id
    return label_map


def build_pascal_context_archives(
    dest_dir: str | Path,
    train_ids: Sequence[str] = ("2008_000002", "2008_000003", "2008_000007"),
    val_ids: Sequence[str] = ("2008_000009", "2008_000016"),
    size: tuple[int, int] = (20, 32),
    seed: int = 0,
    unlabelled_ids: Iterable[str] = (),
    corrupt_image_ids: Iterable[str] = (),
    missized_label_ids: Iterable[str] = (),
) -> dict[str, Path]:
    """Write the VOC2010 tar and the Stanford ``trainval.tar.gz`` into ``dest_dir``; returns
    {archive file name: path}.

    ``size`` = (height, width). ``unlabelled_ids``: listed in the split lists with a JPEG but no ``.mat``.
    ``corrupt_image_ids``: truncated JPEG. ``missized_label_ids``: their ``LabelMap`` is one row taller."""
    unlabelled, corrupt, missized = set(unlabelled_ids), set(corrupt_image_ids), set(missized_label_ids)
    voc: dict[str, bytes] = {}
    context: dict[str, bytes] = {}
    main = "VOCdevkit/VOC2010/ImageSets/Main"
    for image_id in list(train_ids) + list(val_ids):
        image = fixture_image(image_id, size, seed)
        jpeg = corrupt_jpeg(image) if image_id in corrupt else encode_jpeg(image)
        voc[f"VOCdevkit/VOC2010/JPEGImages/{image_id}.jpg"] = jpeg
        if image_id not in unlabelled:
            label_size = (size[0] + 1, size[1]) if image_id in missized else size
            context[f"trainval/{image_id}.mat"] = encode_mat(
                {"LabelMap": pascal_context_fixture_label_map(image_id, label_size, seed)}
            )
    voc[f"{main}/train.txt"] = "".join(f"{i}\n" for i in train_ids).encode()
    voc[f"{main}/val.txt"] = "".join(f"{i}\n" for i in val_ids).encode()
    voc[f"{main}/trainval.txt"] = "".join(f"{i}\n" for i in sorted(list(train_ids) + list(val_ids))).encode()
    full_names = read_class_list("pascal-context-459.txt")
    context["labels.txt"] = "".join(f"{i}: {name}\n" for i, name in full_names.items()).encode()
    names_59 = read_class_list("pascal-context-59.txt")
    context["59_labels.txt"] = "".join(f"{i}: {name}\n" for i, name in names_59.items() if i > 0).encode()
    dest = Path(dest_dir)
    return {
        "VOCtrainval_03-May-2010.tar": write_tar(dest / "VOCtrainval_03-May-2010.tar", voc),
        "trainval.tar.gz": write_tar(dest / "trainval.tar.gz", context, gzip_compressed=True),
    }
