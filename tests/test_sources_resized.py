"""Decoding straight to the shard size (``Source.load_resized``, JPEG draft mode) against the full path.

A VOC2012-layout tree of photo-like JPEGs: large ones (500x375, decoded in draft mode at 128 px) and small
ones (below twice the target: the full decode, so exactly ``load`` + ``resize_sample``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semcolor.color import rgb8_to_lab8
from semcolor.data.shard_settings import ShardSettings
from semcolor.data.shard_format import MANIFEST_NAME
from semcolor.data.shard_reader import read_shard_samples
from semcolor.data.shards import convert_source, resize_sample, resized_loader
from semcolor.data.sources import SampleError
from semcolor.data.sources.labels import encode_palette_png, invalid_label_values, resize_label
from semcolor.data.sources.synthetic import Synthetic
from semcolor.data.sources.voc2012 import Voc2012

SIZE = 128
LARGE = [f"2010_00000{i}" for i in range(4)]  # 500x375 photos
SMALL = ["2010_000010", "2010_000011"]  # 200x150: below 2 x SIZE, no draft
TRUNCATED, MISSIZED, BAD_VALUES = "2010_000020", "2010_000021", "2010_000022"


def photo(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """uint8 (H, W, 3): a gradient, soft coloured blobs, fine texture, sharp edges and noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = rng.uniform(40, 220, 3) + (rng.uniform(-60, 60, 3) * (y / height)[..., None])
    for _ in range(4):
        cx, cy, radius = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(20, 120)
        weight = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))[..., None]
        image = image * (1 - weight) + rng.uniform(0, 255, 3) * weight
    image[height // 3 : height // 2, width // 4 : width // 2] = rng.uniform(0, 255, 3)  # a hard-edged box
    image += 10 * np.sin(x * 0.4)[..., None] + rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def label_for(width: int, height: int) -> np.ndarray:
    label = np.zeros((height, width), np.uint8)
    label[height // 3 : height // 2, width // 4 : width // 2] = 15
    label[height // 3 - 1, :] = 255
    label[: height // 5, :] = 3
    return label


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("voc_large")
    devkit = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (devkit / sub).mkdir(parents=True)
    rng = np.random.default_rng(11)
    sizes = {**{i: (500, 375) for i in LARGE}, **{i: (200, 150) for i in SMALL},
             TRUNCATED: (500, 375), MISSIZED: (500, 375), BAD_VALUES: (500, 375)}
    for image_id, (width, height) in sizes.items():
        Image.fromarray(photo(rng, width, height)).save(devkit / "JPEGImages" / f"{image_id}.jpg", quality=75)
        label = label_for(width, height)
        if image_id == MISSIZED:
            label = label[:-1]
        if image_id == BAD_VALUES:
            label[0, 0] = 40
        (devkit / "SegmentationClass" / f"{image_id}.png").write_bytes(encode_palette_png(label))
    jpeg = devkit / "JPEGImages" / f"{TRUNCATED}.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    (devkit / "ImageSets/Segmentation/train.txt").write_text("\n".join(sizes) + "\n")
    (devkit / "ImageSets/Segmentation/val.txt").write_text("\n".join(SMALL) + "\n")
    return root


@pytest.fixture(scope="module")
def items(tree: Path) -> dict:
    return {item.key: item for item in Voc2012(tree).list_items("train")}


def test_large_jpegs_decode_in_draft_mode_close_to_the_full_path(tree: Path, items: dict) -> None:
    source = Voc2012(tree)
    for key in LARGE:
        full = source.load(items[key])
        fast = source.load_resized(items[key], SIZE)
        image, label = resize_sample(full.image, full.label, SIZE)
        assert fast.image.shape == (SIZE, SIZE, 3) and fast.image.dtype == np.uint8
        assert fast.metadata == {**full.metadata, "original_size": [500, 375]}
        np.testing.assert_array_equal(fast.label, label)  # the label is never drafted
        difference = np.abs(rgb8_to_lab8(fast.image).astype(int) - rgb8_to_lab8(image).astype(int))
        # measured on photos: mean 0.3-0.8 L codes, 0.2-0.3 a/b codes; bilinear vs bicubic on the same
        # full decode differs by 0.6-2.1 and 0.2-0.45
        assert difference[..., 0].mean() < 1.0 and difference[..., 1:].mean() < 0.5, key
        assert np.percentile(difference, 99) <= 6, key
        assert difference.any(), f"{key}: no difference at all: the draft path did not run"


def test_small_images_take_the_full_path_exactly(tree: Path, items: dict) -> None:
    source = Voc2012(tree)
    for key in SMALL:
        full = source.load(items[key])
        fast = source.load_resized(items[key], SIZE)
        image, label = resize_sample(full.image, full.label, SIZE)
        np.testing.assert_array_equal(fast.image, image)
        np.testing.assert_array_equal(fast.label, label)
        assert fast.metadata["original_size"] == [200, 150]


@pytest.mark.parametrize(("key", "pattern"), [
    (TRUNCATED, rf"cannot decode image .*{TRUNCATED}\.jpg"),
    (MISSIZED, rf"label .*{MISSIZED}\.png is 500x374 \(WxH\) but image .*{MISSIZED}\.jpg is 500x375"),
    (BAD_VALUES, r"has values \[40\] outside \[0, 21\) that are not the ignore index 255"),
])
def test_bad_inputs_fail_as_in_load(items: dict, tree: Path, key: str, pattern: str) -> None:
    source = Voc2012(tree)
    for load in (source.load, lambda item: source.load_resized(item, SIZE)):
        with pytest.raises(SampleError, match=pattern) as raised:
            load(items[key])
        assert raised.value.key == key


def test_missing_files_are_sample_errors(tree: Path, items: dict) -> None:
    item = items[LARGE[0]]
    gone = type(item)(item.key, item.split, (item.paths[0] + ".gone", item.paths[1]), item.original_id)
    with pytest.raises(SampleError, match=r"missing file .*\.jpg\.gone"):
        Voc2012(tree).load_resized(gone, SIZE)


def test_the_converter_uses_load_resized_only_where_load_is_not_overridden(tree: Path) -> None:
    assert resized_loader(Voc2012(tree)) is not None
    assert resized_loader(Synthetic(tree)) is None  # it adds its world facts in load

    class Both(Voc2012):
        def load(self, item):
            return super().load(item)

        def load_resized(self, item, size):
            return super().load_resized(item, size)

    assert resized_loader(Both(tree)).__func__ is Both.load_resized


def test_draft_conversion_is_byte_deterministic_and_records_original_sizes(tree: Path, tmp_path: Path) -> None:
    options = {"settings": ShardSettings(samples_per_shard=3, max_skipped_fraction=0.5), "progress": False}
    first = convert_source(Voc2012(tree), tmp_path / "a", SIZE, **options).parent
    second = convert_source(Voc2012(tree), tmp_path / "b", SIZE, workers=2, chunk_size=1, **options).parent
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir()) and MANIFEST_NAME in names
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    samples = {s.key: s for p in sorted(first.glob("train-*.tar")) for s in read_shard_samples(p)}
    assert sorted(samples) == sorted(LARGE + SMALL)
    for key, sample in samples.items():
        assert sample.metadata["original_size"] == ([500, 375] if key in LARGE else [200, 150])
        assert sample.metadata["stored_size"] == [SIZE, SIZE]
        fast = Voc2012(tree).load_resized(next(i for i in Voc2012(tree).list_items("train") if i.key == key), SIZE)
        np.testing.assert_array_equal(sample.lab8, rgb8_to_lab8(fast.image))
        np.testing.assert_array_equal(sample.label, fast.label)


def test_invalid_label_values_agrees_with_a_histogram() -> None:
    rng = np.random.default_rng(0)
    for trial in range(40):
        num_classes = int(rng.integers(2, 60))
        label = rng.integers(0, num_classes, (37, 23), dtype=np.uint8)
        if trial % 2:
            label[rng.integers(0, 37, 5), rng.integers(0, 23, 5)] = 255
        if trial % 4 == 3:
            label[rng.integers(0, 37, 3), rng.integers(0, 23, 3)] = rng.integers(num_classes, 255, 3)
        present = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
        expected = [int(v) for v in present if v >= num_classes and v != 255]
        assert invalid_label_values(label, num_classes, 255) == expected
    assert invalid_label_values(np.zeros((0, 4), np.uint8), 3, 255) == []
    assert invalid_label_values(np.array([[1, 200]], np.int32), 3, 255) == [200]
    assert np.array_equal(resize_label(np.array([[1, 2], [3, 255]], np.uint8), 4)[::2, ::2], [[1, 2], [3, 255]])


def test_a_missing_label_is_a_sample_error(tree: Path, items: dict) -> None:
    item = items[LARGE[1]]
    gone = type(item)(item.key, item.split, (item.paths[0], item.paths[1] + ".gone"), item.original_id)
    with pytest.raises(SampleError, match=r"missing file .*\.png\.gone"):
        Voc2012(tree).load_resized(gone, SIZE)
