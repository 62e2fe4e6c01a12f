"""semcolor.data.shards: conversion of a split into Lab WebDataset shards, on a tiny VOC-layout tree.

The source here is a minimal Source subclass reading a VOC-like tree (JPEGImages, SegmentationClass
palette PNGs, ImageSets/Segmentation lists); it raises SampleError for an unreadable file but, on purpose,
does not compare label and image sizes, so the converter's own check is exercised.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import webdataset
from PIL import Image

from semcolor import color
from semcolor.data.shard_settings import ShardSettings
from semcolor.data.shard_format import (
    MANIFEST_NAME,
    decode_npy,
    decode_png,
    encode_npy,
    encode_png,
    stored_size_for,
    tar_member_info,
)
from semcolor.data.shard_reader import read_manifest, read_shard_samples
from semcolor.data.shards import (
    auto_chunk_size,
    ConvertedSample,
    ShardInfo,
    convert_item,
    convert_source,
    convert_split,
    write_shards,
)
from semcolor.data.sources.base import Item, Sample, SampleError, Source
from semcolor.errors import TooManySkippedError

SIZE = 16
GOOD_IDS = tuple(f"2008_00000{i}" for i in range(1, 8))
CORRUPT_ID = "2008_000100"  # a truncated JPEG
MISSIZED_ID = "2008_000101"  # label 1 px narrower than its image
VAL_IDS = ("2009_000001", "2009_000002")


class TinyVocSource(Source):
    """The VOC segmentation layout with three classes."""

    name: ClassVar[str] = "tiny"
    class_names: ClassVar[tuple[str, ...]] = ("background", "square", "disc")

    def list_items(self, split: str) -> list[Item]:
        self._check_split(split)
        ids = (self.root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        return [
            Item(
                key=image_id,
                split=split,
                paths=(
                    str(self.root / "JPEGImages" / f"{image_id}.jpg"),
                    str(self.root / "SegmentationClass" / f"{image_id}.png"),
                ),
                original_id=image_id,
            )
            for image_id in sorted(ids)
        ]

    def load(self, item: Item) -> Sample:
        try:
            with Image.open(item.paths[0]) as image:
                rgb = np.asarray(image.convert("RGB"))
            with Image.open(item.paths[1]) as label_image:
                label = np.asarray(label_image)
        except OSError as error:
            raise SampleError(item.key, f"cannot decode {item.paths}: {error}") from error
        return Sample(item.key, rgb, label, {"source": self.name, "extra": "kept"})

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "class_spec": {"square": "red", "disc": ["green", "blue"]}}


class FailingSource(TinyVocSource):
    """Raises a programming error (not bad data) on one key: conversion must stop, not skip."""

    def load(self, item: Item) -> Sample:
        if item.key == GOOD_IDS[4]:
            raise RuntimeError("a bug, not bad data")
        return super().load(item)


def _image_and_label(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:height, 0:width]
    slope_x, slope_y = rng.uniform(-2, 2, 3), rng.uniform(-2, 2, 3)
    base = rng.uniform(0, 255, 3) + slope_x * x[..., None] + slope_y * y[..., None]
    image = np.clip(base + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    label = np.zeros((height, width), np.uint8)
    label[height // 4 : height // 2, width // 4 : width // 2] = 1
    label[(y - 2 * height // 3) ** 2 + (x - 2 * width // 3) ** 2 < (min(height, width) // 5) ** 2] = 2
    label[height // 4 - 1, :] = 255  # a void boundary band
    return image, label


def _write_label(label: np.ndarray, path: Path) -> None:
    image = Image.fromarray(label, mode="P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
    image.save(path)


def build_tree(root: Path) -> Path:
    """A VOC-layout tree: 7 good train images of assorted sizes, a corrupt JPEG, a mis-sized label,
    and 2 val images."""
    rng = np.random.default_rng(7)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shapes = [(30, 40), (50, 33), (16, 16), (24, 61), (45, 45), (20, 90), (37, 29)]  # (H, W) of GOOD_IDS
    shapes += [(28, 28), (31, 27), (40, 30), (12, 50)]  # corrupt, mis-sized, val
    ids = [*GOOD_IDS, CORRUPT_ID, MISSIZED_ID, *VAL_IDS]
    for image_id, (height, width) in zip(ids, shapes):
        image, label = _image_and_label(rng, height, width)
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=90)
        if image_id == MISSIZED_ID:
            label = label[:, :-1]
        _write_label(label, root / "SegmentationClass" / f"{image_id}.png")
    jpeg = (root / "JPEGImages" / f"{CORRUPT_ID}.jpg").read_bytes()
    (root / "JPEGImages" / f"{CORRUPT_ID}.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    train = "\n".join(reversed([*GOOD_IDS, CORRUPT_ID, MISSIZED_ID]))  # unsorted on purpose
    (root / "ImageSets/Segmentation/train.txt").write_text(train + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(VAL_IDS) + "\n")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tree(tmp_path_factory.mktemp("tiny_voc"))


WRITING_KEYS = ("samples_per_shard", "on_error", "max_skipped_fraction")  # ShardSettings fields


def _convert_with(source: Source, out_dir: Path, **options: Any) -> Path:
    writing = {"samples_per_shard": 3, "max_skipped_fraction": 0.5}
    writing.update({key: options.pop(key) for key in list(options) if key in WRITING_KEYS})
    return convert_source(source, out_dir, SIZE, settings=ShardSettings(**writing), **{"progress": False, **options})


def _convert(tree: Path, out_dir: Path, **options: Any) -> Path:
    return _convert_with(TinyVocSource(tree), out_dir, **options)


@pytest.fixture(scope="module")
def built(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("shards")
    _convert(tree, out_dir)
    return out_dir


def test_counts_match_webdataset_and_tar(built: Path) -> None:
    manifest = read_manifest(built)
    train = manifest["splits"]["train"]
    assert (train["items"], train["samples"]) == (9, 7)
    assert [shard["samples"] for shard in train["shards"]] == [3, 3, 1]
    assert [shard["file"] for shard in train["shards"]] == [f"train-00000{i}.tar" for i in range(3)]
    assert manifest["splits"]["val"]["samples"] == 2

    urls = [str(built / shard["file"]) for shard in train["shards"]]
    keys = [sample["__key__"] for sample in webdataset.WebDataset(urls, shardshuffle=False)]
    assert keys == sorted(GOOD_IDS)

    listing = subprocess.run(["tar", "-tf", urls[0]], check=True, capture_output=True, text=True)
    listed = listing.stdout.split()
    first_three = sorted(GOOD_IDS)[:3]
    assert listed == [f"{key}.{suffix}" for key in first_three for suffix in ("json", "lab.npy", "seg.png")]

    # stock webdataset decodes every member with its default handlers: .npy -> array, .png -> image
    ours = {s.key: s for s in read_shard_samples(urls[0])}
    decoded = list(webdataset.WebDataset(urls[:1], shardshuffle=False).decode("l8"))
    assert [sample["__key__"] for sample in decoded] == first_three
    for sample in decoded:
        planes = sample["lab.npy"]
        assert planes.dtype == np.uint8 and planes.shape == (3, SIZE, SIZE)
        np.testing.assert_array_equal(np.moveaxis(planes, 0, -1), ours[sample["__key__"]].lab8)
        np.testing.assert_array_equal(sample["seg.png"], ours[sample["__key__"]].label)
        assert sample["json"]["original_id"] == sample["__key__"]


def test_corrupt_jpeg_and_missized_label_are_listed_with_reasons(built: Path) -> None:
    skipped = {entry["key"]: entry["reason"] for entry in read_manifest(built)["splits"]["train"]["skipped"]}
    assert sorted(skipped) == [CORRUPT_ID, MISSIZED_ID]
    assert "cannot decode" in skipped[CORRUPT_ID] and f"{CORRUPT_ID}.jpg" in skipped[CORRUPT_ID]
    assert "label is 26x31 (WxH) but its image is 27x31" in skipped[MISSIZED_ID]
    assert f"{MISSIZED_ID}.png" in skipped[MISSIZED_ID]


def test_pixels_round_trip_through_lab(built: Path, tree: Path) -> None:
    samples = [s for shard in sorted(built.glob("*.tar")) for s in read_shard_samples(shard)]
    assert sorted(s.key for s in samples) == sorted([*GOOD_IDS, *VAL_IDS])
    for sample in samples:
        with Image.open(tree / "JPEGImages" / f"{sample.key}.jpg") as image:
            original = image.convert("RGB")
            width, height = original.size
            expected_rgb = np.asarray(original.resize((SIZE, SIZE), Image.Resampling.BILINEAR))
        with Image.open(tree / "SegmentationClass" / f"{sample.key}.png") as label_image:
            original_label = np.asarray(label_image)
            expected_label = np.asarray(label_image.resize((SIZE, SIZE), Image.Resampling.NEAREST))
        assert sample.lab8.shape == (SIZE, SIZE, 3) and sample.lab8.dtype == np.uint8
        difference = np.abs(color.decode_lab8(sample.lab8) - color.rgb8_to_lab(expected_rgb))
        # 8-bit quantisation only: half a code step, L step = 100/255, a/b step = 1
        assert difference[..., 0].max() <= 50 / 255 + 1e-6
        assert difference[..., 1:].max() <= 0.5 + 1e-6
        np.testing.assert_array_equal(sample.label, expected_label)
        assert set(np.unique(sample.label)) <= set(np.unique(original_label))
        assert sample.metadata == {
            "source": "tiny",
            "split": "val" if sample.key in VAL_IDS else "train",
            "original_id": sample.key,
            "original_size": [width, height],
            "stored_size": [SIZE, SIZE],
            "extra": "kept",
        }
    assert any(255 in s.label for s in samples)


def test_manifest_contents(built: Path) -> None:
    manifest = read_manifest(built)
    assert manifest["source"] == "tiny"
    assert (manifest["size"], manifest["stored_size"]) == (SIZE, [SIZE, SIZE])
    assert manifest["class_names"] == ["background", "square", "disc"]
    assert manifest["ignore_index"] == 255
    assert manifest["source_description"]["class_spec"] == {"square": "red", "disc": ["green", "blue"]}
    assert manifest["skip_policy"] == {"on_error": "skip", "max_skipped_fraction": 0.5}
    assert "L * 255 / 100" in manifest["lab_encoding"]["L"] and "a + 128" in manifest["lab_encoding"]["a"]
    for split in ("train", "val"):
        for shard in manifest["splits"][split]["shards"]:
            assert hashlib.sha256((built / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]
    text = (built / MANIFEST_NAME).read_text()
    assert text == json.dumps(manifest, sort_keys=True, indent=2) + "\n"
    assert sorted(p.name for p in built.iterdir()) == sorted(
        [MANIFEST_NAME, "train-000000.tar", "train-000001.tar", "train-000002.tar", "val-000000.tar"]
    )


def test_tar_metadata_is_fixed(built: Path) -> None:
    with tarfile.open(built / "train-000000.tar") as tar:
        members = tar.getmembers()
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode, m.type) for m in members} == {
        (0, 0, 0, "", "", 0o644, tarfile.REGTYPE)
    }
    raw = (built / "train-000000.tar").read_bytes()
    assert raw[257:263] == b"ustar\x00"  # POSIX USTAR magic, no pax headers
    assert not any(m.pax_headers for m in members)


@pytest.mark.slow
def test_rebuild_and_worker_count_give_identical_bytes(built: Path, tree: Path, tmp_path: Path) -> None:
    again, parallel = tmp_path / "again", tmp_path / "parallel"
    _convert(tree, again)
    _convert(tree, parallel, workers=2, chunk_size=2)
    for other in (again, parallel):
        assert (other / MANIFEST_NAME).read_bytes() == (built / MANIFEST_NAME).read_bytes()
        for shard in built.glob("*.tar"):
            assert (other / shard.name).read_bytes() == shard.read_bytes()


def test_on_error_raise_names_the_key(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(SampleError, match=CORRUPT_ID) as raised:
        _convert(tree, tmp_path, on_error="raise")
    assert raised.value.key == CORRUPT_ID
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_too_many_skips_fail_with_counts_and_leave_no_manifest(tree: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    _convert(tree, out_dir)
    assert (out_dir / MANIFEST_NAME).exists()
    (out_dir / "train-000009.tar").write_bytes(b"stale")
    (out_dir / "notes.txt").write_text("not ours")
    with pytest.raises(TooManySkippedError, match=r"2 of 9 inputs skipped.*max_skipped_fraction=0.2"):
        _convert(tree, out_dir, max_skipped_fraction=0.2)
    assert not (out_dir / MANIFEST_NAME).exists()
    assert not (out_dir / "train-000009.tar").exists()  # stale shards of the old build are gone too
    assert not list(out_dir.glob(".*.tmp"))
    assert (out_dir / "notes.txt").read_text() == "not ours"


@pytest.mark.slow
def test_a_bug_in_a_worker_stops_the_build_without_manifest(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="a bug, not bad data"):
        _convert_with(FailingSource(tree), tmp_path, workers=2, chunk_size=2)
    assert not (tmp_path / MANIFEST_NAME).exists()
    # the shard before the failing item was finished; nothing after it was written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-000000.tar"]


def test_convert_item_returns_skipped_or_encoded_sample(tree: Path) -> None:
    source = TinyVocSource(tree)
    items = {item.key: item for item in source.list_items("train")}
    skipped = convert_item(source, items[CORRUPT_ID], SIZE)
    assert skipped.key == CORRUPT_ID and "cannot decode" in skipped.reason
    converted = convert_item(source, items[GOOD_IDS[0]], SIZE)
    assert isinstance(converted, ConvertedSample) and converted.lab_png is None
    planes = np.load(io.BytesIO(converted.lab_npy), allow_pickle=False)
    assert (planes.dtype, planes.shape) == (np.uint8, (3, SIZE, SIZE))
    with Image.open(io.BytesIO(converted.seg_png)) as seg:
        assert (seg.format, seg.mode, seg.size) == ("PNG", "L", (SIZE, SIZE))
    assert [suffix for suffix, _ in converted.members] == ["json", "lab.npy", "seg.png"]


def test_write_shards_rejects_unsorted_or_repeated_keys(tmp_path: Path) -> None:
    def sample(key: str) -> ConvertedSample:
        return ConvertedSample(key, b"{}", seg_png=b"seg", lab_npy=b"lab")

    shards = write_shards([sample("a"), sample("b"), sample("c")], tmp_path, "train", 2)
    assert [(s.file, s.samples) for s in shards] == [("train-000000.tar", 2), ("train-000001.tar", 1)]
    assert isinstance(shards[0], ShardInfo) and len(shards[0].sha256) == 64
    with pytest.raises(ValueError, match="'a' came after 'b'"):
        write_shards([sample("b"), sample("a")], tmp_path / "bad", "train", 5)
    with pytest.raises(ValueError, match="'b' came after 'b'"):
        write_shards([sample("a"), sample("b"), sample("b")], tmp_path / "repeated", "train", 5)
    assert not list((tmp_path / "bad").iterdir())  # the shard being written is removed


@pytest.mark.parametrize("count", [1, 2, 7, 20])
def test_shards_are_the_bytes_tarfile_writes(tmp_path: Path, count: int) -> None:
    # member sizes around the 512-byte block (0, 1, 511, 512, 513, ...) and archive ends on either side of
    # a 10240-byte record: the writer builds the bytes itself (and hashes them on the way)
    rng = np.random.default_rng(count)
    samples = [
        ConvertedSample(f"k{index:03d}", b"x" * int(rng.integers(0, 3)), seg_png=bytes(rng.integers(0, 256, size)),
                        lab_npy=b"L" * int(rng.choice([0, 511, 512, 513, 10240, 48_000 + index])))
        for index, size in enumerate(rng.choice([1, 511, 512, 513, 1023, 5000], count))
    ]
    [info] = write_shards(samples, tmp_path / "out", "train", count)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            for suffix, data in sample.members:
                tar.addfile(tar_member_info(f"{sample.key}.{suffix}", len(data)), io.BytesIO(data))
    written = (tmp_path / "out" / info.file).read_bytes()
    assert written == buffer.getvalue()
    assert info.sha256 == hashlib.sha256(written).hexdigest() and info.samples == count


def test_stored_size_and_argument_checks(tree: Path, tmp_path: Path) -> None:
    assert (stored_size_for(128), stored_size_for(352), stored_size_for(64)) == (128, 360, 64)
    with pytest.raises(ValueError, match="size must be a positive"):
        stored_size_for(0)
    with pytest.raises(ValueError, match="on_error must be 'skip' or 'raise'"):
        convert_split(TinyVocSource(tree), "val", SIZE, tmp_path, settings=ShardSettings(on_error="ignore"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown split 'test'"):
        convert_split(TinyVocSource(tree), "test", SIZE, tmp_path, progress=False)


@pytest.mark.parametrize("row_filter", ["up", "none"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (64, 5), (9, 11, 3), (1, 40, 3), (33, 2, 3)])
def test_png_encoder_is_lossless_and_standard(shape: tuple[int, ...], row_filter: str) -> None:
    array = np.random.default_rng(len(shape) * 100 + shape[0]).integers(0, 256, shape, dtype=np.uint8)
    data = encode_png(array, row_filter=row_filter)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        expected_mode = "L" if len(shape) == 2 else "RGB"
        assert (image.format, image.mode, image.size) == ("PNG", expected_mode, shape[1::-1])
        np.testing.assert_array_equal(np.asarray(image), array)
    np.testing.assert_array_equal(decode_png(data), array)
    assert encode_png(array.copy(), row_filter=row_filter) == data
    assert len(encode_png(np.zeros((64, 64, 3), np.uint8), row_filter=row_filter)) < 64 * 64 * 3 // 20
    with pytest.raises(ValueError, match="expected uint8"):
        encode_png(array.astype(np.int16))
    with pytest.raises(ValueError, match="row_filter must be one of"):
        encode_png(array, row_filter="paeth")


def test_size_352_is_stored_at_360(tree: Path, tmp_path: Path) -> None:
    manifest_path = convert_source(TinyVocSource(tree), tmp_path, 352, ["val"], progress=False)
    manifest = read_manifest(tmp_path)
    assert manifest_path == tmp_path / MANIFEST_NAME
    assert (manifest["size"], manifest["stored_size"], list(manifest["splits"])) == (352, [360, 360], ["val"])
    samples = list(read_shard_samples(tmp_path / "val-000000.tar"))
    assert [s.lab8.shape for s in samples] == [(360, 360, 3)] * 2
    assert [s.metadata["stored_size"] for s in samples] == [[360, 360]] * 2


def test_auto_chunk_size_balances_workers_within_bounds() -> None:
    assert auto_chunk_size(10_582, window=4) == 256  # large split: capped
    assert auto_chunk_size(1_000, window=4) == 125  # two chunks per in-flight slot
    assert auto_chunk_size(20, window=4) == 8  # tiny split: not below the floor
    assert auto_chunk_size(0, window=4) == 8


@pytest.mark.parametrize("shape", [(3, 16, 16), (3, 360, 360), (5,), (2, 3, 4, 1)])
def test_npy_encoder_writes_what_numpy_save_writes_and_decodes_without_copy(shape: tuple[int, ...]) -> None:
    array = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    data = encode_npy(array)
    reference = io.BytesIO()
    np.save(reference, array, allow_pickle=False)
    assert data == reference.getvalue()  # the standard layout, byte for byte
    assert len(data[: data.index(b"\n") + 1]) % 64 == 0  # numpy's header alignment
    np.testing.assert_array_equal(np.load(io.BytesIO(data)), array)
    view = decode_npy(data)
    np.testing.assert_array_equal(view, array)
    assert view.shape == shape and view.dtype == np.uint8 and not view.flags.writeable  # a view of the bytes
    assert encode_npy(array.copy()) == data and encode_npy(np.asfortranarray(array)) == data


def test_npy_decoder_refuses_what_is_not_a_plain_array() -> None:
    data = encode_npy(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="bad magic"):
        decode_npy(b"\x89PNG" + data[4:])
    with pytest.raises(ValueError, match=r"has 136 bytes, not 176"):
        decode_npy(data[:-40])
    objects = io.BytesIO()
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects|allow_pickle"):
        decode_npy(objects.getvalue())
    with pytest.raises(ValueError, match="expected a uint8 array"):
        encode_npy(np.zeros(3, np.float32))


def test_format_1_shards_are_still_read(tmp_path: Path) -> None:
    """A shard of the previous format (<key>.lab.png, channel-last pixels) reads back as the same
    ShardSample as format 2."""
    rng = np.random.default_rng(5)
    lab8 = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    label = rng.integers(0, 3, (12, 12), dtype=np.uint8)
    old = ConvertedSample("k1", b'{"v": 1}', seg_png=encode_png(label), lab_png=encode_png(lab8))
    new = ConvertedSample("k2", b'{"v": 2}', seg_png=encode_png(label, row_filter="none"),
                          lab_npy=encode_npy(np.ascontiguousarray(np.moveaxis(lab8, -1, 0))))
    write_shards([old, new], tmp_path, "val", 10)
    samples = list(read_shard_samples(tmp_path / "val-000000.tar"))
    assert [s.key for s in samples] == ["k1", "k2"]
    for sample in samples:
        np.testing.assert_array_equal(sample.lab8, lab8)
        assert sample.lab8.flags.c_contiguous and sample.lab8.flags.writeable
        np.testing.assert_array_equal(sample.label, label)
    assert [s.metadata["v"] for s in samples] == [1, 2]
    with pytest.raises(ValueError, match="exactly one of lab_npy"):
        ConvertedSample("k3", b"{}", seg_png=b"", lab_png=b"", lab_npy=b"")
