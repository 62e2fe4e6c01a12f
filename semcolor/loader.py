"""The training input pipeline: WebDataset shards -> augmented, batched tensors.

A batch is a dict:
- ``L``   float32 (N, 1, S, S), lightness scaled to [-1, 1] (semcolor.scaling)
- ``ab``  float32 (N, 2, S, S), chroma scaled to [-1, 1)
- ``seg`` int64 (N, S, S), class index or 255 = ignore
- ``key`` list of N sample keys (for error messages: the NaN guard names them)

Randomness is a pure function of (seed, epoch, key): the crop offset and flip of a sample do not depend
on which worker decoded it, and shard and buffer shuffles are seeded per (seed, epoch, rank, worker).
So the same seed gives the same batches on CPU, run after run, which is what resuming relies on.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from semcolor.scaling import lab8_to_unit
from semcolor.shard_integrity import verify_split


@dataclass(frozen=True)
class LoaderConfig:
    """How training batches are made from shards.

    crop: side of the random (train) or centre (eval) crop, e.g. 352 from the 360 px shards (the
    Semantic-driven recipe); None keeps the stored size (128 for the PixelCNN recipe).
    """

    batch_size: int = 16
    crop: int | None = None
    flip: bool = True
    workers: int = 2
    shuffle_buffer: int = 256
    seed: int = 0

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.crop is not None and self.crop < 8:
            raise ValueError(f"crop must be >= 8 or null, got {self.crop}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}")


def read_manifest(shard_dir: str | Path) -> dict[str, Any]:
    """The manifest.json of a shard directory, with a clear error naming the path when it is missing."""
    path = Path(shard_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no shard manifest at {path}; build the shards first (dvc repro shards@<source>-<size>)"
        )
    return json.loads(path.read_text())


def shard_paths(shard_dir: str | Path, split: str) -> list[str]:
    """Paths of the shards of ``split`` listed in the manifest, in order."""
    manifest = read_manifest(shard_dir)
    splits = manifest.get("splits", {})
    if split not in splits:
        raise KeyError(f"{shard_dir}/manifest.json has no split {split!r}; it has {sorted(splits)}")
    return [str(Path(shard_dir) / shard["file"]) for shard in splits[split]["shards"]]


def split_size(shard_dir: str | Path, split: str) -> int:
    """Number of samples in ``split`` according to the manifest."""
    return int(read_manifest(shard_dir)["splits"][split]["samples"])


def sample_seed(seed: int, epoch: int, key: str) -> int:
    """A 64-bit seed for one sample's augmentation, independent of worker and order."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def decode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """A raw WebDataset sample (bytes per extension) -> numpy Lab codes, labels and metadata."""
    key = sample["__key__"]
    try:
        lab_image = Image.open(io.BytesIO(sample["lab.png"]))
        lab8 = np.asarray(lab_image if lab_image.mode == "RGB" else lab_image.convert("RGB"))
        seg = np.asarray(Image.open(io.BytesIO(sample["seg.png"])))
    except KeyError as error:
        raise KeyError(f"sample {key} in {sample.get('__url__')} lacks {error.args[0]}") from None
    if seg.shape != lab8.shape[:2]:
        raise ValueError(f"sample {key}: seg {seg.shape} and lab {lab8.shape[:2]} differ in size")
    return {"key": key, "lab8": lab8, "seg": seg}


def augment(sample: dict[str, Any], crop: int | None, flip: bool, rng: random.Random | None) -> dict[str, Any]:
    """Crop (random with ``rng``, centre without) and optionally flip horizontally; returns tensors."""
    lab8, seg = sample["lab8"], sample["seg"]
    height, width = seg.shape
    if crop is not None:
        if crop > min(height, width):
            raise ValueError(f"sample {sample['key']}: crop {crop} larger than stored size {height}x{width}")
        if rng is None:
            top, left = (height - crop) // 2, (width - crop) // 2
        else:
            top, left = rng.randint(0, height - crop), rng.randint(0, width - crop)
        lab8 = lab8[top : top + crop, left : left + crop]
        seg = seg[top : top + crop, left : left + crop]
    if flip and rng is not None and rng.random() < 0.5:
        lab8, seg = lab8[:, ::-1], seg[:, ::-1]
    L_unit, ab_unit = lab8_to_unit(np.ascontiguousarray(lab8))
    return {
        "key": sample["key"],
        "L": torch.from_numpy(L_unit),
        "ab": torch.from_numpy(ab_unit),
        "seg": torch.from_numpy(np.ascontiguousarray(seg).astype(np.int64)),
    }


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "L": torch.stack([s["L"] for s in samples]),
        "ab": torch.stack([s["ab"] for s in samples]),
        "seg": torch.stack([s["seg"] for s in samples]),
        "key": [s["key"] for s in samples],
    }


