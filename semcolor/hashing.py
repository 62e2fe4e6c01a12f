"""The sha256 of a file, read in 1 MiB blocks (shards, manifests, checkpoints: never the whole file in memory).

``semcolor.download.file_digests`` adds what downloads need on top (several algorithms in one read, a cache
beside the file); ``semcolor.shard_integrity.check_shard`` hashes a shard while it counts its samples.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK_BYTES = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the bytes of ``path`` (FileNotFoundError naming it when it is missing)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()
