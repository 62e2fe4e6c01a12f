"""COCO-stuff 10k and 164k sources on tiny archives in the real layouts (tests/archive_builders/coco.py).

The one convention under test: class index = labels.txt id - 1 (0 person ... 181 wood), 255 unlabeled,
whether the labels come from 10k ``.mat`` ``S`` (id, 0 unlabeled), 164k PNGs or rendered COCO JSON."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semcolor.data.sources import get_source
from semcolor.data.sources.base import SampleError
from semcolor.data.sources.coco_stuff import (
    CocoStuff10k,
    CocoStuff164k,
    coco_stuff_ids_to_indices,
    coco_stuff_indices_to_ids,
    read_coco_stuff_mat_label,
    render_coco_stuff_label,
)
from tests.archive_builders.coco import (
    build_coco_stuff10k_zip,
    build_coco_stuff164k_zips,
    coco_stuff10k_fixture_ids,
    coco_stuff164k_fixture_labels,
    encode_mat,
    fixture_image,
)

# pycocotools 2.0 + numpy 2 warn inside mask.decode; nothing we can act on
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SIZE = (24, 32)  # (height, width)
SEED = 3
TRAIN_10K = ("COCO_train2014_000000000077", "COCO_train2014_000000000109", "COCO_train2014_000000000149")
TEST_10K = ("COCO_train2014_000000000009", "COCO_train2014_000000000025")
TRAIN_164K = (9, 25, 30)
VAL_164K = (139, 285)


def _extract_zips(paths, root: Path) -> Path:
    for path in paths:
        with zipfile.ZipFile(path) as archive:
            archive.extractall(root)
    return root


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def root10k(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("coco10k")
    archive = build_coco_stuff10k_zip(base / "raw", TRAIN_10K, TEST_10K, SIZE, SEED)
    return _extract_zips([archive], base / "extracted")


@pytest.fixture(scope="module")
def root164k(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("coco164k")
    archives = build_coco_stuff164k_zips(base / "raw", TRAIN_164K, VAL_164K, SIZE, SEED)
    return _extract_zips(archives.values(), base / "extracted")


def _copy_tree(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


# ---------------------------------------------------------------------------------------------------------
# The conventions, as pure functions


def test_class_names_are_the_182_labels_txt_ids_shifted_by_one(shared_dir):
    lines = (shared_dir / "fixtures/class-lists/cocostuff-labels.txt").read_text().splitlines()
    by_id = {int(line.split(":")[0]): line.split(": ", 1)[1] for line in lines}
    for source_class in (CocoStuff10k, CocoStuff164k):
        assert len(source_class.class_names) == 182
        assert source_class.class_names[0] == "person" and source_class.class_names[181] == "wood"
        assert "unlabeled" not in source_class.class_names
        assert all(source_class.class_names[label_id - 1] == by_id[label_id] for label_id in range(1, 183))


def test_mat_ids_to_png_indices_both_ways_on_every_value():
    ids = np.arange(0, 183, dtype=np.uint16).reshape(3, 61)
    indices = coco_stuff_ids_to_indices(ids)
    assert indices.dtype == np.uint8
    assert indices.flat[0] == 255  # unlabeled
    assert indices.flat[1] == 0 and indices.flat[182] == 181  # person, wood
    assert np.array_equal(indices.ravel()[1:], np.arange(182))
    back = coco_stuff_indices_to_ids(indices)
    assert back.dtype == np.uint16 and np.array_equal(back, ids)
    as_double = coco_stuff_ids_to_indices(ids.astype(np.float64))  # MATLAB's default type
    assert np.array_equal(as_double, indices)
    with pytest.raises(ValueError, match="whole numbers"):
        coco_stuff_ids_to_indices(np.array([[0.5]]))
    with pytest.raises(ValueError, match=r"\[183, 200\]"):
        coco_stuff_ids_to_indices(np.array([[0, 183, 200]], dtype=np.uint16))
    with pytest.raises(ValueError, match=r"\[182\]"):
        coco_stuff_indices_to_ids(np.array([[0, 182, 255]], dtype=np.uint8))


def _rect(top, left, bottom, right):
    return [[float(v) for v in (left, top, right, top, right, bottom, left, bottom)]]


def test_render_paints_id_minus_one_over_unlabeled_and_later_annotations_overwrite():
    first = {"category_id": 1, "segmentation": _rect(0, 0, 4, 4), "iscrowd": 0}
    second = {"category_id": 182, "segmentation": _rect(2, 2, 6, 6), "iscrowd": 0}
    label = render_coco_stuff_label([first, second], 8, 8)
    assert label.dtype == np.uint8
    assert label[0, 0] == 0 and label[5, 5] == 181 and label[7, 7] == 255
    assert label[3, 3] == 181  # overlap: the later annotation wins
    assert render_coco_stuff_label([second, first], 8, 8)[3, 3] == 0
    assert np.count_nonzero(label != 255) == 16 + 16 - 4


def test_render_skips_crowd_unless_asked_and_skips_other_and_rejects_unknown_categories():
    crowd = {"category_id": 5, "segmentation": {"size": [4, 4], "counts": [4, 4, 8]}, "iscrowd": 1}
    assert (render_coco_stuff_label([crowd], 4, 4) == 255).all()
    with_crowd = render_coco_stuff_label([crowd], 4, 4, include_crowd=True)
    assert (with_crowd[:, 1] == 4).all() and (with_crowd[:, [0, 2, 3]] == 255).all()  # column-major runs
    other = {"category_id": 183, "segmentation": _rect(0, 0, 4, 4), "iscrowd": 0}
    assert (render_coco_stuff_label([other], 4, 4) == 255).all()
    for bad in (0, 184):
        with pytest.raises(ValueError, match=f"category_id {bad}"):
            render_coco_stuff_label([{"category_id": bad, "segmentation": _rect(0, 0, 1, 1)}], 4, 4)


# ---------------------------------------------------------------------------------------------------------
# COCO-stuff 10k


def test_10k_splits_use_train_and_test_lists(root10k):
    source = get_source("coco_stuff10k", root10k)
    assert [item.key for item in source.list_items("train")] == sorted(TRAIN_10K)
    assert [item.key for item in source.list_items("val")] == sorted(TEST_10K)  # val = imageLists/test.txt
    with pytest.raises(ValueError, match="unknown split 'test'"):
        source.list_items("test")


def test_10k_labels_are_mat_ids_minus_one_with_255_unlabeled(root10k):
    source = CocoStuff10k(root10k)
    for split in ("train", "val"):
        for item in source.list_items(split):
            sample = source.load(item)
            written = coco_stuff10k_fixture_ids(item.key, SIZE, SEED).astype(np.int32)
            expected = np.where(written == 0, 255, written - 1)
            assert sample.label.dtype == np.uint8 and sample.label.shape == SIZE
            assert np.array_equal(sample.label, expected)
            assert sample.label[0, 0] == 0 and sample.label[-1, -1] == 181 and sample.label[-1, 0] == 255
            assert sample.image.shape == SIZE + (3,) and sample.image.dtype == np.uint8
            written_image = fixture_image(item.key, SIZE, SEED).astype(int)
            assert np.abs(sample.image.astype(int) - written_image).mean() < 4  # JPEG loss only
            assert sample.metadata == {
                "source": "coco_stuff10k",
                "split": split,
                "original_id": item.key,
                "original_size": [SIZE[1], SIZE[0]],
            }


def test_10k_sample_errors(root10k, tmp_path):
    root = _copy_tree(root10k, tmp_path / "tree")
    source = CocoStuff10k(root)
    items = {item.key: item for item in source.list_items("train")}
    missing, corrupt, bad_values = sorted(items)
    (root / "annotations" / f"{missing}.mat").unlink()
    with pytest.raises(SampleError, match=f"missing file .*{missing}.mat"):
        source.load(items[missing])
    jpeg = root / "images" / f"{corrupt}.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:200])
    with pytest.raises(SampleError, match=f"cannot decode image .*{corrupt}.jpg"):
        source.load(items[corrupt])
    mat = root / "annotations" / f"{bad_values}.mat"
    mat.write_bytes(encode_mat({"S": np.full(SIZE, 200, dtype=np.uint16)}))
    with pytest.raises(SampleError, match=r"\[200\] are outside 0 \(unlabeled\) .. 182"):
        source.load(items[bad_values])
    mat.write_bytes(encode_mat({"names": np.array(["person"], dtype=object)}))
    with pytest.raises(SampleError, match="no variable 'S'"):
        source.load(items[bad_values])
    mat.write_bytes(b"not a mat file at all, just text")
    with pytest.raises(SampleError, match="cannot decode label"):
        source.load(items[bad_values])


def test_10k_builder_options_make_the_listed_bad_samples(tmp_path):
    archive = build_coco_stuff10k_zip(
        tmp_path / "raw", TRAIN_10K, TEST_10K, SIZE, SEED,
        corrupt_image_ids=[TRAIN_10K[0]], missized_label_ids=[TRAIN_10K[1]],
    )
    assert _sha256(archive) == _sha256(
        build_coco_stuff10k_zip(tmp_path / "again", TRAIN_10K, TEST_10K, SIZE, SEED,
                                corrupt_image_ids=[TRAIN_10K[0]], missized_label_ids=[TRAIN_10K[1]])
    )
    assert archive.name == CocoStuff10k.archives[0].filename
    with zipfile.ZipFile(archive) as opened:
        names = opened.namelist()
    assert "imageLists/all.txt" in names and f"annotations/{TRAIN_10K[0]}.mat" in names
    source = CocoStuff10k(_extract_zips([archive], tmp_path / "extracted"))
    items = {item.key: item for item in source.list_items("train")}
    with pytest.raises(SampleError, match="cannot decode image"):
        source.load(items[TRAIN_10K[0]])
    with pytest.raises(SampleError, match=r"is 32x25 \(WxH\) but image .* is 32x24"):
        source.load(items[TRAIN_10K[1]])
    assert source.load(items[TRAIN_10K[2]]).label.shape == SIZE


def test_10k_missing_tree_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro download@coco_stuff10k"):
        CocoStuff10k(tmp_path).list_items("train")


# ---------------------------------------------------------------------------------------------------------
# COCO-stuff 164k


def _expected_164k(image_id: int, include_crowd: bool = False) -> np.ndarray:
    first = image_id == TRAIN_164K[0]
    return coco_stuff164k_fixture_labels(image_id, SIZE, SEED, first=first, include_crowd=include_crowd)


def test_164k_png_labels(root164k):
    source = get_source("coco_stuff164k", root164k)
    for split, ids in (("train", TRAIN_164K), ("val", VAL_164K)):
        items = source.list_items(split)
        assert [item.key for item in items] == [f"{i:012d}" for i in sorted(ids)]
        for item in items:
            sample = source.load(item)
            assert np.array_equal(sample.label, _expected_164k(int(item.key)))
            assert (sample.label[-2:] == 255).all()
            assert sample.metadata["original_size"] == [SIZE[1], SIZE[0]]
            assert sample.metadata["split"] == split
    first = source.load(source.list_items("train")[0]).label
    assert first[2, 2] == 0  # thing id 1 (person) -> 0
    assert 181 in first  # stuff id 182 (wood) -> 181


def test_describe_records_the_convention(root164k):
    for source in (CocoStuff164k(root164k), CocoStuff164k(root164k, label_source="json")):
        facts = json.loads(json.dumps(source.describe()))
        assert facts["source"] == "coco_stuff164k" and len(facts["class_names"]) == 182
        assert facts["ignore_index"] == 255 and "id - 1" in facts["label_convention"]
    assert CocoStuff164k(root164k, label_source="json").describe()["overlap"] == "later annotation wins"


def test_164k_json_rendering_equals_the_png_labels(root164k):
    png = CocoStuff164k(root164k)
    rendered = CocoStuff164k(root164k, label_source="json")
    for split in ("train", "val"):
        png_items, json_items = png.list_items(split), rendered.list_items(split)
        assert [item.key for item in png_items] == [item.key for item in json_items]
        assert json_items[0].paths[1].endswith(f"annotations/instances_{split}2017.json")
        for png_item, json_item in zip(png_items, json_items):
            from_png, from_json = png.load(png_item), rendered.load(json_item)
            assert np.array_equal(from_png.label, from_json.label)
            assert np.array_equal(from_png.image, from_json.image)
            assert len(np.unique(from_json.label)) >= 4  # things, stuff and unlabeled all present


def test_164k_json_with_crowd_paints_the_crowd_class(root164k):
    source = CocoStuff164k(root164k, label_source="json", include_crowd=True)
    for item in source.list_items("val"):
        label = source.load(item).label
        expected = _expected_164k(int(item.key), include_crowd=True)
        assert np.array_equal(label, expected)
        assert np.count_nonzero(label != _expected_164k(int(item.key))) > 0


def test_164k_json_uses_both_rle_and_polygons(root164k):
    documents = [
        json.loads((root164k / "annotations" / f"{kind}_train2017.json").read_text())
        for kind in ("instances", "stuff")
    ]
    segmentations = [a["segmentation"] for d in documents for a in d["annotations"]]
    assert any(isinstance(s, list) for s in segmentations)
    assert any(isinstance(s, dict) and isinstance(s["counts"], list) for s in segmentations)
    assert any(isinstance(s, dict) and isinstance(s["counts"], str) for s in segmentations)
    assert {c["id"] for c in documents[1]["categories"]} == set(range(92, 184))


def test_our_mask_decoding_matches_the_coco_api_on_the_fixture_json(root164k):
    from pycocotools.coco import COCO

    from semcolor.data.sources.coco_stuff import segmentation_to_mask

    for kind in ("instances", "stuff"):
        coco = COCO(str(root164k / "annotations" / f"{kind}_val2017.json"))
        for annotation in coco.loadAnns(coco.getAnnIds()):
            image = coco.imgs[annotation["image_id"]]
            ours = segmentation_to_mask(annotation["segmentation"], image["height"], image["width"])
            assert np.array_equal(ours, coco.annToMask(annotation).astype(bool))
            assert ours.sum() == annotation["area"] > 0


def test_mat_and_png_conventions_agree(root164k, tmp_path):
    """The same label map stored the 10k way (.mat S = id) and the 164k way (PNG = id - 1) reads the same."""
    png_source = CocoStuff164k(root164k)
    item = png_source.list_items("train")[0]
    png_label = np.asarray(Image.open(item.paths[1]))
    ids = np.where(png_label == 255, 0, png_label.astype(np.uint16) + 1).astype(np.uint16)
    tree = tmp_path / "coco10k"
    (tree / "images").mkdir(parents=True)
    (tree / "annotations").mkdir()
    (tree / "imageLists").mkdir()
    shutil.copy(item.paths[0], tree / "images" / "COCO_train2014_000000000009.jpg")
    (tree / "annotations" / "COCO_train2014_000000000009.mat").write_bytes(encode_mat({"S": ids}))
    (tree / "imageLists" / "train.txt").write_text("COCO_train2014_000000000009\n")
    from_mat = CocoStuff10k(tree).load(CocoStuff10k(tree).list_items("train")[0])
    assert np.array_equal(from_mat.label, png_source.load(item).label)
    mat_path = tree / "annotations" / "COCO_train2014_000000000009.mat"
    assert np.array_equal(read_coco_stuff_mat_label(mat_path), png_label)


def test_164k_sample_errors(root164k, tmp_path):
    root = _copy_tree(root164k, tmp_path / "tree")
    png, rendered = CocoStuff164k(root), CocoStuff164k(root, label_source="json")
    first, second, third = png.list_items("train")
    Path(first.paths[1]).unlink()
    with pytest.raises(SampleError, match="missing file .*000000000009.png"):
        png.load(first)
    jpeg = Path(second.paths[0])
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    for source, item in ((png, second), (rendered, rendered.list_items("train")[1])):
        with pytest.raises(SampleError, match="cannot decode image .*000000000025.jpg"):
            source.load(item)
    Image.fromarray(np.full((SIZE[0] + 1, SIZE[1]), 3, np.uint8), mode="L").save(third.paths[1])
    with pytest.raises(SampleError, match=r"is 32x25 \(WxH\) but image"):
        png.load(third)
    Image.fromarray(np.full(SIZE, 200, np.uint8), mode="L").save(third.paths[1])
    with pytest.raises(SampleError, match=r"values \[200\] outside \[0, 182\)"):
        png.load(third)
    # a JPEG the JSON does not list
    shutil.copy(third.paths[0], root / "train2017" / "000000000031.jpg")
    relisted = {item.key: item for item in CocoStuff164k(root, label_source="json").list_items("train")}
    with pytest.raises(SampleError, match="000000000031.jpg is not listed in"):
        rendered.load(relisted["000000000031"])


def test_164k_json_mode_needs_its_json_and_validates_options(root164k, tmp_path):
    root = _copy_tree(root164k, tmp_path / "tree")
    (root / "annotations" / "stuff_val2017.json").unlink()
    with pytest.raises(FileNotFoundError, match="stuff_val2017.json"):
        CocoStuff164k(root, label_source="json").list_items("val")
    assert len(CocoStuff164k(root).list_items("val")) == len(VAL_164K)  # png mode does not need it
    with pytest.raises(ValueError, match="label_source must be one of"):
        CocoStuff164k(root, label_source="mat")
    with pytest.raises(FileNotFoundError, match="dvc repro download@coco_stuff164k"):
        CocoStuff164k(tmp_path / "empty").list_items("train")


def test_164k_json_source_pickles_without_its_index(root164k):
    source = CocoStuff164k(root164k, label_source="json")
    item = source.list_items("train")[1]
    clone = pickle.loads(pickle.dumps(source))
    assert clone._indexes == {} and source._indexes  # the parsed JSON stays in its process
    assert np.array_equal(clone.load(item).label, source.load(item).label)


def test_164k_builder_is_deterministic_and_makes_bad_samples_on_request(tmp_path):
    options = dict(corrupt_image_ids=[9], missized_label_ids=[25])
    first = build_coco_stuff164k_zips(tmp_path / "a", TRAIN_164K, VAL_164K, SIZE, SEED, **options)
    second = build_coco_stuff164k_zips(tmp_path / "b", TRAIN_164K, VAL_164K, SIZE, SEED, **options)
    # the builder writes exactly the archives the source declares, under their real file names
    declared = CocoStuff164k.archives + CocoStuff164k.annotation_archives
    assert sorted(first) == sorted(archive.filename for archive in declared)
    assert {name: _sha256(path) for name, path in first.items()} == {
        name: _sha256(path) for name, path in second.items()
    }
    source = CocoStuff164k(_extract_zips(first.values(), tmp_path / "extracted"))
    items = {item.key: item for item in source.list_items("train")}
    with pytest.raises(SampleError, match="cannot decode image"):
        source.load(items["000000000009"])
    with pytest.raises(SampleError, match="WxH"):
        source.load(items["000000000025"])
    assert np.array_equal(source.load(items["000000000030"]).label, _expected_164k(30))