class ShardBatches:
    """Iterable over the batches of one epoch of a split (``set_epoch`` picks the epoch).

    ``train=True``: shuffled shards and samples, random crops and flips, whole batches only, and an
    equal number of batches on every rank (``steps_per_epoch``), as DDP needs. ``train=False``: every
    sample once, in order, centre crops, no flips (evaluation).
    """

    def __init__(self, shard_dir: str | Path, split: str, config: LoaderConfig, train: bool = True,
                 rank: int = 0, world_size: int = 1):
        # every shard's sha256 and sample count against the manifest, before any is read (remembered)
        verify_split(shard_dir, split)
        self.urls = shard_paths(shard_dir, split)
        self.count = split_size(shard_dir, split)
        self.config, self.train = config, train
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        if train and self.count < config.batch_size * world_size:
            raise ValueError(
                f"{shard_dir} split {split!r} has {self.count} samples, fewer than one global batch "
                f"({config.batch_size} x {world_size} ranks)"
            )

    @property
    def steps_per_epoch(self) -> int:
        if self.train:
            return self.count // (self.config.batch_size * self.world_size)
        return -(-self.count // self.config.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rank_urls(self) -> list[str]:
        urls = list(self.urls)
        if self.train:
            random.Random(f"{self.config.seed}:{self.epoch}:shards").shuffle(urls)
        # every rank reads a disjoint share of the shards; with fewer shards than ranks, all read all
        # and the sample-level split below keeps them disjoint
        return urls[self.rank :: self.world_size] if len(urls) >= self.world_size else urls

    def _pipeline(self) -> wds.DataPipeline:
        config, epoch = self.config, self.epoch
        urls = self._rank_urls()
        share_samples = len(self.urls) < self.world_size
        workers = max(1, min(config.workers, len(urls)))  # more workers than shards finds no samples

        def augment_one(sample):
            rng = random.Random(sample_seed(config.seed, epoch, sample["key"])) if self.train else None
            return augment(sample, config.crop, config.flip and self.train, rng)

        stages: list[Any] = [wds.SimpleShardList(urls)]
        if config.workers > 0:
            stages.append(wds.split_by_worker)
        stages += [wds.tarfile_to_samples()]
        if share_samples:
            stages.append(_every_nth(self.rank, self.world_size))
        if self.train and config.shuffle_buffer > 0:
            stages.append(wds.shuffle(config.shuffle_buffer, initial=config.shuffle_buffer,
                                      rng=random.Random(f"{config.seed}:{epoch}:{self.rank}:buffer")))
        # workers send collated chunks (one IPC message per chunk, not per sample); __iter__ re-batches them
        stages += [wds.map(decode_sample), wds.map(augment_one),
                   wds.batched(config.batch_size, collation_fn=collate, partial=True)]
        return wds.DataPipeline(*stages), workers

    def __iter__(self) -> Iterator[dict[str, Any]]:
        pipeline, workers = self._pipeline()
        # each worker's last chunk may be partial; re-batching here keeps every sample, so no whole batch
        # is lost to per-worker remainders
        loader = torch.utils.data.DataLoader(
            pipeline, batch_size=None, num_workers=workers if self.config.workers > 0 else 0,
            worker_init_fn=_seed_worker(self.config.seed, self.epoch, self.rank),
        )
        size = self.config.batch_size
        pending: list[dict[str, Any]] = []
        count = produced = 0
        for chunk in loader:
            pending.append(chunk)
            count += len(chunk["key"])
            while count >= size:
                merged = _concat(pending)
                yield _slice(merged, 0, size)
                produced += 1
                rest = _slice(merged, size, count)
                pending, count = ([rest] if count > size else []), count - size
                if self.train and produced == self.steps_per_epoch:
                    return
        if not self.train:
            if count:
                yield _concat(pending)
            return
        if produced < self.steps_per_epoch:
            raise RuntimeError(
                f"rank {self.rank} produced {produced} of {self.steps_per_epoch} batches in epoch {self.epoch}: "
                f"shards of uneven size across {self.world_size} ranks; use more, equal shards"
            )


def _concat(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    if len(chunks) == 1:
        return chunks[0]
    return {"L": torch.cat([c["L"] for c in chunks]), "ab": torch.cat([c["ab"] for c in chunks]),
            "seg": torch.cat([c["seg"] for c in chunks]), "key": [k for c in chunks for k in c["key"]]}


def _slice(batch: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    return {"L": batch["L"][start:stop], "ab": batch["ab"][start:stop], "seg": batch["seg"][start:stop],
            "key": batch["key"][start:stop]}


def _every_nth(rank: int, world_size: int):
    def select(samples):
        for index, sample in enumerate(samples):
            if index % world_size == rank:
                yield sample

    return select


def _seed_worker(seed: int, epoch: int, rank: int):
    def init(worker_id: int) -> None:
        # the worker's own shuffle state; augmentation does not use it (it is seeded per sample)
        random.seed(f"{seed}:{epoch}:{rank}:{worker_id}")
        np.random.seed(sample_seed(seed, epoch, f"{rank}:{worker_id}") % 2**32)

    return init
