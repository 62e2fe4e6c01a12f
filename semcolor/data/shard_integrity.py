"""Shard integrity: every shard a stage reads is checked against its ``manifest.json`` first.

``verify_split(shard_dir, split)`` reads each shard of the split once, computing its sha256 and counting its
samples (distinct keys, in the same pass), and compares both with the manifest; the split's sample total must
equal the sum over its shards. A mismatch raises ``ShardIntegrityError`` naming the shard, what differs and,
when a sample's member no longer decodes (a flipped byte in a PNG or JSON member, a tar cut short), that
sample's key and member - then says how to restore the shards. There is no skip policy: a shard that is not
the one the manifest describes is never read, since the manifest hash every run records (and DVC's record)
would then describe data the stage did not see.

Verification is remembered: a shard whose path, size and modification time (ns) are unchanged since it was
verified against the same manifest sha256 is not read again, so reruns stay fast. The record lives outside
the shard directory (a DVC output, which must not change): ``$SEMCOLOR_CACHE_DIR`` or
``$XDG_CACHE_HOME/semcolor`` or ``~/.cache/semcolor``, file ``verified-shards.json``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from semcolor.atomic import write_json_atomic
from semcolor.data.sources.png_indices import png_chunks
from semcolor.errors import ShardIntegrityError

CACHE_FILE = "verified-shards.json"
_CHUNK = 1 << 20
_PROGRESS_MIN_BYTES = 256 << 20  # a bar only when the unverified shards are big enough to take a while
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ShardCheck:
    """What one pass over a shard found: its sha256 and the number of samples (distinct keys)."""

    sha256: str
    samples: int
    structure_error: str | None = None  # the tar could not be read to its end (cut short, garbage)


def default_cache_path() -> Path:
    """Where verified shards are remembered (see the module docstring)."""
    folder = os.environ.get("SEMCOLOR_CACHE_DIR")
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folder = str(Path(base) / "semcolor")
    return Path(folder) / CACHE_FILE


def verify_split(shard_dir: str | Path, split: str, cache_path: str | Path | None = None,
                 progress: bool = True) -> int:
    """Check every shard of ``split`` against ``shard_dir/manifest.json``; the number of shards read now
    (0 when all were verified before). ShardIntegrityError on any difference."""
    shard_dir = Path(shard_dir)
    manifest_path = shard_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        entry = manifest["splits"][split]
        shards = [(str(s["file"]), str(s["sha256"]), int(s["samples"])) for s in entry["shards"]]
        total = int(entry["samples"])
    except FileNotFoundError:
        raise FileNotFoundError(f"no shard manifest at {manifest_path}; build the shards first "
                                "(dvc repro shards@<source>-<size>)") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ShardIntegrityError(f"{manifest_path}: unreadable or without split {split!r} "
                                  f"({type(error).__name__}: {error}); rebuild the shards") from None
    hint = _restore_hint(shard_dir, manifest)
    listed = sum(count for _, _, count in shards)
    if listed != total:
        raise ShardIntegrityError(f"{manifest_path}: split {split!r} lists {listed} samples in its shards but "
                                  f"claims {total}; the manifest was edited or damaged: {hint}")
    cache_path = Path(cache_path) if cache_path is not None else default_cache_path()
    remembered = _read_cache(cache_path)
    todo = []
    for name, sha256, count in shards:
        path = shard_dir / name
        try:
            stat = path.stat()
        except FileNotFoundError:
            remote = _remote_url(path)
            if remote is None:
                raise ShardIntegrityError(f"{path}: missing (listed in {manifest_path}); {hint}") from None
            # a shard kept in object storage (GOPEN_REWRITE): no local size or mtime, remembered by its URL
            record_key, record = f"remote:{remote}", {"sha256": sha256, "samples": count}
            if remembered.get(record_key) != record:
                todo.append((path, remote, sha256, count, record_key, record))
            continue
        record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256, "samples": count}
        record_key = str(path.resolve())
        if remembered.get(record_key) != record:
            todo.append((path, None, sha256, count, record_key, record))
    if not todo:
        return 0
    total_bytes = sum(record.get("size", 0) for *_, record in todo)
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc=f"verify {shard_dir.name}/{split}",
               disable=not progress or total_bytes < _PROGRESS_MIN_BYTES, file=sys.stderr)
    verified: dict[str, Any] = {}
    try:
        for path, remote, sha256, count, record_key, record in todo:
            if remote is None:
                found = check_shard(path, bar.update)
            else:
                import webdataset

                found = check_shard(webdataset.gopen(remote, "rb"))
            if found.sha256 != sha256 or found.samples != count or found.structure_error:
                raise ShardIntegrityError(_mismatch_message(path if remote is None else Path(remote),
                                                            manifest_path, sha256, count, found, hint,
                                                            diagnose=remote is None))
            verified[record_key] = record
    finally:
        bar.close()
        if verified:
            _remember(cache_path, verified)
    return len(todo)


def check_shard(path_or_stream: str | Path | Any, on_bytes=None) -> ShardCheck:
    """One pass over a shard (a path, or an open binary stream, which is closed): sha256 of its bytes and
    its number of samples (distinct keys: member names up to the first '.')."""
    digest = hashlib.sha256()
    stream = path_or_stream if hasattr(path_or_stream, "read") else open(path_or_stream, "rb")
    reader = _HashingReader(stream, digest, on_bytes)
    samples, last_key, problem = 0, None, None
    with reader:
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key = _sample_key(member.name)
                    if key != last_key:
                        samples, last_key = samples + 1, key
        except (tarfile.TarError, EOFError, OSError) as error:
            problem = f"{type(error).__name__}: {error}"
        while reader.read(_CHUNK):
            pass  # the rest (padding after the end-of-archive blocks, or what tarfile gave up on)
    return ShardCheck(digest.hexdigest(), samples, problem)


def find_damaged_sample(path: str | Path) -> str | None:
    """The first sample of a shard whose member does not decode, as "sample 'KEY' (MEMBER: reason)";
    or where the tar breaks off; None when every member decodes."""
    last_key = None
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key = _sample_key(member.name)
                suffix = member.name[len(key) + 1:]
                extracted = tar.extractfile(member)
                data = extracted.read() if extracted is not None else b""
                if len(data) != member.size:
                    return f"sample {key!r} ({suffix}: cut short, {len(data)} of {member.size} bytes)"
                reason = _decode_problem(suffix, data)
                if reason is not None:
                    return f"sample {key!r} ({suffix}: {reason})"
                last_key = key
    except (tarfile.TarError, EOFError, OSError) as error:
        where = f"after sample {last_key!r}" if last_key is not None else "at its start"
        return f"the tar breaks off {where} ({type(error).__name__}: {error})"
    return None


# ---------------------------------------------------------------------------------------------- internals


class _HashingReader(io.RawIOBase):
    """A read-only stream that feeds every byte read through ``digest`` (and reports counts)."""

    def __init__(self, raw, digest, on_bytes=None) -> None:
        self._raw, self._digest, self._on_bytes = raw, digest, on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if hasattr(self._raw, "readinto"):
            count = self._raw.readinto(buffer)
        else:  # a pipe or a remote stream with only read()
            data = self._raw.read(len(buffer))
            count = len(data)
            buffer[:count] = data
        if count:
            self._digest.update(memoryview(buffer)[:count])
            if self._on_bytes is not None:
                self._on_bytes(count)
        return count or 0

    def close(self) -> None:
        self._raw.close()
        super().close()


def _sample_key(name: str) -> str:
    """WebDataset's grouping: the member's path up to the first '.' of its base name."""
    folder, _, base = name.rpartition("/")
    key = base.partition(".")[0]
    return f"{folder}/{key}" if folder else key


def _decode_problem(suffix: str, data: bytes) -> str | None:
    if suffix.endswith("png"):
        problem = _png_chunk_problem(data)  # Pillow skips the CRCs of image data: check them here
        if problem is not None:
            return problem
    try:
        if suffix.endswith("json"):
            json.loads(data.decode("utf-8"))
        elif suffix.endswith("npy"):
            # a raw array has no checksum of its own: only a damaged header or a wrong size is found here
            # (a flipped value byte is found by the shard's sha256 alone)
            from semcolor.data.shard_reader import decode_lab_member

            decode_lab_member({"lab.npy": data} if suffix == "lab.npy" else {suffix: data})
        elif suffix.endswith(("png", "jpg", "jpeg")):
            with Image.open(io.BytesIO(data)) as image:
                image.load()
    except Exception as error:  # any decoder failure is the answer sought, whatever its type
        return f"{type(error).__name__}: {' '.join(str(error).split())[:120]}"
    return None


def _png_chunk_problem(data: bytes) -> str | None:
    """Why a PNG's chunk structure is broken (signature, a chunk's CRC, no IEND), or None."""
    try:
        for _ in png_chunks(data):
            pass
    except ValueError as error:
        return str(error)
    return None


def _remote_url(path: Path) -> str | None:
    """The URL webdataset opens for a local shard path under GOPEN_REWRITE, or None when not rewritten."""
    if "GOPEN_REWRITE" not in os.environ:
        return None
    from webdataset.gopen import rewrite_url

    url = rewrite_url(str(path))
    return url if url != str(path) else None


def _mismatch_message(path: Path, manifest_path: Path, sha256: str, count: int, found: ShardCheck,
                      hint: str, diagnose: bool = True) -> str:
    differences = []
    if found.sha256 != sha256:
        differences.append(f"sha256 {found.sha256[:12]}... instead of {sha256[:12]}...")
    if found.samples != count:
        differences.append(f"{found.samples} samples instead of {count}")
    damaged = find_damaged_sample(path) if diagnose else None
    if damaged is None and found.structure_error:
        damaged = f"the tar is unreadable ({found.structure_error})"
    detail = (f"; damaged: {damaged}" if damaged else
              "; no sample is damaged: the change is in a value that still decodes, or in tar headers or padding")
    return f"{path}: differs from {manifest_path} ({', '.join(differences)}){detail}; {hint}"


def _restore_hint(shard_dir: Path, manifest: dict[str, Any]) -> str:
    source, size = manifest.get("source"), manifest.get("size")
    stage = f"shards@{source}-{size}" if source and size else "shards@<source>-<size>"
    return (f"restore the shards (dvc checkout {shard_dir}, or dvc pull) or rebuild them "
            f"(dvc repro -f {stage})")


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # no record yet, or an unreadable one: verify again
    return data if isinstance(data, dict) else {}


def _remember(path: Path, verified: dict[str, Any]) -> None:
    """Add ``verified`` to the record (read-modify-write; a lost update only means verifying again)."""
    with _LOCK:
        kept = {name: record for name, record in _read_cache(path).items() if os.path.exists(name)}
        data = {**kept, **verified}
        try:
            write_json_atomic(path, data)
        except OSError:
            pass  # an unwritable cache folder costs speed on the next run, not correctness


def verify_splits(shard_dir: str | Path, splits: Sequence[str], **kwargs: Any) -> int:
    """``verify_split`` for several splits; the number of shards read."""
    return sum(verify_split(shard_dir, split, **kwargs) for split in splits)
