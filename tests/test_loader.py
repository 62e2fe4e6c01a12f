"""The training input pipeline on real shards (a tiny synthetic world through the real converter)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from semcolor.extract import safe_extract
from semcolor.loader import LoaderConfig, ShardBatches, read_manifest, shard_paths
from semcolor.shards import convert_source, read_shard_samples
from semcolor.sources.synthetic import Synthetic, WorldConfig, write_world_archive


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    archive = write_world_archive(WorldConfig(seed=5, num_train=40, num_val=10, image_size=64), root / "world.tar",
                                  progress=False)
    extracted = safe_extract(archive, root / "extracted", progress=False)
    out = root / "shards" / "128"
    convert_source(Synthetic(extracted), out, 128, samples_per_shard=10, progress=False)
    return out


def collect(batches: ShardBatches, epoch: int = 0) -> list[dict]:
    batches.set_epoch(epoch)
    return list(batches)


def test_batches_have_model_units_shapes_and_whole_batches(shard_dir):
    batches = ShardBatches(shard_dir, "train", LoaderConfig(batch_size=8, crop=96, workers=0, seed=1))
    epoch = collect(batches)
    assert len(epoch) == batches.steps_per_epoch == 40 // 8
    batch = epoch[0]
    assert batch["L"].shape == (8, 1, 96, 96) and batch["ab"].shape == (8, 2, 96, 96) and batch["seg"].shape == (8, 96, 96)
    assert batch["L"].min() >= -1 and batch["L"].max() <= 1 and batch["ab"].abs().max() <= 1
    assert batch["seg"].dtype == torch.int64
    values = set(torch.unique(batch["seg"]).tolist())
    assert values <= set(range(len(Synthetic.class_names))) | {255} and 255 in values  # the boundary band survives
    keys = [k for b in epoch for k in b["key"]]
    assert len(keys) == len(set(keys)) == 40  # every training sample exactly once per epoch


def test_same_seed_and_epoch_give_the_same_batches_other_epochs_differ(shard_dir):
    config = LoaderConfig(batch_size=8, crop=96, workers=0, seed=3)
    first = collect(ShardBatches(shard_dir, "train", config), epoch=2)
    again = collect(ShardBatches(shard_dir, "train", config), epoch=2)
    for a, b in zip(first, again):
        assert a["key"] == b["key"] and torch.equal(a["L"], b["L"]) and torch.equal(a["seg"], b["seg"])
    other = collect(ShardBatches(shard_dir, "train", config), epoch=3)
    assert [b["key"] for b in other] != [b["key"] for b in first]


def test_augmentation_depends_on_the_key_not_on_the_worker(shard_dir):
    def by_key(workers: int) -> dict[str, torch.Tensor]:
        config = LoaderConfig(batch_size=5, crop=96, workers=workers, seed=7)
        return {k: L for batch in collect(ShardBatches(shard_dir, "train", config)) for k, L in zip(batch["key"], batch["L"])}

    single, pooled = by_key(0), by_key(2)
    assert single.keys() == pooled.keys()
    for key in single:
        assert torch.equal(single[key], pooled[key]), key


def test_random_crops_come_from_the_stored_image_and_eval_is_centred_in_order(shard_dir):
    stored = {s.key: s for path in shard_paths(shard_dir, "val") for s in read_shard_samples(path)}
    evaluation = collect(ShardBatches(shard_dir, "val", LoaderConfig(batch_size=4, crop=96, workers=0), train=False))
    keys = [k for b in evaluation for k in b["key"]]
    assert keys == sorted(stored) and len(keys) == 10  # every val sample once, partial last batch kept
    sample = stored[keys[0]]
    centre = sample.lab8[16:112, 16:112, 0].astype(np.float32) / 127.5 - 1
    assert np.allclose(evaluation[0]["L"][0, 0].numpy(), centre)
    train = collect(ShardBatches(shard_dir, "train", LoaderConfig(batch_size=8, crop=96, flip=False, workers=0, seed=0)))
    samples = {s.key: s for path in shard_paths(shard_dir, "train") for s in read_shard_samples(path)}
    offsets = set()
    for batch in train[:2]:
        for key, seg in zip(batch["key"], batch["seg"]):
            full = samples[key].label
            hits = [(t, l) for t in range(33) for l in range(33) if np.array_equal(full[t : t + 96, l : l + 96], seg.numpy())]
            assert hits, f"{key}: crop is not a window of the stored label"
            offsets.add(hits[0])
    assert len(offsets) > 1  # crops are random, not all centred


def test_ranks_read_disjoint_samples(shard_dir):
    config = LoaderConfig(batch_size=4, crop=None, workers=0, seed=0)
    keys = [{k for b in collect(ShardBatches(shard_dir, "train", config, rank=r, world_size=2)) for k in b["key"]}
            for r in range(2)]
    assert keys[0] and keys[1] and not keys[0] & keys[1]


def test_missing_manifest_and_split_are_named(tmp_path, shard_dir):
    with pytest.raises(FileNotFoundError, match="dvc repro shards"):
        read_manifest(tmp_path)
    with pytest.raises(KeyError, match="no split 'test'"):
        shard_paths(shard_dir, "test")
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ShardBatches(shard_dir, "val", LoaderConfig(batch_size=64))
