"""Fixture archives in the exact layouts of VOC2012 (``VOCtrainval_11-May-2012.tar``) and SBD
(``benchmark.tgz``), with small seeded images and labels.

Pixels are functions of (id, size, seed, origin), exposed as ``fixture_label``/``fixture_image`` so a
test can compare what a source decodes with what was written: labels exactly (PNG and .mat are
lossless), images approximately (JPEG). VOC labels carry a 255 void band around each object, as the real
ones do; SBD labels have none. The same id gets different labels from the two releases, so a test can tell
which one a reader used.

Damage knobs (for the skip-policy tests): ``corrupt_image_ids`` (JPEG truncated to half),
``missized_label_ids`` (label one pixel narrower and shorter than its image), ``missing_image_ids`` /
``missing_label_ids`` (listed in the split lists but absent from the archive).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Collection, Iterable
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse

from semcolor.sources.labels import encode_palette_png, voc_colormap
from tests.archive_builders import encode_jpeg, truncate, write_tar

VOC_TAR_NAME = "VOCtrainval_11-May-2012.tar"
VOC_DEVKIT = "VOCdevkit/VOC2012"
SBD_TGZ_NAME = "benchmark.tgz"
SBD_DATASET = "benchmark_RELEASE/dataset"
NUM_VOC_CLASSES = 21
VOID = 255
ORIGINS = ("voc", "sbd")


def _rng(image_id: str, seed: int, origin: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(image_id.encode()), ORIGINS.index(origin)])


def fixture_label(image_id: str, size: tuple[int, int], seed: int, origin: str) -> np.ndarray:
    """The label written for ``image_id``: uint8 (H, W) for ``size`` = (W, H).

    Background 0 with two or three rectangles of classes 1-20; for ``origin`` "voc" each rectangle gets a
    2-pixel 255 border (the VOC void band), for "sbd" none."""
    width, height = size
    rng = _rng(image_id, seed, origin)
    label = np.zeros((height, width), dtype=np.uint8)
    for _ in range(int(rng.integers(2, 4))):
        class_index = int(rng.integers(1, NUM_VOC_CLASSES))
        x0 = int(rng.integers(0, width // 2))
        y0 = int(rng.integers(0, height // 2))
        x1 = int(rng.integers(x0 + 6, width + 1))
        y1 = int(rng.integers(y0 + 6, height + 1))
        if origin == "voc":
            label[y0:y1, x0:x1] = VOID
            label[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2] = class_index
        else:
            label[y0:y1, x0:x1] = class_index
    return label


def fixture_image(image_id: str, size: tuple[int, int], seed: int, origin: str) -> np.ndarray:
    """The image written for ``image_id`` (before JPEG coding): uint8 (H, W, 3) RGB, each class region in
    a muted version of its VOC color plus mild seeded noise, so that regions survive JPEG."""
    label = fixture_label(image_id, size, seed, origin)
    colors = voc_colormap().astype(np.float32) * 0.6 + 50.0
    noise = _rng(image_id, seed + 1, origin).normal(0.0, 4.0, size=(*label.shape, 3))
    return np.clip(colors[label] + noise, 0, 255).round().astype(np.uint8)


def _image_bytes(image_id: str, size: tuple[int, int], seed: int, origin: str, corrupt: bool) -> bytes:
    data = encode_jpeg(fixture_image(image_id, size, seed, origin))
    return truncate(data) if corrupt else data


def _label_array(image_id: str, size: tuple[int, int], seed: int, origin: str, missized: bool) -> np.ndarray:
    label = fixture_label(image_id, size, seed, origin)
    return label[:-1, :-1] if missized else label


def _id_list(ids: Iterable[str]) -> bytes:
    return "".join(f"{image_id}\n" for image_id in ids).encode()


def build_voc2012_tar(
    dest_dir: Path,
    train_ids: Iterable[str],
    val_ids: Iterable[str],
    size: tuple[int, int] = (48, 32),
    seed: int = 0,
    *,
    extra_image_ids: Iterable[str] = (),
    corrupt_image_ids: Collection[str] = (),
    missized_label_ids: Collection[str] = (),
    missing_image_ids: Collection[str] = (),
    missing_label_ids: Collection[str] = (),
) -> Path:
    """Write ``dest_dir/VOCtrainval_11-May-2012.tar`` and return its path.

    Members: ``VOCdevkit/VOC2012/JPEGImages/<id>.jpg`` for train, val and ``extra_image_ids`` (VOC has
    many images without segmentation labels), ``SegmentationClass/<id>.png`` (palette PNG, VOC colormap)
    for train and val, ``ImageSets/Segmentation/{train,val,trainval}.txt``. ``size`` = (W, H) in pixels."""
    train_ids, val_ids = sorted(train_ids), sorted(val_ids)
    labelled = sorted(set(train_ids) | set(val_ids))
    files: dict[str, bytes] = {}
    for image_id in sorted(set(labelled) | set(extra_image_ids)):
        if image_id not in missing_image_ids:
            files[f"{VOC_DEVKIT}/JPEGImages/{image_id}.jpg"] = _image_bytes(
                image_id, size, seed, "voc", image_id in corrupt_image_ids
            )
    for image_id in labelled:
        if image_id not in missing_label_ids:
            label = _label_array(image_id, size, seed, "voc", image_id in missized_label_ids)
            files[f"{VOC_DEVKIT}/SegmentationClass/{image_id}.png"] = encode_palette_png(label)
    split_dir = f"{VOC_DEVKIT}/ImageSets/Segmentation"
    files[f"{split_dir}/train.txt"] = _id_list(train_ids)
    files[f"{split_dir}/val.txt"] = _id_list(val_ids)
    files[f"{split_dir}/trainval.txt"] = _id_list(labelled)
    return write_tar(Path(dest_dir) / VOC_TAR_NAME, files)


# savemat stamps the creation time into the 116-byte text header; a fixed text keeps the bytes stable.
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, written by semcolor test fixtures".ljust(116, b" ")


def encode_sbd_cls_mat(segmentation: np.ndarray) -> bytes:
    """Bytes of an SBD ``cls/<id>.mat``: struct ``GTcls`` with fields ``Boundaries`` (20x1 cell of sparse
    logical HxW boundary maps, one per class), ``Segmentation`` (uint8 HxW) and ``CategoriesPresent``
    (uint8 column of the classes present), as in the release; readable with
    ``loadmat(f)['GTcls'][0]['Segmentation'][0]``. Deterministic."""
    segmentation = np.asarray(segmentation, dtype=np.uint8)
    boundaries = np.empty((NUM_VOC_CLASSES - 1, 1), dtype=object)
    for class_index in range(1, NUM_VOC_CLASSES):
        mask = segmentation == class_index
        # a pixel is interior when its 4 neighbours are in the mask too; image-edge pixels count as edge
        inner = np.zeros_like(mask)
        inner[1:-1, 1:-1] = (
            mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
        )
        boundaries[class_index - 1, 0] = scipy.sparse.csc_matrix(mask & ~inner)
    present = np.unique(segmentation)
    categories = present[present > 0].astype(np.uint8).reshape(-1, 1)
    buffer = io.BytesIO()
    scipy.io.savemat(
        buffer,
        {"GTcls": {"Boundaries": boundaries, "Segmentation": segmentation, "CategoriesPresent": categories}},
    )
    data = buffer.getvalue()
    return _MAT_HEADER + data[len(_MAT_HEADER) :]


def build_sbd_tgz(
    dest_dir: Path,
    train_ids: Iterable[str],
    val_ids: Iterable[str],
    size: tuple[int, int] = (48, 32),
    seed: int = 0,
    *,
    corrupt_image_ids: Collection[str] = (),
    missized_label_ids: Collection[str] = (),
    missing_image_ids: Collection[str] = (),
    missing_label_ids: Collection[str] = (),
) -> Path:
    """Write ``dest_dir/benchmark.tgz`` and return its path.

    Members: ``benchmark_RELEASE/dataset/img/<id>.jpg``, ``cls/<id>.mat`` (see ``encode_sbd_cls_mat``;
    labels 0-20, no 255) for every id of train and val, and ``train.txt``/``val.txt``. ``size`` = (W, H)."""
    train_ids, val_ids = sorted(train_ids), sorted(val_ids)
    files: dict[str, bytes] = {}
    for image_id in sorted(set(train_ids) | set(val_ids)):
        if image_id not in missing_image_ids:
            files[f"{SBD_DATASET}/img/{image_id}.jpg"] = _image_bytes(
                image_id, size, seed, "sbd", image_id in corrupt_image_ids
            )
        if image_id not in missing_label_ids:
            label = _label_array(image_id, size, seed, "sbd", image_id in missized_label_ids)
            files[f"{SBD_DATASET}/cls/{image_id}.mat"] = encode_sbd_cls_mat(label)
    files[f"{SBD_DATASET}/train.txt"] = _id_list(train_ids)
    files[f"{SBD_DATASET}/val.txt"] = _id_list(val_ids)
    return write_tar(Path(dest_dir) / SBD_TGZ_NAME, files, gzip_compressed=True)
