"""The VOC family of sources (voc2012, sbd, voc2012_aug) on genuine labels and on fixture archives."""

from __future__ import annotations

import csv
import io
import hashlib
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from semcolor.sources import IGNORE_INDEX, SampleError, get_source
from semcolor.sources.labels import (
    encode_palette_png,
    read_id_list,
    read_palette_indices,
    voc_colormap,
)
from semcolor.sources.sbd import Sbd, read_sbd_segmentation
from semcolor.sources.voc2012 import VOC_CLASS_NAMES, Voc2012
from semcolor.sources.voc2012_aug import Voc2012Aug, compose_train_ids
from tests.archive_builders import encode_jpeg, file_digests
from tests.archive_builders.voc import (
    SBD_TGZ_NAME,
    VOC_TAR_NAME,
    build_sbd_tgz,
    build_voc2012_tar,
    encode_sbd_cls_mat,
    fixture_image,
    fixture_label,
)

SIZE = (40, 28)  # (W, H) of the fixture archives' images
SEED = 3


# ----------------------------------------------------------------------------------------------------------
# helpers


def extract(archive: Path, root: Path) -> Path:
    """Plain tarfile extraction, as a user would do by hand (the download flow has its own safe extractor)."""
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return root


def ids(prefix: str, count: int, start: int = 0) -> list[str]:
    return [f"{prefix}_{index:06d}" for index in range(start, start + count)]


