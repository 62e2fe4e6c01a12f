"""Every real source, end to end through the real flows (issue 2, section 8).

For each source a small fixture archive set is built in the exact layout of the real release
(``tests/archive_builders``), served from a Range-capable HTTP server on 127.0.0.1 under
``<mirror>/<source>/<file name>``, and pushed through:

1. ``download_sources`` (Prefect flow, real run): download via the mirror, verify (the source's archive
   list is patched to carry the fixture's digests of the same kinds the real release publishes; unpublished
   ones stay ``None`` so the first download is recorded in the checksum record), extract (markers);
2. ``run_shards`` (Prefect flow, process-pool task runner) at 128 px;
3. checks on the result: per-split counts against the fixture's ids, bad inputs (a corrupt JPEG in every
   source, a mis-sized label, a missing label file) listed in the manifest's ``skipped`` with their reason,
   the class list, label values equal to the nearest-resized fixture labels, and the pixel-level Lab round
   trip: the shard's Lab8 codes are exactly ``rgb8_to_lab8`` of the resized decoded JPEG, their decoded Lab is
   within the codec's quantization of scikit-image's Lab of the same pixels, and close to the Lab of the
   fixture's pixels before JPEG coding; finally stock ``webdataset.WebDataset`` reads the same samples.

``coco_stuff164k`` runs twice: with the published PNG label maps (its default archive list) and with
``label_source="json"``, for which the flow downloads the two annotation zips too (they are appended to the
archive list here: the flow itself downloads only ``archives``, not ``annotation_archives``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import webdataset
from PIL import Image
from skimage.color import rgb2lab

from pipeline.flows.download import checksum_record_path, download_sources
from pipeline.flows.shards import run_shards
from semcolor.color import decode_lab8, rgb8_to_lab8
from semcolor.data.extract import is_extracted, marker_path
from semcolor.data.shard_settings import ShardSettings
from semcolor.data.shard_reader import read_shard_samples
from semcolor.data.shards import resize_sample
from semcolor.data.sources import source_class
from semcolor.data.sources.pascal_context import context459_to_59
from tests.archive_builders import coco, file_digests, pascal_context, voc

pytestmark = [
    pytest.mark.slow,
    pytest.mark.server,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]

SIZE = 128
SEED = 0
# Lab8 quantization: L step 100/255, a/b step 1; half a step, plus float noise.
HALF_STEP = np.array([100.0 / 255.0 / 2.0, 0.5, 0.5]) + 1e-3
# Median Lab distance (CIE76) allowed between the shard and the fixture's pixels *before* JPEG coding: JPEG
# (quality 92, 4:2:0 chroma) on these tiny noisy images measures 1.7-3.6; another image, a swapped channel
# order or a wrong color space is tens of units off.
MAX_MEDIAN_JPEG_DELTA_E = 6.0
MAX_SKIPPED_FRACTION = 0.5

CORRUPT_JPEG = r"cannot decode image .*{key}\.jpg"
MISSIZED_LABEL = r"label .*{key}\..* is \d+x\d+ \(WxH\) but image .* is \d+x\d+"
MISSING_FILE = r"missing file .*{key}\."


@dataclasses.dataclass(frozen=True)
class Expected:
    """One sample the shards must hold: where its JPEG is in the served archives, its pixels before JPEG
    coding, its full-resolution class-index label (uint8, 255 ignore) and metadata facts."""

    key: str
    image_archive: str  # file name of the served archive holding the JPEG
    image_member: str  # the JPEG's member name in it
    fixture_rgb: np.ndarray  # uint8 (H, W, 3), before JPEG coding
    label: np.ndarray  # uint8 (H, W)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Case:
    """A source's fixture: built archives (file name -> path), expected samples and skips per split."""

    source: str
    archives: dict[str, Path]
    samples: dict[str, list[Expected]]
    skipped: dict[str, dict[str, str]]  # split -> key -> regex the manifest's reason must match
    num_classes: int
    source_options: dict[str, Any] | None = None
    download_annotation_archives: bool = False


# ------------------------------------------------------------------------------------------------ VOC / SBD

VOC_TRAIN = ("2007_000032", "2007_000039", "2007_000063")
VOC_VAL = ("2007_000033", "2007_000042")
VOC_EXTRA = ("2007_000027",)  # a JPEG without a segmentation label: in the tar, never an item
VOC_CORRUPT = "2007_000039"
SBD_TRAIN = ("2007_000032", "2008_000002", "2008_000003")  # 2007_000032: labelled by VOC too
SBD_VAL = ("2007_000033", "2008_000007")  # 2007_000033 is VOC val: never in the aug train set
SBD_CORRUPT = "2008_000003"
VOC_SIZE = (48, 32)  # (W, H)


