"""A tiny synthetic world as real 128 px shards (generated, extracted and converted by the real code), in
the layout the stages read: ``<root>/data/shards/synthetic/128``."""

from __future__ import annotations

from pathlib import Path

from semcolor.extract import safe_extract
from semcolor.shard_settings import ShardSettings
from semcolor.shards import convert_source
from semcolor.sources.synthetic import Synthetic, WorldConfig, write_world_archive


def build_world_shards(root: Path, num_train: int = 24, num_val: int = 8, image_size: int = 64, seed: int = 0,
                       samples_per_shard: int = 8) -> Path:
    """Write the world under ``root`` and return its shard folder ``root/data/shards/synthetic/128``."""
    config = WorldConfig(seed=seed, num_train=num_train, num_val=num_val, image_size=image_size)
    archive = write_world_archive(config, root / "data" / "raw" / "synthetic" / "semantic_world.tar", progress=False)
    extracted = safe_extract(archive, root / "data" / "extracted" / "synthetic", progress=False)
    out = root / "data" / "shards" / "synthetic" / "128"
    convert_source(Synthetic(extracted), out, 128, settings=ShardSettings(samples_per_shard=samples_per_shard),
                   progress=False)
    return out