@pytest.fixture(scope="module")
def aug_dir(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "voc2012-aug-labels"


@pytest.fixture(scope="module")
def manifest(aug_dir: Path) -> list[dict[str, str]]:
    with open(aug_dir / "MANIFEST.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------------------------------------
# genuine label PNGs


def test_voc_colormap_equals_the_palette_of_genuine_labels(
    aug_dir: Path, manifest: list[dict[str, str]]
) -> None:
    expected = voc_colormap()
    for row in manifest:
        with Image.open(aug_dir / "SegmentationClassAug" / f"{row['id']}.png") as image:
            palette = np.array(image.getpalette(), dtype=np.uint8).reshape(-1, 3)
        assert np.array_equal(palette, expected[: len(palette)]), row["id"]
    # spot values of the bit-interleaved map, independent of the loop above
    assert expected[15].tolist() == [192, 128, 128]  # person
    assert expected[255].tolist() == [224, 224, 192]  # void


def test_genuine_label_pngs_decode_to_their_manifest_values(
    aug_dir: Path, manifest: list[dict[str, str]]
) -> None:
    assert len(manifest) == 50
    for row in manifest:
        path = aug_dir / "SegmentationClassAug" / f"{row['id']}.png"
        assert hashlib.md5(path.read_bytes()).hexdigest() == row["md5"], f"fixture {path} changed"
        label = read_palette_indices(path)
        assert label.dtype == np.uint8
        assert label.shape == (int(row["height"]), int(row["width"]))
        values = sorted(int(value) for value in np.unique(label))
        assert values == [int(value) for value in row["labels"].split()], row["id"]
        if row["group"] in ("voc_train", "voc_val"):
            assert IGNORE_INDEX in values, row["id"]
        else:
            assert row["group"] == "sbd_only"
            assert IGNORE_INDEX not in values, row["id"]


def test_an_rgb_label_is_refused_rather_than_mapped(tmp_path: Path) -> None:
    path = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    with pytest.raises(ValueError, match=r"rgb\.png.*mode 'RGB'"):
        read_palette_indices(path)


def test_palette_png_round_trip_keeps_indices() -> None:
    label = np.arange(256, dtype=np.uint8).reshape(16, 16)
    with Image.open(io.BytesIO(encode_palette_png(label))) as image:
        assert image.mode == "P"
        assert np.array_equal(np.asarray(image), label)


def _write_genuine_trees(root: Path, aug_dir: Path, manifest: list[dict[str, str]]) -> dict[str, np.ndarray]:
    """VOC and SBD trees holding the 50 genuine labels (SBD-only ones re-encoded as GTcls .mat) with
    synthetic JPEGs of the genuine sizes. Returns id -> genuine label."""
    voc = root / "VOCdevkit" / "VOC2012"
    sbd = root / "benchmark_RELEASE" / "dataset"
    for directory in (voc / "JPEGImages", voc / "SegmentationClass", voc / "ImageSets" / "Segmentation",
                      sbd / "img", sbd / "cls"):
        directory.mkdir(parents=True, exist_ok=True)
    genuine: dict[str, np.ndarray] = {}
    groups: dict[str, list[str]] = {"voc_train": [], "voc_val": [], "sbd_only": []}
    for row in manifest:
        image_id, group = row["id"], row["group"]
        source_png = aug_dir / "SegmentationClassAug" / f"{image_id}.png"
        label = read_palette_indices(source_png)
        genuine[image_id] = label
        groups[group].append(image_id)
        jpeg = encode_jpeg(np.full((*label.shape, 3), 128, np.uint8))
        if group == "sbd_only":
            (sbd / "img" / f"{image_id}.jpg").write_bytes(jpeg)
            (sbd / "cls" / f"{image_id}.mat").write_bytes(encode_sbd_cls_mat(label))
        else:
            (voc / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpeg)
            (voc / "SegmentationClass" / f"{image_id}.png").write_bytes(source_png.read_bytes())
    splits = voc / "ImageSets" / "Segmentation"
    (splits / "train.txt").write_text("".join(f"{i}\n" for i in groups["voc_train"]))
    (splits / "val.txt").write_text("".join(f"{i}\n" for i in groups["voc_val"]))
    # SBD lists the SBD-only ids plus two VOC train ids (whose SBD labels must lose to VOC's) and one VOC
    # val id (which must not reach training); their SBD .mat holds a different, 255-free label.
    sbd_extra = groups["voc_train"][:2] + groups["voc_val"][:1]
    for image_id in sbd_extra:
        other = np.where(genuine[image_id] == IGNORE_INDEX, 0, 1).astype(np.uint8)
        (sbd / "img" / f"{image_id}.jpg").write_bytes(encode_jpeg(np.zeros((*other.shape, 3), np.uint8)))
        (sbd / "cls" / f"{image_id}.mat").write_bytes(encode_sbd_cls_mat(other))
    sbd_ids = groups["sbd_only"] + sbd_extra
    (sbd / "train.txt").write_text("".join(f"{i}\n" for i in sbd_ids[::2]))
    (sbd / "val.txt").write_text("".join(f"{i}\n" for i in sbd_ids[1::2]))
    return genuine


def test_genuine_labels_read_through_all_three_sources(
    tmp_path: Path, aug_dir: Path, manifest: list[dict[str, str]]
) -> None:
    genuine = _write_genuine_trees(tmp_path, aug_dir, manifest)
    group_of = {row["id"]: row["group"] for row in manifest}
    size_of = {row["id"]: [int(row["width"]), int(row["height"])] for row in manifest}

    voc = Voc2012(tmp_path)
    for split in ("train", "val"):
        items = voc.list_items(split)
        assert [item.key for item in items] == sorted(i for i, g in group_of.items() if g == f"voc_{split}")
        for item in items:
            sample = voc.load(item)
            assert np.array_equal(sample.label, genuine[item.key])
            assert sample.image.shape == (*genuine[item.key].shape, 3)
            assert sample.metadata == {"source": "voc2012", "split": split, "original_id": item.key,
                                       "original_size": size_of[item.key]}

    aug = Voc2012Aug(tmp_path)
    train = aug.list_items("train")
    expected_train = sorted(i for i, g in group_of.items() if g != "voc_val")
    assert [item.key for item in train] == expected_train
    for item in train:
        sample = aug.load(item)
        # VOC's label wins for the VOC train ids that SBD also lists; SBD-only ids come from the .mat
        assert np.array_equal(sample.label, genuine[item.key]), item.key
        expected_origin = "sbd" if group_of[item.key] == "sbd_only" else "voc"
        assert sample.metadata["label_origin"] == expected_origin
        assert sample.metadata["original_size"] == size_of[item.key]
    assert [item.key for item in aug.list_items("val")] == sorted(
        i for i, g in group_of.items() if g == "voc_val"
    )


# ----------------------------------------------------------------------------------------------------------
# the 10582-image composition from the genuine list


def test_trainaug_composition_reproduces_the_genuine_10582_list(tmp_path: Path, aug_dir: Path) -> None:
    genuine = read_id_list(aug_dir / "train.txt")
    voc_train = read_id_list(aug_dir / "derived" / "voc2012_seg_train_DERIVED.txt")
    voc_val = read_id_list(aug_dir / "derived" / "voc2012_seg_val_DERIVED.txt")
    assert (len(genuine), len(voc_train), len(voc_val)) == (10582, 1464, 1449)
    # SBD lists that, like the real ones, overlap VOC train and contain VOC val images
    sbd_all = sorted(set(genuine) - set(voc_train)) + voc_train[::3] + voc_val[::2]
    sbd_val = [i for i in sbd_all if zlib.crc32(i.encode()) % 4 == 0]
    sbd_train = [i for i in sbd_all if zlib.crc32(i.encode()) % 4 != 0]
    assert set(voc_val) & set(sbd_val) and set(voc_val) & set(sbd_train)

    assert compose_train_ids(voc_train, voc_val, sbd_train, sbd_val) == sorted(genuine)

    # the same through the source, from list files in the real layout (listing opens no image)
    split_dir = tmp_path / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    sbd_dir = tmp_path / "benchmark_RELEASE" / "dataset"
    split_dir.mkdir(parents=True)
    sbd_dir.mkdir(parents=True)
    for path, listed in ((split_dir / "train.txt", voc_train), (split_dir / "val.txt", voc_val),
                         (sbd_dir / "train.txt", sbd_train), (sbd_dir / "val.txt", sbd_val)):
        path.write_text("\n".join(listed) + "\n")
    aug = get_source("voc2012_aug", tmp_path)
    train = aug.list_items("train")
    assert [item.key for item in train] == sorted(genuine)
    assert len(aug.list_items("val")) == 1449
    voc_set = set(voc_train)
    for item in train:
        expected_label = "SegmentationClass" if item.key in voc_set else "cls"
        assert Path(item.paths[1]).parent.name == expected_label
    voc = get_source("voc2012", tmp_path)
    assert (len(voc.list_items("train")), len(voc.list_items("val"))) == (1464, 1449)


# ----------------------------------------------------------------------------------------------------------
# fixture archives in the real layouts

VOC_TRAIN = ids("2007", 6)
VOC_VAL = ids("2007", 4, start=100)
VOC_EXTRA = ids("2011", 2)  # JPEGs without segmentation labels, as VOC has thousands
SBD_TRAIN = ids("2008", 4) + VOC_TRAIN[:2]
SBD_VAL = ids("2008", 3, start=50) + VOC_VAL[:1]


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    served = tmp_path_factory.mktemp("served")
    voc = build_voc2012_tar(served, VOC_TRAIN, VOC_VAL, SIZE, SEED, extra_image_ids=VOC_EXTRA)
    sbd = build_sbd_tgz(served, SBD_TRAIN, SBD_VAL, SIZE, SEED)
    return {"voc": voc, "sbd": sbd}


@pytest.fixture(scope="module")
def extracted(archives: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """voc2012 and sbd in their own roots, and voc2012_aug with both archives in one root."""
    aug_root = tmp_path_factory.mktemp("voc2012_aug")
    extract(archives["voc"], aug_root)
    extract(archives["sbd"], aug_root)
    return {
        "voc2012": extract(archives["voc"], tmp_path_factory.mktemp("voc2012")),
        "sbd": extract(archives["sbd"], tmp_path_factory.mktemp("sbd")),
        "voc2012_aug": aug_root,
    }


def test_archives_have_the_real_names_and_layouts(archives: dict[str, Path]) -> None:
    assert archives["voc"].name == VOC_TAR_NAME == Voc2012.archives[0].filename
    assert archives["sbd"].name == SBD_TGZ_NAME == Sbd.archives[0].filename
    assert Voc2012Aug.archives == Voc2012.archives + Sbd.archives
    with tarfile.open(archives["voc"]) as tar:
        names = set(tar.getnames())
    devkit = "VOCdevkit/VOC2012"
    assert {f"{devkit}/ImageSets/Segmentation/{s}.txt" for s in ("train", "val", "trainval")} <= names
    assert sum(n.startswith(f"{devkit}/JPEGImages/") and n.endswith(".jpg") for n in names) == len(
        VOC_TRAIN + VOC_VAL + VOC_EXTRA
    )
    assert sum(n.startswith(f"{devkit}/SegmentationClass/") and n.endswith(".png") for n in names) == len(
        VOC_TRAIN + VOC_VAL
    )
    with tarfile.open(archives["sbd"], "r:gz") as tar:
        names = set(tar.getnames())
    assert {"benchmark_RELEASE/dataset/train.txt", "benchmark_RELEASE/dataset/val.txt"} <= names
    assert sum(n.startswith("benchmark_RELEASE/dataset/cls/") and n.endswith(".mat") for n in names) == len(
        set(SBD_TRAIN + SBD_VAL)
    )


def test_archive_bytes_depend_only_on_the_arguments(tmp_path: Path, archives: dict[str, Path]) -> None:
    again = build_voc2012_tar(tmp_path / "a", VOC_TRAIN, VOC_VAL, SIZE, SEED, extra_image_ids=VOC_EXTRA)
    assert again.read_bytes() == archives["voc"].read_bytes()
    sbd_again = build_sbd_tgz(tmp_path / "a", SBD_TRAIN, SBD_VAL, SIZE, SEED)
    assert sbd_again.read_bytes() == archives["sbd"].read_bytes()
    other_seed = build_sbd_tgz(tmp_path / "b", SBD_TRAIN, SBD_VAL, SIZE, SEED + 1)
    assert file_digests(other_seed)["sha256"] != file_digests(archives["sbd"])["sha256"]


def test_voc2012_reads_the_extracted_tar(extracted: dict[str, Path]) -> None:
    voc = get_source("voc2012", extracted["voc2012"])
    assert voc.num_classes == 21 and voc.class_names == VOC_CLASS_NAMES
    for split, expected in (("train", VOC_TRAIN), ("val", VOC_VAL)):
        items = voc.list_items(split)
        assert [item.key for item in items] == sorted(expected)
        for item in items:
            sample = voc.load(item)
            assert sample.label.dtype == np.uint8 and sample.image.dtype == np.uint8
            assert np.array_equal(sample.label, fixture_label(item.key, SIZE, SEED, "voc"))
            assert IGNORE_INDEX in sample.label  # the void band survives decoding
            error = np.abs(sample.image.astype(int) - fixture_image(item.key, SIZE, SEED, "voc")).mean()
            assert error < 6, (item.key, error)
            assert sample.metadata == {"source": "voc2012", "split": split, "original_id": item.key,
                                       "original_size": list(SIZE)}


def test_sbd_reads_the_extracted_tgz(extracted: dict[str, Path]) -> None:
    sbd = get_source("sbd", extracted["sbd"])
    for split, expected in (("train", SBD_TRAIN), ("val", SBD_VAL)):
        items = sbd.list_items(split)
        assert [item.key for item in items] == sorted(expected)
        for item in items:
            sample = sbd.load(item)
            label = fixture_label(item.key, SIZE, SEED, "sbd")
            assert np.array_equal(sample.label, label)
            assert IGNORE_INDEX not in sample.label
            assert sample.image.shape == (SIZE[1], SIZE[0], 3)
            # the .mat has the real struct layout, readable the documented way
            contents = scipy.io.loadmat(item.paths[1])
            assert np.array_equal(contents["GTcls"][0]["Segmentation"][0], label)
            present = contents["GTcls"][0]["CategoriesPresent"][0].ravel().tolist()
            assert present == sorted(set(np.unique(label).tolist()) - {0})
            assert contents["GTcls"][0]["Boundaries"][0].shape == (20, 1)


def test_voc2012_aug_composes_and_prefers_voc_labels(extracted: dict[str, Path]) -> None:
    aug = get_source("voc2012_aug", extracted["voc2012_aug"])
    train = aug.list_items("train")
    expected = sorted((set(VOC_TRAIN) | set(SBD_TRAIN) | set(SBD_VAL)) - set(VOC_VAL))
    assert [item.key for item in train] == expected
    assert VOC_VAL[0] in SBD_VAL and VOC_VAL[0] not in {item.key for item in train}
    for item in train:
        sample = aug.load(item)
        origin = "voc" if item.key in VOC_TRAIN else "sbd"
        assert sample.metadata["label_origin"] == origin
        assert np.array_equal(sample.label, fixture_label(item.key, SIZE, SEED, origin)), item.key
        assert (IGNORE_INDEX in sample.label) == (origin == "voc")
    assert [item.key for item in aug.list_items("val")] == sorted(VOC_VAL)

    # the same from the separately extracted voc2012 and sbd trees
    reused = get_source("voc2012_aug", extracted["voc2012_aug"] / "unused",
                        voc_root=extracted["voc2012"], sbd_root=extracted["sbd"])
    assert [item.key for item in reused.list_items("train")] == [item.key for item in train]


# ----------------------------------------------------------------------------------------------------------
# bad data: SampleError naming the key and the file


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    served = tmp_path_factory.mktemp("damaged")
    train = ids("2007", 5)
    voc = build_voc2012_tar(served, train, [], SIZE, SEED, corrupt_image_ids={train[0]},
                            missized_label_ids={train[1]}, missing_image_ids={train[2]},
                            missing_label_ids={train[3]})
    sbd = build_sbd_tgz(served, train, [], SIZE, SEED, corrupt_image_ids={train[0]},
                        missized_label_ids={train[1]}, missing_image_ids={train[2]},
                        missing_label_ids={train[3]})
    return {"voc2012": extract(voc, served / "voc"), "sbd": extract(sbd, served / "sbd")}


@pytest.mark.parametrize("name", ["voc2012", "sbd"])
def test_bad_inputs_raise_sample_error_with_key_and_file(name: str, damaged: dict[str, Path]) -> None:
    source = get_source(name, damaged[name])
    items = {item.key: item for item in source.list_items("train")}
    corrupt, missized, no_image, no_label, good = sorted(items)
    image_file, label_file = (Path(p).name for p in items[missized].paths)
    expectations = {
        corrupt: rf"^{corrupt}: cannot decode image .*{corrupt}\.jpg",
        missized: rf"^{missized}: label .*{label_file} is 39x27 \(WxH\) but image .*{image_file} is 40x28",
        no_image: rf"^{no_image}: missing file .*{no_image}\.jpg",
        no_label: rf"^{no_label}: missing file .*{no_label}\.(png|mat)",
    }
    for key, pattern in expectations.items():
        with pytest.raises(SampleError, match=pattern) as raised:
            source.load(items[key])
        assert raised.value.key == key
    assert source.load(items[good]).key == good


def test_out_of_range_label_values_are_sample_errors(tmp_path: Path, extracted: dict[str, Path]) -> None:
    voc = Voc2012(extracted["voc2012"])
    item = voc.list_items("train")[0]
    label = fixture_label(item.key, SIZE, SEED, "voc")
    label[0, :3] = [21, 40, 254]
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(encode_palette_png(label))
    bad_item = type(item)(key=item.key, split=item.split, paths=(item.paths[0], str(bad_png)),
                          original_id=item.original_id)
    with pytest.raises(SampleError, match=rf"^{item.key}: label .*bad\.png has values \[21, 40, 254\]"):
        voc.load(bad_item)


def test_a_damaged_mat_file_is_a_sample_error(tmp_path: Path, extracted: dict[str, Path]) -> None:
    sbd = Sbd(extracted["sbd"])
    item = sbd.list_items("val")[0]
    broken = tmp_path / "broken.mat"
    broken.write_bytes(Path(item.paths[1]).read_bytes()[:200])
    with pytest.raises(ValueError, match="broken.mat"):
        read_sbd_segmentation(broken)
    bad_item = type(item)(key=item.key, split=item.split, paths=(item.paths[0], str(broken)),
                          original_id=item.original_id)
    with pytest.raises(SampleError, match=rf"^{item.key}: cannot decode label .*broken\.mat"):
        sbd.load(bad_item)
    no_struct = tmp_path / "no_struct.mat"
    scipy.io.savemat(no_struct, {"Segmentation": np.zeros((2, 2), np.uint8)})
    with pytest.raises(ValueError, match="no 'GTcls' struct"):
        read_sbd_segmentation(no_struct)


# ----------------------------------------------------------------------------------------------------------
# missing trees and bad lists


def test_missing_trees_name_the_file_and_the_download_stage(
    tmp_path: Path, extracted: dict[str, Path]
) -> None:
    with pytest.raises(FileNotFoundError, match=r"VOCdevkit/VOC2012/ImageSets/Segmentation/train\.txt.*"
                                                r"dvc repro download@voc2012`"):
        Voc2012(tmp_path).list_items("train")
    with pytest.raises(FileNotFoundError, match=r"dataset/val\.txt.*dvc repro download@sbd`"):
        Sbd(tmp_path).list_items("val")
    # voc2012_aug with only the VOC tree: the SBD list is named, with the aug stage
    with pytest.raises(FileNotFoundError, match=r"dataset/train\.txt.*download@voc2012_aug`"):
        Voc2012Aug(extracted["voc2012"]).list_items("train")
    # ... and with the sbd stage when the SBD tree was meant to come from it
    with pytest.raises(FileNotFoundError, match=r"benchmark_RELEASE/dataset/train\.txt.*download@sbd`"):
        Voc2012Aug(tmp_path, voc_root=extracted["voc2012"], sbd_root=tmp_path).list_items("train")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        Voc2012(extracted["voc2012"]).list_items("test")


def test_split_lists_with_unsafe_or_repeated_ids_are_refused(tmp_path: Path) -> None:
    listed = tmp_path / "train.txt"
    listed.write_text("2007_000032\n\n2007_000033 \n")
    assert read_id_list(listed) == ["2007_000032", "2007_000033"]
    listed.write_text("2007_000032\n2007_000032\n")
    with pytest.raises(ValueError, match=r"train\.txt: id '2007_000032' is listed twice"):
        read_id_list(listed)
    listed.write_text("2007_000032.jpg\n")
    with pytest.raises(ValueError, match=r"train\.txt: id '2007_000032\.jpg' cannot be a sample key"):
        read_id_list(listed)
