"""Safe, all-or-nothing extraction of downloaded archives (.tar, .tar.gz/.tgz/.tar.bz2/.tar.xz, .zip).

Safety: every member is checked before it is written. Absolute paths, ``..`` components, symbolic or hard
links that point outside the target, device files, FIFOs and sockets raise ``UnsafeArchiveError`` naming
the archive and the member. tar members are additionally extracted with Python's ``filter="data"`` as a
second line of defence.

Layout: the archive's own top-level entries land directly under ``target`` (``VOCtrainval_11-May-2012.tar``
extracted into ``data/extracted/voc2012`` gives ``data/extracted/voc2012/VOCdevkit/VOC2012/...``). Several
archives may be extracted into one target (VOC tar + SBD tgz for ``voc2012_aug``, COCO images + label maps):
their trees are merged, directories shared, a later file replacing an earlier one of the same path.

Completeness: an archive is extracted into a scratch directory beside the target
(``.<target name>.<archive name>.partial``), its entries are then moved into the target, and only then is
the archive's marker ``target/.extracted/<archive name>.json`` (name, size, sha256) written. An archive
without a matching marker is never treated as extracted: ``safe_extract`` does it again. A crash or an
unsafe member therefore leaves no marker; the scratch directory is removed on error (or at the next run).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

from tqdm import tqdm

from semcolor.atomic import copy_file_atomic, write_json_atomic
from semcolor.download import file_digests
from semcolor.errors import UnsafeArchiveError

MARKER_DIR = ".extracted"  # under the target; one JSON marker per extracted archive
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def marker_path(archive: str | Path, target: str | Path) -> Path:
    """The completion marker of ``archive`` inside ``target``."""
    return Path(target) / MARKER_DIR / f"{Path(archive).name}.json"


def is_extracted(archive: str | Path, target: str | Path) -> bool:
    """True when ``target`` holds a complete extraction of this very archive (name, size and sha256)."""
    archive = Path(archive)
    try:
        marker = json.loads(marker_path(archive, target).read_text())
    except (OSError, ValueError):
        return False
    if marker.get("archive") != archive.name or marker.get("size") != archive.stat().st_size:
        return False
    return marker.get("sha256") == file_digests(archive)["sha256"]


def safe_extract(archive: str | Path, target: str | Path, *, progress: bool = True) -> Path:
    """Extract ``archive`` into ``target`` (created if needed) unless already done; return ``target``.

    Raises ``UnsafeArchiveError`` (naming the member) before anything reaches ``target``, ``ValueError``
    for an unknown archive format (see ``archive_kind``), and ``tarfile``/``zipfile`` errors for a
    truncated or corrupt archive.
    In every failure case the archive's marker is absent, so the extraction is redone next time.
    """
    archive, target = Path(archive), Path(target)
    if is_extracted(archive, target):
        return target
    marker = marker_path(archive, target)
    marker.unlink(missing_ok=True)  # stale marker of another version of this archive
    scratch = target.parent / f".{target.name}.{archive.name}.partial"
    _remove(scratch)  # left over by a killed run
    scratch.mkdir(parents=True)
    try:
        kind = archive_kind(archive)
        members = (_extract_zip if kind == "zip" else _extract_tar)(archive, scratch, progress)
        top_level = sorted(entry.name for entry in scratch.iterdir())
        _merge_into(scratch, target)
    finally:
        _remove(scratch)
    record = {"archive": archive.name, "size": archive.stat().st_size,
              "sha256": file_digests(archive)["sha256"], "members": members, "top_level": top_level}
    _write_marker(marker, record)  # last: its presence means "complete"
    return target


def install_file(file: str | Path, target: str | Path) -> Path:
    """Copy a file that is used as it is (``Archive.extract = False``) to ``target/<name>``, with the same
    marker protocol as ``safe_extract``; return the copy's path."""
    file, target = Path(file), Path(target)
    destination = target / file.name
    if is_extracted(file, target) and destination.is_file():
        return destination
    marker = marker_path(file, target)
    marker.unlink(missing_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    copy_file_atomic(file, destination)
    _write_marker(marker, {"archive": file.name, "size": file.stat().st_size,
                           "sha256": file_digests(file)["sha256"], "members": 1, "top_level": [file.name]})
    return destination


# -- member checks ------------------------------------------------------------------------------------
def check_member_name(archive: Path, name: str) -> str:
    """The member's normalized relative POSIX path; UnsafeArchiveError if absolute or containing ``..``."""
    posix = name.replace("\\", "/")  # an archive made on Windows may use backslashes as separators
    if posix.startswith("/") or _WINDOWS_DRIVE.match(posix):
        raise UnsafeArchiveError(archive, name, "absolute path")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(archive, name, "path with a '..' component")
    if parts and parts[0] == MARKER_DIR:
        raise UnsafeArchiveError(archive, name, f"collides with the extraction markers in {MARKER_DIR}/")
    return "/".join(parts)


def _check_link(archive: Path, name: str, link: str, *, relative_to_member: bool, kind: str) -> None:
    posix = link.replace("\\", "/")
    if posix.startswith("/") or _WINDOWS_DRIVE.match(posix):
        raise UnsafeArchiveError(archive, name, f"{kind} to the absolute path {link!r}")
    base = posixpath.dirname(check_member_name(archive, name)) if relative_to_member else ""
    resolved = posixpath.normpath(posixpath.join(base, posix))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(archive, name, f"{kind} to {link!r} points outside the target")


def _check_tar_member(archive: Path, member: tarfile.TarInfo) -> None:
    check_member_name(archive, member.name)
    if member.issym():
        _check_link(archive, member.name, member.linkname, relative_to_member=True, kind="symlink")
    elif member.islnk():  # hard link names are relative to the archive root
        _check_link(archive, member.name, member.linkname, relative_to_member=False, kind="hardlink")
    elif member.ischr() or member.isblk():
        raise UnsafeArchiveError(archive, member.name, "device file")
    elif member.isfifo():
        raise UnsafeArchiveError(archive, member.name, "FIFO (named pipe)")
    elif not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(archive, member.name, f"unsupported member type {member.type!r}")


def _check_zip_member(archive: Path, info: zipfile.ZipInfo) -> None:
    check_member_name(archive, info.filename)
    mode = info.external_attr >> 16  # unix mode bits, when the archiver recorded them
    if stat.S_ISLNK(mode):
        # zipfile would write the link target as the content of a regular file: refuse links altogether
        raise UnsafeArchiveError(archive, info.filename, "symlink (not supported in zip archives)")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise UnsafeArchiveError(archive, info.filename, "device file")
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        raise UnsafeArchiveError(archive, info.filename, "FIFO or socket")


# -- extraction ---------------------------------------------------------------------------------------
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def archive_kind(archive: Path) -> str:
    """"zip" or "tar", from the file name, else from the content; ValueError for anything else.

    The name comes first because content sniffing is ambiguous: ``zipfile.is_zipfile`` looks for a zip
    directory near the end of the file, which a tar ending with a zip member can contain."""
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    if zipfile.is_zipfile(archive):
        return "zip"
    try:
        if tarfile.is_tarfile(archive):
            return "tar"
    except OSError:
        pass
    raise ValueError(f"{archive}: not a tar or zip archive (by name or content); cannot extract it")


def _extract_tar(archive: Path, scratch: Path, progress: bool) -> int:
    """Stream the tar (one pass, even when compressed), checking each member before writing it."""
    count = 0
    with open(archive, "rb") as raw, tqdm(total=archive.stat().st_size, unit="B", unit_scale=True,
                                          unit_divisor=1024, desc=f"extract {archive.name}",
                                          disable=not progress, leave=False) as bar:
        # Default 10 KiB reads on purpose: measured, a 1 MiB bufsize made stream extraction 2-3x slower
        # (tarfile's stream re-slices its buffer on every read).
        with tarfile.open(fileobj=_ProgressReader(raw, bar), mode="r|*") as tar:
            for member in tar:
                _check_tar_member(archive, member)
                try:
                    tar.extract(member, scratch, filter="data")
                except tarfile.FilterError as error:  # e.g. a path that escapes through an earlier symlink
                    raise UnsafeArchiveError(archive, member.name, str(error)) from error
                count += 1
    return count


def _extract_zip(archive: Path, scratch: Path, progress: bool) -> int:
    """Check every member from the central directory first, then extract them one by one."""
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _check_zip_member(archive, info)
        with tqdm(total=sum(i.file_size for i in infos), unit="B", unit_scale=True, unit_divisor=1024,
                  desc=f"extract {archive.name}", disable=not progress, leave=False) as bar:
            for info in infos:
                zf.extract(info, scratch)
                bar.update(info.file_size)
    return len(infos)


class _ProgressReader:
    """A read-only file wrapper that advances a progress bar by the compressed bytes consumed."""

    def __init__(self, raw: BinaryIO, bar: tqdm):
        self._raw = raw
        self._bar = bar

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._bar.update(len(data))
        return data


def _merge_into(source: Path, destination: Path) -> None:
    """Move the tree ``source`` into ``destination``: renames where possible, merging shared directories."""
    destination.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        existing = destination / entry.name
        entry_is_dir = entry.is_dir() and not entry.is_symlink()
        if entry_is_dir and existing.is_dir() and not existing.is_symlink():
            _merge_into(entry, existing)
            continue
        _remove(existing)
        os.replace(entry, existing)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _write_marker(marker: Path, record: dict[str, Any]) -> None:
    write_json_atomic(marker, record)