def _voc_expected(image_id: str, origin: str, archive: str, **metadata: Any) -> Expected:
    member = (
        f"{voc.VOC_DEVKIT}/JPEGImages/{image_id}.jpg"
        if origin == "voc"
        else f"{voc.SBD_DATASET}/img/{image_id}.jpg"
    )
    return Expected(
        key=image_id,
        image_archive=archive,
        image_member=member,
        fixture_rgb=voc.fixture_image(image_id, VOC_SIZE, SEED, origin),
        label=voc.fixture_label(image_id, VOC_SIZE, SEED, origin),
        metadata=metadata,
    )


def _build_voc(dest: Path) -> Path:
    return voc.build_voc2012_tar(
        dest, VOC_TRAIN, VOC_VAL, VOC_SIZE, SEED, extra_image_ids=VOC_EXTRA, corrupt_image_ids={VOC_CORRUPT}
    )


def _build_sbd(dest: Path) -> Path:
    return voc.build_sbd_tgz(dest, SBD_TRAIN, SBD_VAL, VOC_SIZE, SEED, corrupt_image_ids={SBD_CORRUPT})


def case_voc2012(dest: Path) -> Case:
    tar = _build_voc(dest)
    samples = {
        split: [_voc_expected(i, "voc", tar.name) for i in sorted(ids) if i != VOC_CORRUPT]
        for split, ids in (("train", VOC_TRAIN), ("val", VOC_VAL))
    }
    skipped = {"train": {VOC_CORRUPT: CORRUPT_JPEG}, "val": {}}
    return Case("voc2012", {tar.name: tar}, samples, skipped, num_classes=21)


def case_sbd(dest: Path) -> Case:
    tgz = _build_sbd(dest)
    samples = {
        split: [_voc_expected(i, "sbd", tgz.name) for i in sorted(ids) if i != SBD_CORRUPT]
        for split, ids in (("train", SBD_TRAIN), ("val", SBD_VAL))
    }
    skipped = {"train": {SBD_CORRUPT: CORRUPT_JPEG}, "val": {}}
    return Case("sbd", {tgz.name: tgz}, samples, skipped, num_classes=21)


def case_voc2012_aug(dest: Path) -> Case:
    tar, tgz = _build_voc(dest), _build_sbd(dest)
    # The composition written out by hand, not computed by the code under test:
    # VOC train + SBD train + SBD val - VOC val; VOC labels win where both releases label an id.
    train_origins = {
        "2007_000032": "voc",  # in VOC train and SBD train: VOC's label (with its 255 band)
        "2007_000063": "voc",
        "2008_000002": "sbd",
        "2008_000007": "sbd",  # from SBD val
    }
    samples = {
        "train": [
            _voc_expected(i, origin, tar.name if origin == "voc" else tgz.name, label_origin=origin)
            for i, origin in sorted(train_origins.items())
        ],
        "val": [_voc_expected(i, "voc", tar.name, label_origin="voc") for i in sorted(VOC_VAL)],
    }
    skipped = {"train": {VOC_CORRUPT: CORRUPT_JPEG, SBD_CORRUPT: CORRUPT_JPEG}, "val": {}}
    return Case("voc2012_aug", {tar.name: tar, tgz.name: tgz}, samples, skipped, num_classes=21)


# ------------------------------------------------------------------------------------------------ COCO-stuff

COCO10K_TRAIN = ("COCO_train2014_000000000077", "COCO_train2014_000000000109", "COCO_train2014_000000000149")
COCO10K_TEST = ("COCO_train2014_000000000009", "COCO_train2014_000000000025")
COCO10K_CORRUPT = "COCO_train2014_000000000109"
COCO10K_MISSIZED = "COCO_train2014_000000000025"
COCO_SIZE = (24, 32)  # (H, W)


