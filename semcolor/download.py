"""Resumable, checksum-verified downloads over HTTP(S) (stdlib urllib, no Prefect).

``download`` is the one helper every source archive goes through:

* bytes stream into ``<dest>.part``; an interrupted transfer is resumed with ``Range: bytes=N-``
  (a server that ignores Range and answers 200 restarts the file from byte 0; 416 means the part file
  is already whole, or is longer than the file and is discarded);
* the file is renamed to ``dest`` only after its size and checksum match, so a file at ``dest`` is always
  a verified one; a mismatch removes the ``.part`` and raises ``ChecksumError``;
* a verified file is skipped on later calls without re-hashing: its digests are cached in a sidecar
  ``<dest>.verified.json`` keyed by the file's size and mtime (a 2 GB archive is hashed once);
* archives without a published checksum are verified against a *checksum record*, a JSON file mapping
  file name -> sha256 (``data/raw/<source>/checksums.json``): the first download records its sha256,
  every later download must match it;
* ``mirror``: a base URL that replaces the whole original URL by ``<mirror>/<dest file name>``; a copy
  of ``data/raw/<source>/`` served over HTTP is therefore a valid mirror for that source.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from semcolor.atomic import write_json_atomic
from semcolor.errors import DownloadError

USER_AGENT = "semcolor-download/0.1"
DEFAULT_CHUNK_SIZE = 1 << 20  # bytes per read; 1 MiB keeps the progress bar smooth and syscalls few
DEFAULT_TIMEOUT = 60.0  # seconds without any byte from the server before giving up on a connection
_RECORD_LOCK = threading.Lock()  # download tasks of one source may run in threads and share a record


class ChecksumError(DownloadError):
    """The downloaded (or existing) file does not have the expected size or digest."""

    def __init__(self, path: Path, algorithm: str, expected: str, actual: str, hint: str = ""):
        message = f"{path}: {algorithm} mismatch: expected {expected}, got {actual}"
        super().__init__(message + (f". {hint}" if hint else ""))
        self.path = path
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual


def mirror_url(url: str, dest: Path, mirror: str | None) -> str:
    """The URL actually fetched: ``url`` itself, or ``<mirror>/<dest.name>`` when a mirror is set.

    The mirror rule is deliberately flat (the original scheme, host and path are all dropped) so that a
    mirror is simply a directory of archives under their ``data/raw`` file names."""
    if not mirror:
        return url
    return mirror.rstrip("/") + "/" + urllib.parse.quote(dest.name)


def download(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    checksum_record: str | Path | None = None,
    mirror: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Fetch ``url`` to ``dest`` unless a verified copy is already there; return ``dest``.

    ``sha256``/``md5``: published hex digests (either or both). ``size``: expected size in bytes.
    ``checksum_record``: JSON file name -> sha256 used when nothing is published (recorded on first
    download, verified afterwards); at least one of ``sha256``, ``md5``, ``checksum_record`` is required.
    ``timeout``: seconds of network silence tolerated. Raises ``ChecksumError`` on a digest or size
    mismatch (nothing is left at ``dest`` nor in ``.part``) and ``DownloadError`` on a failed or
    incomplete transfer (the ``.part`` is kept and the next call resumes it).
    """
    dest = Path(dest)
    record_path = Path(checksum_record) if checksum_record is not None else None
    if not (sha256 or md5 or record_path):
        raise ValueError(f"{dest.name}: no checksum to verify against; pass sha256, md5 or checksum_record")
    recorded = _read_record(record_path).get(dest.name) if record_path else None
    expected = {"sha256": (sha256 or recorded), "md5": md5}
    expected = {k: v.lower() for k, v in expected.items() if v}

    algorithms = tuple(sorted(set(expected) | {"sha256"}))  # sha256 always: the sidecar and record use it

    if dest.exists():  # only ever put there after verification, but the expected digests may have changed
        digests = file_digests(dest, algorithms)
        _verify(dest, dest.stat().st_size, digests, expected, size, recorded_in=record_path,
                hint=f"delete {dest} to download it again")
        if record_path and recorded is None:
            _record(record_path, dest.name, digests["sha256"])
        return dest

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    fetched_url = mirror_url(url, dest, mirror)
    digests, total = _fetch(fetched_url, part, size, algorithms, chunk_size, progress, timeout)
    try:
        _verify(part, total, digests, expected, size, recorded_in=record_path,
                hint=f"the download from {fetched_url} was removed; retry, or check the URL")
    except ChecksumError:
        part.unlink(missing_ok=True)  # a wrong file must never look complete, nor be resumed
        raise
    os.replace(part, dest)
    _write_sidecar(dest, digests)
    if record_path and recorded is None:
        _record(record_path, dest.name, digests["sha256"])
    return dest


