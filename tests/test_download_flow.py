"""pipeline.flows.download: tasks via ``.fn`` and two real flow runs against a local HTTP server."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

import pipeline.flows.download as download_flow
from semcolor.config import ConfigError
from semcolor.data.download import ChecksumError
from semcolor.data.extract import is_extracted, marker_path
from semcolor.data.sources.base import Archive, Source
from tests.http_server import LocalHTTPServer


def tar_bytes(files: dict[str, bytes], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


VOC_TAR = tar_bytes({
    "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt": b"2007_000032\n",
    "VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg": bytes(range(256)) * 300,
})
SBD_TGZ = tar_bytes({"benchmark_RELEASE/dataset/train.txt": b"2008_000002\n"}, "w:gz")
LABELS_ZIP = zip_bytes({"train2017/000000000009.png": b"label"})
NOTES_JSON = b'{"annotations": []}'


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_sources(server: LocalHTTPServer) -> dict[str, type[Source]]:
    """Fake sources in the real shape: URLs on the local server, checksums published or not."""
    for name, data in {"VOCtrainval.tar": VOC_TAR, "benchmark.tgz": SBD_TGZ, "labels.zip": LABELS_ZIP,
                       "notes.json": NOTES_JSON}.items():
        (server.directory / name).write_bytes(data)

    class FakeAug(Source):
        name = "fake_aug"
        archives = (
            Archive(server.url("VOCtrainval.tar"), "VOCtrainval.tar", size=len(VOC_TAR),
                    sha256=sha256(VOC_TAR)),
            Archive(server.url("benchmark.tgz"), "benchmark.tgz", md5=hashlib.md5(SBD_TGZ).hexdigest()),
        )

    class FakeUnpublished(Source):  # no published checksums: recorded on first download
        name = "fake_unpublished"
        archives = (Archive(server.url("labels.zip"), "labels.zip"),
                    Archive(server.url("notes.json"), "notes.json", extract=False))

    return {"fake_aug": FakeAug, "fake_unpublished": FakeUnpublished}


@pytest.fixture
def fake_registry(monkeypatch, http_server):
    sources = make_sources(http_server)
    monkeypatch.setattr(download_flow, "source_class", lambda name: sources[name])
    return sources


# -- tasks through .fn (no Prefect server) -------------------------------------------------------------
def test_download_task_uses_raw_layout_and_records_checksums(http_server, fake_registry, tmp_path):
    raw = tmp_path / "raw"
    zip_archive, json_file = fake_registry["fake_unpublished"].archives
    path = download_flow.download_archive.fn("fake_unpublished", zip_archive, raw, progress=False)
    assert path == raw / "fake_unpublished" / "labels.zip"
    assert path.read_bytes() == LABELS_ZIP
    record = raw / "fake_unpublished" / "checksums.json"
    assert json.loads(record.read_text()) == {"labels.zip": sha256(LABELS_ZIP)}

    separate = tmp_path / "checksums"
    download_flow.download_archive.fn("fake_unpublished", json_file, raw, checksum_dir=separate,
                                      progress=False)
    assert json.loads((separate / "fake_unpublished.json").read_text()) == {"notes.json": sha256(NOTES_JSON)}


def test_download_task_fetches_from_mirror_laid_out_like_raw(http_server, fake_registry, tmp_path):
    mirror_dir = http_server.directory / "mirror" / "fake_aug"
    mirror_dir.mkdir(parents=True)
    (mirror_dir / "VOCtrainval.tar").write_bytes(VOC_TAR)
    archive = fake_registry["fake_aug"].archives[0]
    mirrored = Archive("http://host.invalid/VOC/VOCtrainval_11-May-2012.tar", archive.filename,
                       size=archive.size, sha256=archive.sha256)
    download_flow.download_archive.fn("fake_aug", mirrored, tmp_path / "raw",
                                      mirror=http_server.base_url + "/mirror", progress=False)
    assert http_server.requests == [("mirror/fake_aug/VOCtrainval.tar", None)]
    assert (tmp_path / "raw" / "fake_aug" / "VOCtrainval.tar").read_bytes() == VOC_TAR


def test_extract_task_merges_archives_and_copies_plain_files(http_server, fake_registry, tmp_path):
    raw = tmp_path / "raw"
    files = [download_flow.download_archive.fn("fake_unpublished", a, raw, progress=False)
             for a in fake_registry["fake_unpublished"].archives]
    target = download_flow.extract_source.fn("fake_unpublished", files, [True, False], tmp_path / "ext",
                                             progress=False)
    assert (target / "train2017" / "000000000009.png").read_bytes() == b"label"
    assert (target / "notes.json").read_bytes() == NOTES_JSON
    assert all(is_extracted(f, target) for f in files)


def test_extract_task_rebuilds_a_target_with_a_stale_archive(tmp_path):
    first = tmp_path / "a.tar"
    first.write_bytes(tar_bytes({"top/old.txt": b"old"}))
    target = download_flow.extract_source.fn("s", [first], [True], tmp_path / "ext", progress=False)
    first.write_bytes(tar_bytes({"top/new.txt": b"new"}))  # a new version of the archive
    download_flow.extract_source.fn("s", [first], [True], tmp_path / "ext", progress=False)
    assert sorted(p.name for p in (target / "top").iterdir()) == ["new.txt"]  # nothing left over


def test_generated_source_is_written_then_extracted(tmp_path):
    """The real synthetic world generator, at a tiny size, through the generate and extract tasks."""
    config = {"seed": 3, "num_train": 2, "num_val": 1, "image_size": 64}
    archive = download_flow.generate_archive.fn("synthetic", tmp_path / "raw", config, progress=False)
    assert archive == tmp_path / "raw" / "synthetic" / "semantic_world.tar"
    target = download_flow.extract_source.fn("synthetic", [archive], [True], tmp_path / "ext", progress=False)
    devkit = target / "VOCdevkit" / "VOC2012"
    train = (devkit / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    val = (devkit / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    assert (len(train), len(val)) == (2, 1)
    assert sorted(p.stem for p in (devkit / "JPEGImages").iterdir()) == sorted(train + val)
    assert sorted(p.stem for p in (devkit / "SegmentationClass").iterdir()) == sorted(train + val)

    # Same config: same bytes, so the existing extraction is kept (marker untouched).
    marker = marker_path(archive, target)
    before = marker.stat().st_mtime_ns
    again = download_flow.generate_archive.fn("synthetic", tmp_path / "raw", config, progress=False)
    download_flow.extract_source.fn("synthetic", [again], [True], tmp_path / "ext", progress=False)
    assert marker.stat().st_mtime_ns == before


def test_generated_source_config_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="sources.synthetic.num_trian"):
        download_flow.generate_archive.fn("synthetic", tmp_path / "raw", {"num_trian": 2}, progress=False)


def test_retry_condition_stops_on_checksum_errors():
    class State:
        def __init__(self, data):
            self.data = data

    assert download_flow._retry_unless_permanent(None, None, State(ConnectionResetError()))
    mismatch = ChecksumError(Path("f"), "sha256", "a", "b")
    assert not download_flow._retry_unless_permanent(None, None, State(mismatch))


# -- real flow runs (one temporary Prefect server for the module) ------------------------------------------


@pytest.mark.server
@pytest.mark.slow
def test_flow_end_to_end_with_interruption_and_server_error(prefect_harness, http_server, fake_registry,
                                                            tmp_path):
    raw, extracted = tmp_path / "raw", tmp_path / "extracted"
    http_server.cut_after["VOCtrainval.tar"] = 40_000  # first GET drops mid-transfer: the retry resumes
    http_server.fail_status["benchmark.tgz"] = [503]  # first GET fails outright: the retry succeeds
    result = download_flow.download_sources(
        ["fake_aug", "fake_unpublished"], raw, extracted, retry_delay_seconds=[0.1, 0.1], progress=False)

    assert result == {name: str(extracted / name) for name in ("fake_aug", "fake_unpublished")}
    assert http_server.range_requests("VOCtrainval.tar") == ["bytes=40000-"]
    assert http_server.request_count("benchmark.tgz") == 2
    aug = extracted / "fake_aug"
    assert (aug / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt").read_bytes() == b"2007_000032\n"
    assert (aug / "benchmark_RELEASE/dataset/train.txt").read_bytes() == b"2008_000002\n"
    assert (raw / "fake_aug" / "VOCtrainval.tar").read_bytes() == VOC_TAR
    assert sorted(p.name for p in (raw / "fake_aug").glob("*.part")) == []
    assert json.loads((raw / "fake_unpublished" / "checksums.json").read_text()) == {
        "labels.zip": sha256(LABELS_ZIP), "notes.json": sha256(NOTES_JSON)}
    assert marker_path(raw / "fake_unpublished" / "notes.json", extracted / "fake_unpublished").exists()

    # A second run finds everything verified and extracted: no request, no change.
    requests_before = http_server.request_count()
    marker_before = marker_path(raw / "fake_aug" / "VOCtrainval.tar", aug).stat().st_mtime_ns
    download_flow.download_sources(["fake_aug", "fake_unpublished"], raw, extracted, progress=False)
    assert http_server.request_count() == requests_before
    assert marker_path(raw / "fake_aug" / "VOCtrainval.tar", aug).stat().st_mtime_ns == marker_before


@pytest.mark.server
@pytest.mark.slow
def test_flow_fails_on_checksum_mismatch_without_retrying(prefect_harness, http_server, fake_registry,
                                                          tmp_path):
    http_server.wrong_body["VOCtrainval.tar"] = b"not the archive"
    with pytest.raises(ChecksumError, match="VOCtrainval.tar"):
        download_flow.download_sources(["fake_aug"], tmp_path / "raw", tmp_path / "extracted",
                                       retry_delay_seconds=[0.1, 0.1], progress=False)
    assert http_server.request_count("VOCtrainval.tar") == 1  # permanent error: no retry
    assert not (tmp_path / "raw" / "fake_aug" / "VOCtrainval.tar").exists()
    assert not (tmp_path / "extracted" / "fake_aug").exists()


@pytest.mark.server
@pytest.mark.slow
def test_run_download_entry_uses_the_mirror(prefect_harness, http_server, fake_registry, tmp_path):
    mirror = http_server.directory / "mirror" / "fake_unpublished"
    mirror.mkdir(parents=True)
    for name in ("labels.zip", "notes.json"):
        (mirror / name).write_bytes((http_server.directory / name).read_bytes())
        (http_server.directory / name).unlink()  # only the mirror has the files now
    root = download_flow.run_download("fake_unpublished", tmp_path / "raw", tmp_path / "extracted",
                                      mirror=http_server.base_url + "/mirror", checksum_dir=tmp_path / "sums")
    assert root == tmp_path / "extracted" / "fake_unpublished"
    assert (root / "train2017" / "000000000009.png").read_bytes() == b"label"
    assert sorted(path for path, _ in http_server.requests) == [
        "mirror/fake_unpublished/labels.zip", "mirror/fake_unpublished/notes.json"]
    assert json.loads((tmp_path / "sums" / "fake_unpublished.json").read_text()) == {
        "labels.zip": sha256(LABELS_ZIP), "notes.json": sha256(NOTES_JSON)}


def test_json_labels_add_the_annotation_archives():
    from semcolor.data.sources import source_class

    coco = source_class("coco_stuff164k")
    png = download_flow.archives_for(coco, {"label_source": "png"})
    json_mode = download_flow.archives_for(coco, {"label_source": "json"})
    assert png == tuple(coco.archives)
    assert json_mode[: len(png)] == png and set(json_mode[len(png):]) == set(coco.annotation_archives)
    assert coco.annotation_archives  # the JSON mode does need extra files