def case_coco_stuff10k(dest: Path) -> Case:
    archive = coco.build_coco_stuff10k_zip(
        dest, COCO10K_TRAIN, COCO10K_TEST, COCO_SIZE, SEED,
        corrupt_image_ids={COCO10K_CORRUPT}, missized_label_ids={COCO10K_MISSIZED},
    )

    def expected(image_id: str) -> Expected:
        ids = coco.coco_stuff10k_fixture_ids(image_id, COCO_SIZE, SEED).astype(np.int32)
        label = np.where(ids == 0, 255, ids - 1).astype(np.uint8)  # .mat S: id k -> index k-1, 0 -> 255
        return Expected(image_id, archive.name, f"images/{image_id}.jpg",
                        coco.fixture_image(image_id, COCO_SIZE, SEED), label)

    bad = {COCO10K_CORRUPT, COCO10K_MISSIZED}
    samples = {
        split: [expected(i) for i in sorted(ids) if i not in bad]
        for split, ids in (("train", COCO10K_TRAIN), ("val", COCO10K_TEST))  # val = imageLists/test.txt
    }
    skipped = {"train": {COCO10K_CORRUPT: CORRUPT_JPEG}, "val": {COCO10K_MISSIZED: MISSIZED_LABEL}}
    return Case("coco_stuff10k", {archive.name: archive}, samples, skipped, num_classes=182)


COCO164K_TRAIN = (9, 25, 30)
COCO164K_VAL = (139, 285)
COCO164K_CORRUPT = 30


def _case_coco_stuff164k(dest: Path, json_labels: bool) -> Case:
    archives = coco.build_coco_stuff164k_zips(
        dest, COCO164K_TRAIN, COCO164K_VAL, COCO_SIZE, SEED, corrupt_image_ids={COCO164K_CORRUPT}
    )

    def expected(split: str, image_id: int) -> Expected:
        key = f"{image_id:012d}"
        first = image_id == COCO164K_TRAIN[0]
        label = coco.coco_stuff164k_fixture_labels(image_id, COCO_SIZE, SEED, first=first)
        return Expected(key, f"{split}2017.zip", f"{split}2017/{key}.jpg",
                        coco.fixture_image(image_id, COCO_SIZE, SEED), label)

    samples = {
        split: [expected(split, i) for i in sorted(ids) if i != COCO164K_CORRUPT]
        for split, ids in (("train", COCO164K_TRAIN), ("val", COCO164K_VAL))
    }
    skipped = {"train": {f"{COCO164K_CORRUPT:012d}": CORRUPT_JPEG}, "val": {}}
    return Case(
        "coco_stuff164k", archives, samples, skipped, num_classes=182,
        source_options={"label_source": "json"} if json_labels else None,
        download_annotation_archives=json_labels,
    )


def case_coco_stuff164k(dest: Path) -> Case:
    return _case_coco_stuff164k(dest, json_labels=False)


def case_coco_stuff164k_json(dest: Path) -> Case:
    return _case_coco_stuff164k(dest, json_labels=True)


# ------------------------------------------------------------------------------------------- PASCAL-Context

CONTEXT_TRAIN = ("2008_000002", "2008_000003", "2008_000007")
CONTEXT_VAL = ("2008_000009", "2008_000016")
CONTEXT_CORRUPT = "2008_000003"
CONTEXT_UNLABELLED = "2008_000016"  # listed, JPEG present, no .mat
CONTEXT_SIZE = (20, 32)  # (H, W)


def case_pascal_context(dest: Path) -> Case:
    archives = pascal_context.build_pascal_context_archives(
        dest, CONTEXT_TRAIN, CONTEXT_VAL, CONTEXT_SIZE, SEED,
        unlabelled_ids={CONTEXT_UNLABELLED}, corrupt_image_ids={CONTEXT_CORRUPT},
    )

    def expected(image_id: str) -> Expected:
        label_map = pascal_context.pascal_context_fixture_label_map(image_id, CONTEXT_SIZE, SEED)
        member = f"VOCdevkit/VOC2010/JPEGImages/{image_id}.jpg"
        return Expected(image_id, "VOCtrainval_03-May-2010.tar", member,
                        coco.fixture_image(image_id, CONTEXT_SIZE, SEED), context459_to_59(label_map))

    # The 459 -> 59 mapping is the source's own (tested on its own); pin it here on the known band, by name.
    names = source_class("pascal_context").class_names
    by_name = {"aeroplane": 2, "diningtable": 397, "bedcloth": 19, "clothes": 80, "wood": 458, "person": 284}
    band = expected(CONTEXT_TRAIN[0]).label[0]
    block = CONTEXT_SIZE[1] // len(pascal_context.KNOWN_BAND)
    for position, full_id in enumerate(pascal_context.KNOWN_BAND):
        name = next((n for n, i in by_name.items() if i == full_id), None)
        assert band[position * block] == (names.index(name) if name else 0), (full_id, name)

    bad = {CONTEXT_CORRUPT, CONTEXT_UNLABELLED}
    samples = {
        split: [expected(i) for i in sorted(ids) if i not in bad]
        for split, ids in (("train", CONTEXT_TRAIN), ("val", CONTEXT_VAL))
    }
    skipped = {"train": {CONTEXT_CORRUPT: CORRUPT_JPEG}, "val": {CONTEXT_UNLABELLED: MISSING_FILE}}
    return Case("pascal_context", archives, samples, skipped, num_classes=60)