def file_digests(path: str | Path, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of ``path`` for the hashlib ``algorithms``, cached in ``<path>.verified.json``.

    The cache is trusted only while the file's size and mtime (ns) are those recorded beside the digests;
    missing algorithms are computed (one read of the file for all of them) and added to the cache."""
    path = Path(path)
    stat = path.stat()
    cached = _read_sidecar(path, stat)
    missing = [a for a in algorithms if a not in cached]
    if missing:
        hashers = _new_hashers(tuple(missing), prefix=path)
        cached.update({a: h.hexdigest() for a, h in hashers.items()})
        _write_sidecar(path, cached)
    return {a: cached[a] for a in algorithms}


def sidecar_path(path: Path) -> Path:
    """Where the verified digests of ``path`` are cached."""
    return path.with_name(path.name + ".verified.json")


def _fetch(
    url: str, part: Path, size: int | None, algorithms: tuple[str, ...], chunk_size: int, progress: bool,
    timeout: float,
) -> tuple[dict[str, str], int]:
    """Stream ``url`` into ``part``, resuming what is there; return (digests of the whole file, size)."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()  # longer than the file can be: not a prefix of it
        offset = 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            total = _total_from_content_range(error.headers.get("Content-Range"))
            error.close()
            if total == offset:  # the part file already holds every byte: only verification is left
                return {a: h.hexdigest() for a, h in _new_hashers(algorithms, prefix=part).items()}, offset
            part.unlink()  # the part does not fit the file on the server: start over
            return _fetch(url, part, size, algorithms, chunk_size, progress, timeout)
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(f"{url}: {getattr(error, 'reason', error)}") from error

    with response:
        if offset and response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"), url)
            if start != offset:
                raise DownloadError(f"{url}: asked for bytes from {offset}, server sent from {start}")
            mode = "ab"
        else:  # 200: either a fresh download or a server that ignores Range, so restart from byte 0
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
        if total is None:
            total = size
        # resuming: the digests must cover the bytes already on disk too
        hashers = _new_hashers(algorithms, prefix=part if mode == "ab" else None)
        received = offset
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.name.removesuffix(".part"), disable=not progress, leave=False)
        try:
            with open(part, mode) as handle:
                while True:
                    try:
                        chunk = response.read(chunk_size)
                    except (OSError, ValueError) as error:  # reset, timeout, IncompleteRead
                        raise DownloadError(
                            f"{url}: transfer interrupted after {received} bytes ({error}); "
                            f"{part} is kept and the next attempt resumes it") from error
                    if not chunk:
                        break
                    handle.write(chunk)
                    for hasher in hashers.values():
                        hasher.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()
    if total is not None and received < total:
        raise DownloadError(f"{url}: connection closed after {received} of {total} bytes; "
                            f"{part} is kept and the next attempt resumes it")
    return {a: h.hexdigest() for a, h in hashers.items()}, received


def _verify(
    path: Path, actual_size: int, digests: Mapping[str, str], expected: Mapping[str, str], size: int | None,
    recorded_in: Path | None, hint: str,
) -> None:
    if size is not None and actual_size != size:
        raise ChecksumError(path, "size", f"{size} bytes", f"{actual_size} bytes", hint)
    for algorithm, want in expected.items():
        if digests[algorithm] != want:
            source = f" (recorded in {recorded_in})" if recorded_in and algorithm == "sha256" else ""
            raise ChecksumError(path, algorithm + source, want, digests[algorithm], hint)


def _new_hashers(algorithms: tuple[str, ...], prefix: Path | None = None) -> dict[str, Any]:
    """hashlib objects for ``algorithms``, already fed with the content of ``prefix`` when given."""
    hashers = {a: hashlib.new(a) for a in algorithms}
    if prefix is not None:
        with open(prefix, "rb") as handle:
            while chunk := handle.read(DEFAULT_CHUNK_SIZE):
                for hasher in hashers.values():
                    hasher.update(chunk)
    return hashers


def _parse_content_range(value: str | None, url: str) -> tuple[int, int | None]:
    """``bytes START-END/TOTAL`` -> (START, TOTAL or None when the server sends ``*``)."""
    try:
        unit, _, spec = (value or "").partition(" ")
        span, _, total = spec.partition("/")
        if unit != "bytes":
            raise ValueError(value)
        return int(span.split("-")[0]), (None if total == "*" else int(total))
    except ValueError as error:
        raise DownloadError(f"{url}: unreadable Content-Range header {value!r}") from error


def _total_from_content_range(value: str | None) -> int | None:
    """``bytes */TOTAL`` (sent with 416) -> TOTAL, or None."""
    try:
        return int((value or "").rpartition("/")[2])
    except ValueError:
        return None


def _read_sidecar(path: Path, stat: os.stat_result) -> dict[str, str]:
    try:
        data = json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError):
        return {}
    if data.get("size") != stat.st_size or data.get("mtime_ns") != stat.st_mtime_ns:
        return {}  # the file changed since it was hashed
    return {k: v for k, v in data.get("digests", {}).items() if isinstance(v, str)}


def _write_sidecar(path: Path, digests: Mapping[str, str]) -> None:
    stat = path.stat()
    data = {"file": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "digests": dict(digests)}
    write_json_atomic(sidecar_path(path), data)


def _read_record(record: Path) -> dict[str, str]:
    try:
        data = json.loads(record.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as error:
        raise ValueError(f"{record}: not a valid checksum record (JSON file name -> sha256): {error}; "
                         "fix or delete it") from error
    if not isinstance(data, dict):
        raise ValueError(f"{record}: a checksum record must be a JSON object (file name -> sha256)")
    return data


def _record(record: Path, name: str, sha256: str) -> None:
    """Add ``name -> sha256`` to the record (read-modify-write under a lock, atomic replace)."""
    with _RECORD_LOCK:
        data = _read_record(record)
        data[name] = sha256
        write_json_atomic(record, dict(sorted(data.items())))
