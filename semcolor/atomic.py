"""Atomic file writes: a temp file in the target's folder, then os.replace, so a crash or a full disk
never leaves a half-written file where a complete one is expected (manifests, metrics, reports, images,
checkpoints, copied models).

Every temp file is created with ``os.open(..., 0o666)``, so the process umask decides its final mode exactly
as for a plain ``open()`` (0644 under the usual umask 022, 0664 under 002): ``tempfile.mkstemp`` would make
it 0600 and the result unreadable for the group or a web server.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new, empty file beside ``path`` (mode 0666 minus the umask) and its name."""
    for _ in range(100):
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(temporary, _CREATE_FLAGS, 0o666), temporary
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


@contextmanager
def atomic_output(path: str | Path, *, text: bool = False, fsync: bool = False) -> Iterator[IO[Any]]:
    """A stream whose contents appear at ``path`` only when the block ends without an exception.

    The parent folder is created. ``text``: a UTF-8 text stream (else binary). ``fsync``: flush to disk
    before the rename (checkpoints: a power cut must not leave an empty file named like a good one). On any
    exception the temp file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = _create_temporary(path)
    try:
        with os.fdopen(descriptor, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as stream:
            yield stream
            if fsync:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def check_writable_folder(folder: str | Path) -> Path:
    """Prove that files can be created in ``folder`` (OSError otherwise), leaving nothing behind: folders it
    had to create for the probe are removed again. An output folder is checked before the work whose
    results it will hold, not after."""
    folder = Path(folder)
    created: list[Path] = []
    try:
        for parent in [*reversed(folder.parents), folder]:
            if not parent.exists():
                parent.mkdir()
                created.append(parent)
        descriptor, probe = _create_temporary(folder / ".semcolor-write-test")
        os.close(descriptor)
        probe.unlink()
    finally:
        for made in reversed(created):
            made.rmdir()
    return folder


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (mode from the umask), creating the parent folder."""
    with atomic_output(path) as stream:
        stream.write(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (mode from the umask), creating the parent folder."""
    with atomic_output(path, text=True) as stream:
        stream.write(text)
    return Path(path)


def copy_file_atomic(source: str | Path, target: str | Path) -> Path:
    """Copy ``source`` to ``target`` atomically (fsynced): ``target`` is the old file or the whole new one,
    never a partial copy (e.g. a trained model copied into ``models/`` while DVC or a reader looks)."""
    with open(source, "rb") as reader, atomic_output(target, fsync=True) as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
    return Path(target)


def write_json_atomic(path: str | Path, data: Any, indent: int = 2) -> Path:
    """``data`` as deterministic JSON (sorted keys, trailing newline; non-finite floats become null)."""
    return write_text_atomic(path, json.dumps(_finite(data), sort_keys=True, indent=indent, ensure_ascii=False) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
