"""The error classes a stage reports as one line (pipeline.stage_main), defined here so that catching them
imports no heavy module: the modules that raise them (download, extract, inference, shards, shard_integrity,
training) import them from here, and a change to those modules does not rerun stages that only report."""

from __future__ import annotations

from pathlib import Path


class DownloadError(RuntimeError):
    """A transfer failed or stopped early; the ``.part`` file is kept so the next attempt resumes."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the target, or is a device/FIFO/socket."""

    def __init__(self, archive: Path, member: str, reason: str):
        super().__init__(f"{archive}: refusing member {member!r}: {reason}; nothing was extracted")
        self.archive = archive
        self.member = member
        self.reason = reason


class ModelReferenceError(ValueError):
    """A model reference (file, ``models:/``, ``runs:/``, run id) that does not lead to a checkpoint; the
    message names it, says why in one line and what to do."""


class ShardIntegrityError(ValueError):
    """A shard differs from its manifest (or is missing); the message names it and says what to do."""


class TooManySkippedError(RuntimeError):
    """More inputs of a split were skipped than ``max_skipped_fraction`` allows."""


class CheckpointError(ValueError):
    """A file is not a usable semcolor checkpoint; the message names it and says what to do."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the batch's sample keys."""
