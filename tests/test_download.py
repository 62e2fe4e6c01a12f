"""semcolor.data.download against a local Range-capable HTTP server (offline)."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from semcolor.data.download import ChecksumError, DownloadError, download, file_digests, mirror_url, sidecar_path
from tests.http_server import http_server  # noqa: F401, F811  (a pytest fixture)

PAYLOAD = os.urandom(3 * 65536 + 123)  # not a multiple of the chunk size on purpose
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()
CHUNK = 4096


@pytest.fixture
def served(http_server):
    (http_server.directory / "archive.tar").write_bytes(PAYLOAD)
    return http_server


def test_fresh_download_verifies_and_leaves_no_part(served, tmp_path):
    dest = tmp_path / "raw" / "archive.tar"
    result = download(served.url("archive.tar"), dest, sha256=SHA256, md5=MD5, size=len(PAYLOAD),
                      chunk_size=CHUNK, progress=False)
    assert result == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("archive.tar.part").exists()
    cached = json.loads(sidecar_path(dest).read_text())
    assert cached["digests"] == {"sha256": SHA256, "md5": MD5}
    assert cached["size"] == len(PAYLOAD)


def test_interrupted_transfer_resumes_with_range(served, tmp_path):
    dest = tmp_path / "archive.tar"
    cut = 100_000
    served.cut_after["archive.tar"] = cut
    with pytest.raises(DownloadError, match="resumes"):
        download(served.url("archive.tar"), dest, sha256=SHA256, chunk_size=CHUNK, progress=False)
    part = dest.with_name("archive.tar.part")
    assert part.stat().st_size == cut and not dest.exists()

    download(served.url("archive.tar"), dest, sha256=SHA256, chunk_size=CHUNK, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert served.range_requests("archive.tar") == [f"bytes={cut}-"]
    assert served.request_count("archive.tar") == 2
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(served, tmp_path):
    dest = tmp_path / "archive.tar"
    part = dest.with_name("archive.tar.part")
    part.write_bytes(b"garbage that is not a prefix")
    served.ignore_range = True
    download(served.url("archive.tar"), dest, sha256=SHA256, chunk_size=CHUNK, progress=False)
    assert served.range_requests("archive.tar") == ["bytes=28-"]  # asked, got a 200, started over
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_answered_416_is_verified_without_refetching(served, tmp_path):
    dest = tmp_path / "archive.tar"
    dest.with_name("archive.tar.part").write_bytes(PAYLOAD)
    download(served.url("archive.tar"), dest, sha256=SHA256, chunk_size=CHUNK, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert served.requests == [("archive.tar", f"bytes={len(PAYLOAD)}-")]


def test_part_longer_than_file_is_discarded(served, tmp_path):
    dest = tmp_path / "archive.tar"
    dest.with_name("archive.tar.part").write_bytes(PAYLOAD + b"extra")
    download(served.url("archive.tar"), dest, sha256=SHA256, chunk_size=CHUNK, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert served.request_count("archive.tar") == 2  # 416, then a fresh GET without Range
    assert served.requests[-1] == ("archive.tar", None)


def test_checksum_mismatch_raises_and_leaves_nothing(served, tmp_path):
    dest = tmp_path / "archive.tar"
    served.wrong_body["archive.tar"] = b"x" * len(PAYLOAD)
    with pytest.raises(ChecksumError) as caught:
        download(served.url("archive.tar"), dest, sha256=SHA256, chunk_size=CHUNK, progress=False)
    message = str(caught.value)
    wrong = hashlib.sha256(b"x" * len(PAYLOAD)).hexdigest()
    assert "archive.tar" in message and SHA256 in message and wrong in message
    assert caught.value.expected == SHA256 and caught.value.actual == wrong
    assert sorted(p.name for p in tmp_path.iterdir()) == ["served"]  # no dest, no .part, no sidecar


def test_md5_only_mismatch_is_detected(served, tmp_path):
    dest = tmp_path / "archive.tar"
    with pytest.raises(ChecksumError, match="md5 mismatch"):
        download(served.url("archive.tar"), dest, md5="0" * 32, chunk_size=CHUNK, progress=False)
    assert not dest.exists() and not dest.with_name("archive.tar.part").exists()


def test_size_mismatch_raises(served, tmp_path):
    dest = tmp_path / "archive.tar"
    with pytest.raises(ChecksumError, match="size mismatch"):
        download(served.url("archive.tar"), dest, sha256=SHA256, size=len(PAYLOAD) + 1, progress=False)
    assert not dest.exists()


def test_verified_file_is_skipped_without_request_or_rehash(served, tmp_path, monkeypatch):
    dest = tmp_path / "archive.tar"
    download(served.url("archive.tar"), dest, sha256=SHA256, progress=False)
    assert served.request_count() == 1

    import hashlib as real_hashlib

    def no_hashing(*args, **kwargs):
        raise AssertionError("a verified file was hashed again")

    monkeypatch.setattr(real_hashlib, "new", no_hashing)
    assert download(served.url("archive.tar"), dest, sha256=SHA256, progress=False) == dest
    assert served.request_count() == 1


def test_changed_file_is_rehashed_and_a_wrong_one_refused(served, tmp_path):
    dest = tmp_path / "archive.tar"
    download(served.url("archive.tar"), dest, sha256=SHA256, progress=False)
    dest.write_bytes(b"tampered")  # new size and mtime: the cached digest no longer applies
    with pytest.raises(ChecksumError, match="delete .*archive.tar to download it again"):
        download(served.url("archive.tar"), dest, sha256=SHA256, progress=False)
    assert served.request_count() == 1


def test_checksum_record_is_written_then_enforced(served, tmp_path):
    record = tmp_path / "raw" / "checksums.json"
    dest = tmp_path / "raw" / "archive.tar"
    download(served.url("archive.tar"), dest, checksum_record=record, progress=False)
    assert json.loads(record.read_text()) == {"archive.tar": SHA256}

    # the server now publishes other bytes: a re-download must fail against the record
    dest.unlink()
    sidecar_path(dest).unlink()
    (served.directory / "archive.tar").write_bytes(PAYLOAD[::-1])
    with pytest.raises(ChecksumError, match=f"recorded in {record}.*expected {SHA256}"):
        download(served.url("archive.tar"), dest, checksum_record=record, progress=False)
    assert not dest.exists() and not dest.with_name("archive.tar.part").exists()
    assert json.loads(record.read_text()) == {"archive.tar": SHA256}  # the record is not overwritten


def test_record_keeps_other_entries(served, tmp_path):
    record = tmp_path / "checksums.json"
    record.write_text(json.dumps({"other.zip": "ab" * 32}))
    download(served.url("archive.tar"), tmp_path / "archive.tar", checksum_record=record, progress=False)
    assert json.loads(record.read_text()) == {"archive.tar": SHA256, "other.zip": "ab" * 32}


def test_a_checksum_is_required(tmp_path):
    with pytest.raises(ValueError, match="archive.tar: no checksum"):
        download("http://127.0.0.1:9/archive.tar", tmp_path / "archive.tar", progress=False)


def test_mirror_replaces_the_url_by_mirror_and_file_name(served, tmp_path):
    (served.directory / "mirror" / "voc").mkdir(parents=True)
    (served.directory / "mirror" / "voc" / "VOC 2012.tar").write_bytes(PAYLOAD)
    dest = tmp_path / "VOC 2012.tar"
    original = "http://host.invalid/pascal/VOC/voc2012/VOCtrainval.tar"
    mirror = served.base_url + "/mirror/voc/"
    assert mirror_url(original, dest, mirror) == served.base_url + "/mirror/voc/VOC%202012.tar"
    assert mirror_url(original, dest, None) == original
    download(original, dest, sha256=SHA256, mirror=mirror, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert served.requests == [("mirror/voc/VOC 2012.tar", None)]


def test_http_error_is_a_download_error_naming_the_url(served, tmp_path):
    url = served.url("missing.tar")
    with pytest.raises(DownloadError, match=f"{url}: HTTP 404"):
        download(url, tmp_path / "missing.tar", sha256=SHA256, progress=False)


def test_file_digests_uses_and_refreshes_the_cache(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    assert file_digests(path, ("sha256", "md5")) == {"sha256": hashlib.sha256(b"abc").hexdigest(),
                                                      "md5": hashlib.md5(b"abc").hexdigest()}
    path.write_bytes(b"abcd")
    assert file_digests(path)["sha256"] == hashlib.sha256(b"abcd").hexdigest()
