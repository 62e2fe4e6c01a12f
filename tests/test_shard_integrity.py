"""Shards are checked against their manifest before use: a cut shard, a flipped byte in a PNG or JSON
member, a missing shard or an edited manifest stop the reader, naming the shard (and the damaged sample);
verification is remembered by path, size and mtime."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from semcolor import shard_integrity
from semcolor.extract import safe_extract
from semcolor.loader import LoaderConfig, ShardBatches
from semcolor.shard_integrity import ShardIntegrityError, verify_split
from semcolor.shard_settings import ShardSettings
from semcolor.shards import convert_source
from semcolor.sources.synthetic import Synthetic, WorldConfig, write_world_archive


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    archive = write_world_archive(WorldConfig(seed=2, num_train=30, num_val=10, image_size=64),
                                  root / "world.tar", progress=False)
    extracted = safe_extract(archive, root / "extracted", progress=False)
    out = root / "shards" / "128"
    convert_source(Synthetic(extracted), out, 128, settings=ShardSettings(samples_per_shard=10), progress=False)
    return out


@pytest.fixture
def shards(pristine, tmp_path, monkeypatch) -> Path:
    """A private copy of the shards, and a private verification record."""
    monkeypatch.setenv("SEMCOLOR_CACHE_DIR", str(tmp_path / "cache"))
    copy = tmp_path / "data" / "shards" / "synthetic" / "128"
    shutil.copytree(pristine, copy)
    return copy


def first_shard(shards: Path, split: str = "train") -> Path:
    manifest = json.loads((shards / "manifest.json").read_text())
    return shards / manifest["splits"][split]["shards"][0]["file"]


def members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_good_shards_are_read_once_then_remembered(shards, monkeypatch):
    assert verify_split(shards, "train") == 3
    assert verify_split(shards, "val") == 1
    calls = []
    real = shard_integrity.check_shard
    monkeypatch.setattr(shard_integrity, "check_shard", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    assert verify_split(shards, "train") == 0 and calls == []  # remembered: nothing read
    shard = first_shard(shards)
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 1_000_000))
    assert verify_split(shards, "train") == 1 and calls == [shard]  # touched: that one is read again


def test_a_shard_cut_at_a_sample_boundary(shards):
    shard = first_shard(shards)
    infos = members(shard)
    # keep the first 7 samples (3 members each), drop the rest and the end-of-archive blocks
    last = infos[7 * 3 - 1]
    end = last.offset_data + -(-last.size // 512) * 512
    shard.write_bytes(shard.read_bytes()[:end])
    with pytest.raises(ShardIntegrityError) as caught:
        verify_split(shards, "train")
    message = str(caught.value)
    assert str(shard) in message and "7 samples instead of 10" in message, message
    assert "dvc checkout" in message and "dvc repro -f shards@synthetic-128" in message
    assert "\n" not in message


@pytest.mark.parametrize("member_index, member_name", [(3 * 4 + 2, "seg.png")])
def test_a_flipped_byte_in_a_png_names_the_sample(shards, member_index, member_name):
    shard = first_shard(shards)
    info = members(shard)[member_index]
    assert info.name.endswith(member_name)
    flip_byte(shard, info.offset_data + info.size // 2)
    with pytest.raises(ShardIntegrityError) as caught:
        verify_split(shards, "train")
    key = info.name.partition(".")[0]
    message = str(caught.value)
    assert str(shard) in message and f"sample {key!r} ({member_name}" in message, message
    assert "sha256" in message


def test_a_damaged_npy_header_names_the_sample(shards):
    shard = first_shard(shards)
    info = members(shard)[1]
    assert info.name.endswith("lab.npy")
    flip_byte(shard, info.offset_data + 2)  # inside the magic string: no longer a .npy
    with pytest.raises(ShardIntegrityError) as caught:
        verify_split(shards, "train")
    key = info.name.partition(".")[0]
    assert f"sample {key!r} (lab.npy" in str(caught.value), str(caught.value)


def test_a_flipped_value_byte_in_an_npy_is_found_by_the_sha256(shards):
    shard = first_shard(shards)
    info = members(shard)[1]
    flip_byte(shard, info.offset_data + info.size - 5)  # a Lab code: still a valid array
    with pytest.raises(ShardIntegrityError, match="no sample is damaged"):
        verify_split(shards, "train")


def test_a_flipped_byte_in_a_json_member(shards):
    shard = first_shard(shards, "val")
    info = members(shard)[3]  # the second sample's json
    assert info.name.endswith(".json")
    flip_byte(shard, info.offset_data)  # its opening brace: no longer JSON
    with pytest.raises(ShardIntegrityError, match=rf"sample '{info.name.partition('.')[0]}' \(json"):
        verify_split(shards, "val")


def test_a_change_that_still_decodes_is_found_too(shards):
    shard = first_shard(shards, "val")
    info = members(shard)[0]
    data = bytearray(shard.read_bytes())
    text = data[info.offset_data:info.offset_data + info.size]
    position = info.offset_data + next(i for i, c in enumerate(text) if chr(c).isdigit())
    data[position] = ord("7") if data[position] != ord("7") else ord("8")  # another digit: valid JSON
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardIntegrityError, match="no sample is damaged"):
        verify_split(shards, "val")


def test_a_missing_shard_or_an_edited_manifest(shards):
    manifest_path = shards / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["splits"]["train"]["samples"] = 31
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ShardIntegrityError, match="lists 30 samples in its shards but claims 31"):
        verify_split(shards, "train")
    manifest["splits"]["train"]["samples"] = 30
    manifest_path.write_text(json.dumps(manifest))
    first_shard(shards).unlink()
    with pytest.raises(ShardIntegrityError, match="missing"):
        verify_split(shards, "train")


def test_the_loader_refuses_a_damaged_shard_before_reading(shards):
    shard = first_shard(shards, "val")
    shard.write_bytes(shard.read_bytes()[:-5000])
    for train in (True, False):
        with pytest.raises(ShardIntegrityError, match=str(shard)):
            ShardBatches(shards, "val", LoaderConfig(batch_size=2, workers=0), train=train)


def test_shards_in_object_storage_are_verified_through_gopen(shards, tmp_path, monkeypatch):
    """Only the manifest is local; GOPEN_REWRITE maps the shard paths to a bucket (here: a `pipe:cat`)."""
    bucket = tmp_path / "bucket"
    shutil.copytree(shards, bucket)
    for tar in shards.glob("*.tar"):
        tar.unlink()
    monkeypatch.setenv("GOPEN_REWRITE", f"{shards}/=pipe:cat {bucket}/")
    assert verify_split(shards, "train") == 3
    assert verify_split(shards, "train") == 0  # remembered by URL and manifest sha256
    shard = bucket / "val-000000.tar"
    shard.write_bytes(shard.read_bytes()[:-3000])
    with pytest.raises(ShardIntegrityError, match=r"pipe:cat .*val-000000.tar: differs from"):
        verify_split(shards, "val")
