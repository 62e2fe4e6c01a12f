"""PASCAL-Context (59 + background, VOC-first order) on tiny archives in the real layouts
(tests/archive_builders/pascal_context.py): VOC2010 tar + Stanford trainval.tar.gz with scipy .mat files."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from semcolor.data.sources import get_source
from semcolor.data.sources.base import SampleError
from semcolor.data.sources.pascal_context import PascalContext, context459_to_59, context459_to_59_lut
from tests.archive_builders.coco import encode_mat, fixture_image
from tests.archive_builders.pascal_context import (
    KNOWN_BAND,
    KNOWN_BAND_ROWS,
    build_pascal_context_archives,
    pascal_context_fixture_label_map,
)

SIZE = (20, 32)  # (height, width)
SEED = 5
TRAIN = ("2008_000002", "2008_000003", "2008_000007")
VAL = ("2008_000009", "2008_000016")
# the 59-class list's spelling -> labels.txt (459) spelling, where they differ
ALIASES = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}


def _extract(paths, root: Path) -> Path:
    for path in paths:
        with tarfile.open(path) as archive:
            archive.extractall(root, filter="data")
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("pascal_context")
    archives = build_pascal_context_archives(base / "raw", TRAIN, VAL, SIZE, SEED)
    return _extract(archives.values(), base / "extracted")


@pytest.fixture(scope="module")
def full_names(shared_dir) -> dict[int, str]:
    lines = (shared_dir / "fixtures/class-lists/pascal-context-459.txt").read_text().splitlines()
    return {int(line.split(":")[0]): line.split(": ", 1)[1] for line in lines if line.strip()}


def test_class_names_are_background_plus_59_in_voc_first_order(shared_dir):
    lines = (shared_dir / "fixtures/class-lists/pascal-context-59.txt").read_text().splitlines()
    assert PascalContext.class_names == tuple(line.split(": ", 1)[1] for line in lines)
    assert len(PascalContext.class_names) == 60
    names = PascalContext.class_names
    assert (names[0], names[1], names[11], names[20], names[21], names[59]) == (
        "background", "aeroplane", "diningtable", "tvmonitor", "bag", "wood"
    )


def test_lut_maps_59_ids_one_to_one_and_everything_else_to_background(full_names):
    lut = context459_to_59_lut()
    assert lut.shape == (460,) and lut.dtype == np.uint8
    assert lut[0] == 0
    mapped = {full_id: int(lut[full_id]) for full_id in range(1, 460) if lut[full_id] > 0}
    assert sorted(mapped.values()) == list(range(1, 60))  # each of the 59 classes from exactly one id
    for full_id, index in mapped.items():
        name = PascalContext.class_names[index]
        assert full_names[full_id] == ALIASES.get(name, name)
    assert int(lut[397]) == 11 and int(lut[19]) == 52 and int(lut[80]) == 28  # table, bedclothes, cloth
    with pytest.raises(ValueError, match=r"\[460, 1000\]"):
        context459_to_59(np.array([[1, 460, 1000]], dtype=np.uint16))


def test_splits_come_from_voc2010_main_lists(root):
    source = get_source("pascal_context", root)
    assert [item.key for item in source.list_items("train")] == sorted(TRAIN)
    assert [item.key for item in source.list_items("val")] == sorted(VAL)
    item = source.list_items("val")[0]
    assert item.paths[0].endswith("VOCdevkit/VOC2010/JPEGImages/2008_000009.jpg")
    assert item.paths[1].endswith("trainval/2008_000009.mat")


def test_labels_map_known_459_ids_to_the_59_classes(root, full_names):
    source = PascalContext(root)
    # aeroplane, table=diningtable, bedclothes=bedcloth, cloth=clothes, wood, accordion, wool, person
    expected_band = (1, 11, 52, 28, 59, 0, 0, 15)
    block = SIZE[1] // len(KNOWN_BAND)
    names_in_459_spelling = {ALIASES.get(name, name) for name in PascalContext.class_names[1:]}
    for split in ("train", "val"):
        for item in source.list_items(split):
            sample = source.load(item)
            label = sample.label
            assert label.dtype == np.uint8 and label.shape == SIZE
            band = [int(label[0, position * block]) for position in range(len(KNOWN_BAND))]
            assert band == list(expected_band)
            assert label.max() <= 59 and 255 not in label
            written = pascal_context_fixture_label_map(item.key, SIZE, SEED)
            for full_id in np.unique(written):
                values = np.unique(label[written == full_id])
                assert values.size == 1  # one 459-class id -> one class everywhere
                name = PascalContext.class_names[int(values[0])]
                if values[0] == 0:
                    assert full_names[int(full_id)] not in names_in_459_spelling
                else:
                    assert full_names[int(full_id)] == ALIASES.get(name, name)
            written_image = fixture_image(item.key, SIZE, SEED).astype(int)
            assert np.abs(sample.image.astype(int) - written_image).mean() < 4  # JPEG loss only
            assert sample.metadata == {
                "source": "pascal_context",
                "split": split,
                "original_id": item.key,
                "original_size": [SIZE[1], SIZE[0]],
            }
            below_band = label[KNOWN_BAND_ROWS:]
            assert np.count_nonzero(below_band) > 0  # the fixture is not all background


def test_sample_errors(root, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(root, tree)
    source = PascalContext(tree)
    missing, corrupt, bad = source.list_items("train")
    Path(missing.paths[1]).unlink()
    with pytest.raises(SampleError, match="missing file .*trainval/2008_000002.mat"):
        source.load(missing)
    Path(corrupt.paths[0]).write_bytes(Path(corrupt.paths[0]).read_bytes()[:150])
    with pytest.raises(SampleError, match="cannot decode image .*2008_000003.jpg"):
        source.load(corrupt)
    Path(bad.paths[1]).write_bytes(encode_mat({"LabelMap": np.full(SIZE, 500, dtype=np.uint16)}))
    with pytest.raises(SampleError, match=r"LabelMap values \[500\] are outside 0..459"):
        source.load(bad)
    Path(bad.paths[1]).write_bytes(encode_mat({"S": np.ones(SIZE, dtype=np.uint16)}))
    with pytest.raises(SampleError, match="no variable 'LabelMap'"):
        source.load(bad)


def test_builder_bad_samples_and_determinism(tmp_path):
    options = dict(unlabelled_ids=[TRAIN[0]], corrupt_image_ids=[TRAIN[1]], missized_label_ids=[TRAIN[2]])
    first = build_pascal_context_archives(tmp_path / "a", TRAIN, VAL, SIZE, SEED, **options)
    second = build_pascal_context_archives(tmp_path / "b", TRAIN, VAL, SIZE, SEED, **options)
    assert sorted(first) == sorted(archive.filename for archive in PascalContext.archives)
    digest = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in first.items()}
    assert digest == {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in second.items()}
    with tarfile.open(first["trainval.tar.gz"]) as archive:
        names = archive.getnames()
    assert {"labels.txt", "59_labels.txt", "trainval", f"trainval/{VAL[0]}.mat"} <= set(names)
    assert f"trainval/{TRAIN[0]}.mat" not in names
    source = PascalContext(_extract(first.values(), tmp_path / "extracted"))
    items = {item.key: item for item in source.list_items("train")}
    assert sorted(items) == sorted(TRAIN)  # the unlabelled id stays listed: its load fails, counted
    with pytest.raises(SampleError, match="missing file"):
        source.load(items[TRAIN[0]])
    with pytest.raises(SampleError, match="cannot decode image"):
        source.load(items[TRAIN[1]])
    with pytest.raises(SampleError, match=r"is 32x21 \(WxH\) but image .* is 32x20"):
        source.load(items[TRAIN[2]])


def test_release_labels_txt_must_match_the_packaged_list(root, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(root, tree)
    labels = tree / "labels.txt"
    labels.write_text(labels.read_text().replace("397: table", "397: dining table"))
    with pytest.raises(ValueError, match="397: dining table"):
        PascalContext(tree).list_items("train")


def test_missing_tree_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro download@pascal_context"):
        PascalContext(tmp_path).list_items("val")