CASES: dict[str, Callable[[Path], Case]] = {
    "voc2012": case_voc2012,
    "sbd": case_sbd,
    "voc2012_aug": case_voc2012_aug,
    "coco_stuff10k": case_coco_stuff10k,
    "coco_stuff164k": case_coco_stuff164k,
    "coco_stuff164k-json": case_coco_stuff164k_json,
    "pascal_context": case_pascal_context,
}


# -------------------------------------------------------------------------------------------------- helpers


def archive_member(path: Path, member: str) -> bytes:
    """The bytes of ``member`` in a tar/tgz or zip, read with the standard library (not the project's
    extraction code)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return archive.read(member)
    with tarfile.open(path) as archive:
        extracted = archive.extractfile(member)
        assert extracted is not None, f"{member} is not a file in {path}"
        return extracted.read()


def decode_jpeg(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def patch_archives(monkeypatch: pytest.MonkeyPatch, case: Case) -> dict[str, dict[str, Any]]:
    """Give the source class the fixture's digests, of the kinds the real release publishes, and the
    fixture's size where the real one is known; returns file name -> {"published", "digests"}."""
    cls = source_class(case.source)
    archives = tuple(cls.archives)
    if case.download_annotation_archives:
        archives += tuple(cls.annotation_archives)
    listed = {a.filename for a in archives}
    assert listed <= set(case.archives), f"the fixture lacks {sorted(listed - set(case.archives))}"
    patched, facts = [], {}
    for archive in archives:
        digests = file_digests(case.archives[archive.filename])
        published = bool(archive.sha256 or archive.md5)
        patched.append(dataclasses.replace(
            archive,
            sha256=digests["sha256"] if archive.sha256 else None,
            md5=digests["md5"] if archive.md5 else None,
            size=digests["size"] if archive.size is not None else None,
        ))
        facts[archive.filename] = {"published": published, "digests": digests, "archive": patched[-1]}
    monkeypatch.setattr(cls, "archives", tuple(patched))
    return facts


def check_lab_round_trip(lab8: np.ndarray, expected: Expected, decoded: np.ndarray, where: str) -> None:
    """The stored Lab8 codes against the decoded JPEG and the fixture's pixels (see the module doc)."""
    resized, _ = resize_sample(decoded, np.zeros(decoded.shape[:2], np.uint8), SIZE)
    assert lab8.shape == (SIZE, SIZE, 3) and lab8.dtype == np.uint8, where
    np.testing.assert_array_equal(lab8, rgb8_to_lab8(np.ascontiguousarray(resized)), err_msg=where)
    stored_lab = decode_lab8(lab8)
    reference_lab = rgb2lab(resized.astype(np.float64) / 255.0)  # scikit-image: D65, 2 degrees
    error = np.abs(stored_lab - reference_lab).reshape(-1, 3).max(axis=0)
    assert np.all(error <= HALF_STEP), f"{where}: Lab8 round-trip error {error} beyond half a code step"
    fixture_resized, _ = resize_sample(expected.fixture_rgb, np.zeros(expected.label.shape, np.uint8), SIZE)
    delta_e = np.linalg.norm(stored_lab - rgb2lab(fixture_resized.astype(np.float64) / 255.0), axis=-1)
    median = float(np.median(delta_e))
    assert median < MAX_MEDIAN_JPEG_DELTA_E, f"{where}: median dE {median:.2f} from the fixture's pixels"


# ---------------------------------------------------------------------------------------------------- test


