"""semcolor.data.extract: safe, all-or-nothing extraction with per-archive completion markers."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

import semcolor.data.extract as extract_module
from semcolor.data.download import file_digests
from semcolor.data.extract import (
    UnsafeArchiveError,
    archive_kind,
    install_file,
    is_extracted,
    marker_path,
    safe_extract,
)

VOC_FILES = {
    "VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg": b"\xff\xd8 not really a jpeg",
    "VOCdevkit/VOC2012/SegmentationClass/2007_000032.png": b"\x89PNG label",
    "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt": b"2007_000032\n",
}


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, io.BytesIO(data)


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def write_tar(path: Path, members, mode: str = "w") -> Path:
    """``members``: (TarInfo, fileobj or None) pairs, or a name -> bytes mapping."""
    if isinstance(members, dict):
        members = [_file(name, data) for name, data in members.items()]
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            tar.addfile(info, data)
    return path


def write_zip(path: Path, files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name, link in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)  # S_IFLNK | 0777, as `zip --symlinks` records it
            zf.writestr(info, link)
    return path


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_untouched(tmp_path: Path, target: Path, archive: Path) -> None:
    """Nothing of the archive reached the target and no scratch directory is left beside it."""
    assert not marker_path(archive, target).exists()
    assert not is_extracted(archive, target)
    assert not target.exists() or [p for p in target.rglob("*") if p.is_file()] == []
    assert [p.name for p in target.parent.iterdir() if p.name.endswith(".partial")] == []


@pytest.mark.parametrize("suffix, mode", [(".tar", "w"), (".tgz", "w:gz"), (".tar.gz", "w:gz")])
def test_tar_extracts_top_level_dirs_under_target_with_marker(tmp_path, suffix, mode):
    archive = write_tar(tmp_path / f"VOCtrainval{suffix}", VOC_FILES, mode)
    target = tmp_path / "extracted" / "voc2012"
    assert safe_extract(archive, target, progress=False) == target
    files = tree(target)
    marker_name = f"{extract_module.MARKER_DIR}/{archive.name}.json"
    assert files.pop(marker_name)
    assert files == VOC_FILES
    marker = json.loads(marker_path(archive, target).read_text())
    assert marker["archive"] == archive.name
    assert marker["sha256"] == file_digests(archive)["sha256"]
    assert marker["size"] == archive.stat().st_size
    assert marker["top_level"] == ["VOCdevkit"]
    assert is_extracted(archive, target)


def test_zip_extracts_like_tar(tmp_path):
    files = {"images/COCO_train2014_000000000077.jpg": b"jpeg", "imageLists/train.txt": b"x\n"}
    archive = write_zip(tmp_path / "cocostuff-10k-v1.1.zip", files)
    target = tmp_path / "coco"
    safe_extract(archive, target, progress=False)
    got = tree(target)
    got.pop(f".extracted/{archive.name}.json")
    assert got == files


def test_second_call_is_skipped_and_a_changed_archive_is_reextracted(tmp_path, monkeypatch):
    archive = write_tar(tmp_path / "a.tar", {"top/x.txt": b"one"})
    target = tmp_path / "target"
    safe_extract(archive, target, progress=False)
    calls = []
    real = extract_module._extract_tar
    monkeypatch.setattr(extract_module, "_extract_tar", lambda *a: calls.append(a) or real(*a))
    safe_extract(archive, target, progress=False)
    assert calls == []

    write_tar(archive, {"top/x.txt": b"two!"})  # another version of the archive under the same name
    assert not is_extracted(archive, target)
    safe_extract(archive, target, progress=False)
    assert len(calls) == 1
    assert (target / "top" / "x.txt").read_bytes() == b"two!"


def test_target_without_marker_is_extracted_again(tmp_path):
    archive = write_tar(tmp_path / "a.tar", {"top/x.txt": b"good"})
    target = tmp_path / "target"
    safe_extract(archive, target, progress=False)
    # a crash after the files were moved but before the marker was written looks like this:
    marker_path(archive, target).unlink()
    (target / "top" / "x.txt").write_bytes(b"half-written")
    assert not is_extracted(archive, target)
    safe_extract(archive, target, progress=False)
    assert (target / "top" / "x.txt").read_bytes() == b"good"
    assert is_extracted(archive, target)


def test_two_archives_merge_into_one_target(tmp_path):
    voc = write_tar(tmp_path / "VOCtrainval_11-May-2012.tar", VOC_FILES)
    sbd_files = {"benchmark_RELEASE/dataset/train.txt": b"2008_000002\n"}
    sbd = write_tar(tmp_path / "benchmark.tgz", sbd_files, "w:gz")
    labels = write_zip(tmp_path / "labels.zip", {"VOCdevkit/VOC2012/extra.txt": b"shared dir"})
    target = tmp_path / "voc2012_aug"
    for archive in (voc, sbd, labels):
        safe_extract(archive, target, progress=False)
    files = tree(target)
    assert set(VOC_FILES) <= set(files)
    assert files["benchmark_RELEASE/dataset/train.txt"] == b"2008_000002\n"
    assert files["VOCdevkit/VOC2012/extra.txt"] == b"shared dir"
    assert all(is_extracted(a, target) for a in (voc, sbd, labels))


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    return _special(name, tarfile.DIRTYPE)


UNSAFE_TARS = {
    "parent": ([_file("top/ok.txt", b"ok"), _file("../evil", b"x")], "../evil", "'..' component"),
    "nested_parent": ([_file("top/../../evil", b"x")], "top/../../evil", "'..' component"),
    "absolute": ([_file("/tmp/evil", b"x")], "/tmp/evil", "absolute path"),
    "symlink_absolute": ([_special("top/etc", tarfile.SYMTYPE, "/etc")], "top/etc", "absolute path '/etc'"),
    "symlink_escape": ([_special("top/up", tarfile.SYMTYPE, "../../etc")], "top/up", "points outside"),
    "hardlink_absolute": ([_special("top/passwd", tarfile.LNKTYPE, "/etc/passwd")], "top/passwd",
                          "hardlink to the absolute path"),
    "hardlink_escape": ([_special("top/passwd", tarfile.LNKTYPE, "../etc/passwd")], "top/passwd",
                        "points outside"),
    "char_device": ([_special("top/null", tarfile.CHRTYPE)], "top/null", "device file"),
    "block_device": ([_special("top/sda", tarfile.BLKTYPE)], "top/sda", "device file"),
    "fifo": ([_special("top/pipe", tarfile.FIFOTYPE)], "top/pipe", "FIFO"),
    "marker_dir": ([_file(".extracted/other.tar.json", b"{}")], ".extracted/other.tar.json", "markers"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE_TARS))
def test_unsafe_tar_member_is_refused_by_name(tmp_path, case):
    members, member, reason = UNSAFE_TARS[case]
    archive = write_tar(tmp_path / f"{case}.tar", members)
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError) as caught:
        safe_extract(archive, target, progress=False)
    assert caught.value.member == member
    assert f"refusing member {member!r}" in str(caught.value)
    assert reason in str(caught.value)
    assert str(archive) in str(caught.value)
    assert_untouched(tmp_path, target, archive)
    assert not (tmp_path / "evil").exists()


def test_link_inside_target_is_allowed(tmp_path):
    members = [_file("top/data/a.txt", b"A"), _special("top/link", tarfile.SYMTYPE, "data/a.txt"),
               _special("top/hard", tarfile.LNKTYPE, "top/data/a.txt")]
    archive = write_tar(tmp_path / "links.tar", members)
    target = tmp_path / "target"
    safe_extract(archive, target, progress=False)
    assert (target / "top" / "link").is_symlink()
    assert (target / "top" / "link").read_bytes() == b"A"
    assert (target / "top" / "hard").read_bytes() == b"A"


def test_symlink_to_its_own_directory_is_allowed(tmp_path):
    members = [_dir("top"), _special("top/dir", tarfile.SYMTYPE, "."), _file("top/dir/x.txt", b"x")]
    archive = write_tar(tmp_path / "inner.tar", members)
    target = tmp_path / "target"
    safe_extract(archive, target, progress=False)
    assert (target / "top" / "x.txt").read_bytes() == b"x"


def test_symlink_chain_escaping_through_an_earlier_link_is_refused(tmp_path):
    # Each link alone looks inside by its name ("top/a" -> ".." is the root, "top/a/b" -> ".." looks like
    # "top"), but top/a/b really is the root's parent; the data filter resolves the earlier link.
    members = [_dir("top"), _special("top/a", tarfile.SYMTYPE, ".."),
               _special("top/a/b", tarfile.SYMTYPE, ".."), _file("top/a/b/evil.txt", b"x")]
    archive = write_tar(tmp_path / "chain.tar", members)
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError) as caught:
        safe_extract(archive, target, progress=False)
    assert caught.value.member == "top/a/b"
    assert_untouched(tmp_path, target, archive)
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize(
    "files, symlinks, member, reason",
    [
        ({"ok.txt": b"ok", "../evil.txt": b"x"}, None, "../evil.txt", "'..' component"),
        ({"..\\evil.txt": b"x"}, None, "..\\evil.txt", "'..' component"),
        ({"/abs/evil.txt": b"x"}, None, "/abs/evil.txt", "absolute path"),
        ({"C:/evil.txt": b"x"}, None, "C:/evil.txt", "absolute path"),
        ({}, {"link": "/etc/passwd"}, "link", "symlink"),
    ],
)
def test_unsafe_zip_member_is_refused_by_name(tmp_path, files, symlinks, member, reason):
    archive = write_zip(tmp_path / "bad.zip", files, symlinks)
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError) as caught:
        safe_extract(archive, target, progress=False)
    assert caught.value.member == member
    assert reason in str(caught.value)
    assert_untouched(tmp_path, target, archive)


def test_truncated_archive_leaves_no_marker_and_no_files(tmp_path):
    good = write_tar(tmp_path / "good.tgz", {f"top/{i}.bin": bytes([i]) * 50_000 for i in range(6)}, "w:gz")
    archive = tmp_path / "archive.tgz"
    data = good.read_bytes()
    archive.write_bytes(data[: len(data) * 2 // 3])  # an interrupted copy: valid start, missing end
    target = tmp_path / "target"
    with pytest.raises((tarfile.TarError, EOFError, OSError)):
        safe_extract(archive, target, progress=False)
    assert_untouched(tmp_path, target, archive)

    archive.write_bytes(data)  # the complete file extracts normally afterwards
    safe_extract(archive, target, progress=False)
    assert is_extracted(archive, target)
    assert len(list((target / "top").iterdir())) == 6


def test_error_midway_keeps_an_earlier_complete_archive_intact(tmp_path):
    first = write_tar(tmp_path / "first.tar", {"first/a.txt": b"a"})
    bad = write_tar(tmp_path / "bad.tar", [_file("second/b.txt", b"b"), _file("../evil", b"x")])
    target = tmp_path / "target"
    safe_extract(first, target, progress=False)
    with pytest.raises(UnsafeArchiveError):
        safe_extract(bad, target, progress=False)
    assert is_extracted(first, target) and not is_extracted(bad, target)
    assert not (target / "second").exists()


def test_stale_scratch_directory_is_replaced(tmp_path):
    archive = write_tar(tmp_path / "a.tar", {"top/x.txt": b"x"})
    target = tmp_path / "target"
    stale = tmp_path / ".target.a.tar.partial" / "top"
    stale.mkdir(parents=True)
    (stale / "leftover.txt").write_bytes(b"from a killed run")
    safe_extract(archive, target, progress=False)
    assert not (target / "top" / "leftover.txt").exists()
    assert not (tmp_path / ".target.a.tar.partial").exists()


def test_archive_kind_by_name_then_content(tmp_path):
    tar = write_tar(tmp_path / "noext", {"a": b"a"})
    zipped = write_zip(tmp_path / "noext2", {"a": b"a"})
    assert archive_kind(tar) == "tar" and archive_kind(zipped) == "zip"
    assert archive_kind(tmp_path / "x.tar.gz") == "tar" and archive_kind(tmp_path / "y.ZIP") == "zip"
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt: not a tar or zip archive"):
        safe_extract(text, tmp_path / "target", progress=False)


def test_install_file_copies_with_marker(tmp_path):
    source = tmp_path / "trainval_merged.json"
    source.write_text('{"a": 1}')
    target = tmp_path / "target"
    copy = install_file(source, target)
    assert copy == target / "trainval_merged.json" and copy.read_text() == '{"a": 1}'
    assert is_extracted(source, target)
    source.write_text('{"a": 2}')
    assert install_file(source, target).read_text() == '{"a": 2}'


def test_crash_while_moving_into_place_leaves_no_marker(tmp_path, monkeypatch):
    archive = write_tar(tmp_path / "a.tar", {"top/x.txt": b"x", "second/y.txt": b"y"})
    target = tmp_path / "target"
    real_replace = extract_module.os.replace
    moved = []

    def replace_once_then_fail(source, destination):
        if moved:
            raise OSError("disk full")
        moved.append(destination)
        real_replace(source, destination)

    monkeypatch.setattr(extract_module.os, "replace", replace_once_then_fail)
    with pytest.raises(OSError, match="disk full"):
        safe_extract(archive, target, progress=False)
    monkeypatch.undo()
    assert len(moved) == 1 and not marker_path(archive, target).exists() and not is_extracted(archive, target)
    safe_extract(archive, target, progress=False)  # the next run completes it
    assert (target / "top" / "x.txt").read_bytes() == b"x" and (target / "second" / "y.txt").read_bytes() == b"y"
