"""Semantic Boundaries Dataset (``sbd``, Hariharan et al. 2011): 8498 train / 2857 val VOC-class label maps.

Extracted tree (``root`` = ``data/extracted/sbd``), as ``benchmark.tgz`` unpacks::

    root/benchmark_RELEASE/dataset/img/<id>.jpg
    root/benchmark_RELEASE/dataset/cls/<id>.mat      MATLAB struct GTcls: Segmentation (HxW class map,
                                                     0 background, 1-20 VOC classes, no void), Boundaries,
                                                     CategoriesPresent
    root/benchmark_RELEASE/dataset/{train,val}.txt

Labels are the 21 VOC classes; SBD marks no void pixels, so no label here contains 255.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError

from semcolor.sources.labels import ListedPairSource, decode_image_and_label, sample_metadata
from semcolor.sources.base import Archive, Item, Sample
from semcolor.sources.voc2012 import VOC_CLASS_NAMES

SBD_BENCHMARK = Archive(
    url="http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
    filename="benchmark.tgz",
    size=None,  # about 1.4 GB; the exact size is not published
    md5="82b4d87ceb2ed10f6038a1cba92111cb",
)


def read_sbd_segmentation(path: str | Path) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD ``cls/<id>.mat`` as uint8 of shape (H, W), class indices 0-20.

    ValueError naming the file when the struct or field is absent, the map is not 2-D, or a value does not
    fit in uint8 (casting would wrap it into a wrong class)."""
    try:
        contents = scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise
    except (MatReadError, ValueError, IndexError, TypeError, EOFError, OSError, zlib.error) as error:
        # scipy reports a damaged file through any of these, depending on where the damage is
        raise ValueError(f"{path}: not a readable MATLAB file ({type(error).__name__}: {error})") from error
    if "GTcls" not in contents:
        variables = sorted(name for name in contents if not name.startswith("__"))
        raise ValueError(f"{path}: no 'GTcls' struct (variables: {variables})")
    struct = contents["GTcls"]
    if struct.dtype.names is None or "Segmentation" not in struct.dtype.names:
        raise ValueError(f"{path}: struct 'GTcls' has no field 'Segmentation' (fields: {struct.dtype.names})")
    segmentation = np.asarray(struct[0]["Segmentation"][0])
    if segmentation.ndim != 2:
        raise ValueError(f"{path}: GTcls.Segmentation has shape {segmentation.shape}, expected (H, W)")
    if segmentation.size and (segmentation.min() < 0 or segmentation.max() > 255):
        raise ValueError(
            f"{path}: GTcls.Segmentation values span [{segmentation.min()}, {segmentation.max()}], "
            "outside uint8"
        )
    return segmentation.astype(np.uint8)


class Sbd(ListedPairSource):
    """SBD class segmentation: RGB JPEGs from ``img/`` with labels from ``cls/<id>.mat``.

    Keys are the VOC-style ids (``2008_000002``). Metadata per sample: ``source``, ``split``,
    ``original_id``, ``original_size`` ([width, height] in pixels)."""

    name: ClassVar[str] = "sbd"
    archives: ClassVar[tuple[Archive, ...]] = (SBD_BENCHMARK,)
    splits: ClassVar[tuple[str, ...]] = ("train", "val")
    class_names: ClassVar[tuple[str, ...]] = VOC_CLASS_NAMES

    dataset_dir: ClassVar[str] = "benchmark_RELEASE/dataset"

    @property
    def dataset_root(self) -> Path:
        """``root/benchmark_RELEASE/dataset``: the directory holding img/, cls/ and the split lists."""
        return self.root / self.dataset_dir

    def split_file(self, split: str) -> Path:
        return self.dataset_root / f"{split}.txt"

    def image_path(self, image_id: str) -> Path:
        return self.dataset_root / "img" / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self.dataset_root / "cls" / f"{image_id}.mat"

    def load(self, item: Item) -> Sample:
        """Decode ``item``: image uint8 (H, W, 3) RGB, label uint8 (H, W) in [0, 21). SampleError for a
        missing/corrupt file, a label of another size than its image, or out-of-range values."""
        image_path, label_path = (Path(path) for path in item.paths)
        image, label = decode_image_and_label(
            item.key, image_path, label_path, read_sbd_segmentation, self.num_classes, self.ignore_index
        )
        metadata = sample_metadata(self.name, item, image)
        return Sample(key=item.key, image=image, label=label, metadata=metadata)
