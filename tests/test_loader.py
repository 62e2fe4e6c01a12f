"""The training input pipeline on real shards (a tiny synthetic world through the real converter)."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from semcolor.data.extract import safe_extract

from semcolor.data.loader import (
    LoaderConfig,
    ShardBatches,
    augment,
    decode_batch,
    decode_sample,
    read_manifest,
    sample_seed,
    shard_paths,
)
from semcolor.scaling import lab8_to_unit
from semcolor.data.shard_settings import ShardSettings
from semcolor.data.shard_format import encode_png
from semcolor.data.shard_reader import read_shard_samples
from semcolor.data.shards import ConvertedSample, convert_source, write_shards
from semcolor.data.sources.synthetic import Synthetic, WorldConfig, write_world_archive


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    archive = write_world_archive(WorldConfig(seed=5, num_train=40, num_val=10, image_size=64), root / "world.tar",
                                  progress=False)
    extracted = safe_extract(archive, root / "extracted", progress=False)
    out = root / "shards" / "128"
    convert_source(Synthetic(extracted), out, 128, settings=ShardSettings(samples_per_shard=10), progress=False)
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


def _raw_samples(shard_dir: Path, split: str) -> list[dict]:
    return list(wds.DataPipeline(wds.SimpleShardList(shard_paths(shard_dir, split)), wds.tarfile_to_samples()))


def test_decode_batch_equals_the_per_sample_reference_exactly(shard_dir):
    """Crops, flips and the float conversion of the batched decoder are augment()'s on every sample, bit
    for bit, and augment() is lab8_to_unit on the stored codes (the documented scaling)."""
    raw = _raw_samples(shard_dir, "train")[:9]
    stored = {s.key: s for path in shard_paths(shard_dir, "train") for s in read_shard_samples(path)}
    for crop, train in ((96, True), (96, False), (None, True)):
        rngs = [random.Random(sample_seed(4, 1, s["__key__"])) if train else None for s in raw]
        batch = decode_batch(raw, crop, True, rngs)
        side = crop or 128
        assert batch["L"].shape == (9, 1, side, side) and batch["ab"].shape == (9, 2, side, side)
        assert batch["seg"].shape == (9, side, side) and batch["seg"].dtype == torch.int64
        assert batch["key"] == [s["__key__"] for s in raw]
        for index, sample in enumerate(raw):
            rng = random.Random(sample_seed(4, 1, sample["__key__"])) if train else None
            reference = augment(decode_sample(sample), crop, True, rng)
            for name in ("L", "ab", "seg"):
                assert torch.equal(batch[name][index], reference[name]), (crop, train, name, sample["__key__"])
            lab8 = stored[sample["__key__"]].lab8
            L_full, _ = lab8_to_unit(lab8)
            window = L_full[0, 16:112, 16:112] if crop and not train else None
            if window is not None:  # eval: the centre crop, unflipped
                assert np.array_equal(batch["L"][index, 0].numpy(), window)
        if train:  # the same windows without flips: some samples (not all) were mirrored
            rngs = [random.Random(sample_seed(4, 1, s["__key__"])) for s in raw]
            unflipped = decode_batch(raw, crop, False, rngs)
            mirrored = [torch.equal(batch["L"][i], unflipped["L"][i].flip(-1)) for i in range(9)]
            same = [torch.equal(batch["L"][i], unflipped["L"][i]) for i in range(9)]
            assert all(m or k for m, k in zip(mirrored, same)) and 0 < sum(mirrored) < 9


def _as_format_1(shard_dir: Path, out: Path) -> Path:
    """A copy of a shard set in format 1: the same samples with <key>.lab.png (RGB PNG of the codes)."""
    out.mkdir(parents=True)
    manifest = read_manifest(shard_dir)
    for split, entry in manifest["splits"].items():
        for shard in entry["shards"]:
            samples = [
                ConvertedSample(s.key, json.dumps(s.metadata).encode(), seg_png=encode_png(s.label),
                                lab_png=encode_png(s.lab8))
                for s in read_shard_samples(shard_dir / shard["file"])
            ]
            write_shards(samples, out / "tmp", split, 10_000)
            shutil.move(out / "tmp" / f"{split}-000000.tar", out / shard["file"])
            # the manifest must describe these bytes, or the loader's integrity check refuses them
            shard["sha256"] = hashlib.sha256((out / shard["file"]).read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    with tarfile.open(out / manifest["splits"]["train"]["shards"][0]["file"]) as tar:
        assert tar.getnames()[1].endswith(".lab.png")
    return out


def test_format_1_shards_give_the_same_batches(shard_dir, tmp_path):
    old = _as_format_1(shard_dir, tmp_path / "format1")
    for workers in (0, 2):
        config = LoaderConfig(batch_size=8, crop=96, workers=workers, seed=2)
        new_batches = collect(ShardBatches(shard_dir, "train", config))
        old_batches = collect(ShardBatches(old, "train", config))
        assert len(new_batches) == len(old_batches) == 5
        for a, b in zip(new_batches, old_batches):
            assert a["key"] == b["key"]
            for name in ("L", "ab", "seg"):
                assert torch.equal(a[name], b[name]), name


def test_a_sample_without_lab_or_of_mismatched_size_is_named(shard_dir):
    sample = dict(_raw_samples(shard_dir, "train")[0])
    broken = {k: v for k, v in sample.items() if k != "lab.npy"}
    with pytest.raises(KeyError, match=f"sample {sample['__key__']} in .* lacks lab.npy"):
        decode_sample(broken)
    small = {**sample, "seg.png": encode_png(np.zeros((64, 64), np.uint8))}
    with pytest.raises(ValueError, match=r"seg \(64, 64\) and lab \(128, 128\) differ"):
        decode_sample(small)
    with pytest.raises(ValueError, match="crop 200 larger than stored size 128x128"):
        decode_batch([sample], 200, False, [None])
