"""How a shard set is written, as one frozen value: ``ShardSettings`` (params.yaml `shards` holds the same
keys; ``pipeline.params.ShardsConfig`` hands them on). A module of its own so that reading params does not
import the shard writer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OnError = Literal["skip", "raise"]


@dataclass(frozen=True)
class ShardSettings:
    """Samples per shard file (the last one of a split may hold fewer) and the skip policy (``on_error``:
    skip a bad input and record it, or raise at the first; above ``max_skipped_fraction`` skipped inputs
    the split fails)."""

    samples_per_shard: int = 256
    on_error: OnError = "skip"
    max_skipped_fraction: float = 0.01

    def __post_init__(self):
        if not isinstance(self.samples_per_shard, int) or self.samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {self.samples_per_shard}")
        if self.on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {self.on_error!r}")
        if not 0.0 <= self.max_skipped_fraction <= 1.0:
            raise ValueError(f"max_skipped_fraction must be in [0, 1], got {self.max_skipped_fraction}")