@pytest.mark.parametrize("case_name", list(CASES))
def test_source_round_trip_through_the_real_flows(
    case_name: str, prefect_harness, http_server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source_dir = "coco_stuff164k" if case_name.startswith("coco_stuff164k") else case_name
    served = http_server.directory / source_dir  # the mirror layout: <mirror>/<source>/<file name>
    case = CASES[case_name](served)
    source = case.source
    facts = patch_archives(monkeypatch, case)
    cls = source_class(source)

    # ---- download, verify, extract (one real flow run, through the mirror)
    raw, extracted, checksums = tmp_path / "raw", tmp_path / "extracted", tmp_path / "checksums"
    result = download_sources(
        [source], raw, extracted, mirror=http_server.base_url, checksum_dir=checksums, progress=False
    )
    root = extracted / source
    assert result == {source: str(root)}
    record = json.loads(checksum_record_path(source, raw, checksums).read_text())
    for filename in set(case.archives) - set(facts):  # built but not listed: the json-only annotation zips
        assert http_server.request_count(f"{source}/{filename}") == 0, filename
        assert not (raw / source / filename).exists(), filename
    for filename, fact in facts.items():
        served_path = case.archives[filename]
        assert http_server.request_count(f"{source}/{filename}") >= 1, f"{filename} not fetched from mirror"
        downloaded = raw / source / filename
        assert downloaded.read_bytes() == served_path.read_bytes(), filename
        assert not downloaded.with_name(filename + ".part").exists()
        sidecar = json.loads(downloaded.with_name(filename + ".verified.json").read_text())
        assert sidecar["digests"]["sha256"] == fact["digests"]["sha256"], filename
        if fact["archive"].md5:
            assert sidecar["digests"]["md5"] == fact["digests"]["md5"], filename
        if not fact["published"]:  # nothing published: the first download is recorded, then verified against
            assert record[filename] == fact["digests"]["sha256"], filename
        if filename in record:
            assert record[filename] == hashlib.sha256(served_path.read_bytes()).hexdigest()
        assert marker_path(downloaded, root).is_file() and is_extracted(downloaded, root), filename

    # ---- convert (one real flow run, process-pool task runner)
    manifest_path = run_shards(
        source, root, tmp_path / "shards", SIZE, workers=1, chunk_size=2,
        settings=ShardSettings(samples_per_shard=2, max_skipped_fraction=MAX_SKIPPED_FRACTION), progress=False,
        source_options=case.source_options,
    )
    assert manifest_path == tmp_path / "shards" / source / str(SIZE) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["source"] == source
    assert manifest["class_names"] == list(cls.class_names)
    assert len(manifest["class_names"]) == case.num_classes
    assert manifest["ignore_index"] == 255 and manifest["stored_size"] == [SIZE, SIZE]
    assert sorted(manifest["splits"]) == sorted(case.samples)
    if case.source_options:
        assert manifest["source_description"]["label_source"] == case.source_options["label_source"]

    for split, expected_samples in case.samples.items():
        entry = manifest["splits"][split]
        expected_keys = [e.key for e in expected_samples]
        assert entry["samples"] == len(expected_keys), split
        assert entry["items"] == len(expected_keys) + len(case.skipped[split]), split
        skipped = {s["key"]: s["reason"] for s in entry["skipped"]}
        assert sorted(skipped) == sorted(case.skipped[split]), split
        for key, pattern in case.skipped[split].items():
            assert re.search(pattern.format(key=re.escape(key)), skipped[key]), (key, skipped[key])

        # every shard is listed with its count and hash; together they hold the expected keys in order
        shard_paths = [manifest_path.parent / s["file"] for s in entry["shards"]]
        read_back = []
        for shard, path in zip(entry["shards"], shard_paths, strict=True):
            assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"], path.name
            samples = list(read_shard_samples(path))
            assert len(samples) == shard["samples"], path.name
            read_back.extend(samples)
        assert [s.key for s in read_back] == expected_keys, split

        for stored, expected in zip(read_back, expected_samples, strict=True):
            where = f"{source} {split} {expected.key}"
            height, width = expected.label.shape
            assert stored.metadata["source"] == source and stored.metadata["split"] == split, where
            assert stored.metadata["original_id"] == expected.key, where
            assert stored.metadata["original_size"] == [width, height], where
            assert stored.metadata["stored_size"] == [SIZE, SIZE], where
            for name, value in expected.metadata.items():
                assert stored.metadata[name] == value, (where, name)
            # labels: exactly the nearest-resized fixture label (255 kept, no invented value)
            jpeg = archive_member(case.archives[expected.image_archive], expected.image_member)
            decoded = decode_jpeg(jpeg)
            assert decoded.shape[:2] == expected.label.shape, where
            _, expected_label = resize_sample(decoded, expected.label, SIZE)
            np.testing.assert_array_equal(stored.label, expected_label, err_msg=where)
            values = set(np.unique(stored.label).tolist())
            assert values <= set(range(case.num_classes)) | {255}, (where, values)
            check_lab_round_trip(stored.lab8, expected, decoded, where)

        # stock webdataset reads the same samples, members intact
        dataset = webdataset.WebDataset([str(p) for p in shard_paths], shardshuffle=False)
        wds_samples = list(dataset)
        assert [s["__key__"] for s in wds_samples] == expected_keys, split
        for sample in wds_samples:
            assert {"json", "lab.npy", "seg.png"} <= set(sample), sample["__key__"]
            assert json.loads(sample["json"])["original_id"] == sample["__key__"]
