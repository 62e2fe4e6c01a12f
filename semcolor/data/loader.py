"""The training input pipeline: WebDataset shards -> augmented, batched tensors.

A batch is a dict:
- ``L``   float32 (N, 1, S, S), lightness scaled to [-1, 1] (semcolor.scaling)
- ``ab``  float32 (N, 2, S, S), chroma scaled to [-1, 1)
- ``seg`` int64 (N, S, S), class index or 255 = ignore
- ``key`` list of N sample keys (for error messages: the NaN guard names them)

Randomness is a pure function of (seed, epoch, key): the crop offset and flip of a sample do not depend
on which worker decoded it, and shard and buffer shuffles are seeded per (seed, epoch, rank, worker).
So the same seed gives the same batches on CPU, run after run, which is what resuming relies on.

Decoding works a batch at a time. A worker (``pack_batch``) crops and flips each sample's Lab planes
(``<key>.lab.npy``, read in place; format-1 ``<key>.lab.png`` too) and map as views and copies them once
into one uint8 tensor per batch, in shared memory; the training process (``unpack_batch``) turns those
codes into the float32 / int64 batch in one pass per tensor. Handing over codes, a sixth of the batch's
bytes, is what makes a worker fast: fresh shared memory costs ~1 ms per MB (page faults) on this class of
machine, more than all the decoding.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from semcolor.scaling import AB_SCALE, lab8_to_unit
from semcolor.data.shard_integrity import verify_split
from semcolor.data.shard_reader import decode_lab_member

_L_CODE_SCALE = np.float32(127.5)  # L_unit = L8 / 127.5 - 1 (semcolor.scaling)
_AB_CODE_OFFSET = np.float32(128.0)  # ab_unit = (ab8 - 128) / 128


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
    """A raw WebDataset sample (bytes per extension) -> Lab code planes, labels and key.

    Returns ``{"key", "lab": uint8 (3, S, S) planes L, a, b (a read-only view of the sample's bytes for
    format 2), "seg": uint8 (S, S)}``. KeyError naming the sample and shard for a missing member."""
    key = sample["__key__"]
    try:
        lab = decode_lab_member(sample)
        with Image.open(io.BytesIO(sample["seg.png"])) as seg_image:
            seg = np.asarray(seg_image)
    except KeyError as error:
        raise KeyError(f"sample {key} in {sample.get('__url__')} lacks {error.args[0]}") from None
    except ValueError as error:
        raise ValueError(f"sample {key} in {sample.get('__url__')}: {error}") from None
    if seg.shape != lab.shape[1:]:
        raise ValueError(f"sample {key}: seg {seg.shape} and lab {lab.shape[1:]} differ in size")
    return {"key": key, "lab": lab, "seg": seg}


def _window(key: str, height: int, width: int, crop: int | None, flip: bool, rng: random.Random | None
            ) -> tuple[int, int, int, int, bool]:
    """(top, left, crop height, crop width, flipped) of a sample: a random crop with ``rng``, a centred one
    without; a horizontal flip with probability 1/2 when ``flip`` and ``rng``. The draws, in this order,
    are the same as ``augment``'s, so both give a key the same window."""
    if crop is None:
        top = left = 0
        crop_h, crop_w = height, width
    else:
        if crop > min(height, width):
            raise ValueError(f"sample {key}: crop {crop} larger than stored size {height}x{width}")
        if rng is None:
            top, left = (height - crop) // 2, (width - crop) // 2
        else:
            top, left = rng.randint(0, height - crop), rng.randint(0, width - crop)
        crop_h = crop_w = crop
    flipped = bool(flip and rng is not None and rng.random() < 0.5)
    return top, left, crop_h, crop_w, flipped


def _batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; in a DataLoader worker, in shared memory (torch's default collate does the
    same), so sending the batch to the main process copies nothing."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    elem = torch.empty(0, dtype=dtype)
    storage = elem._typed_storage()._new_shared(math.prod(shape), device=elem.device)
    return elem.new(storage).resize_(*shape)


def pack_batch(samples: Sequence[dict[str, Any]], crop: int | None, flip: bool,
               rngs: Sequence[random.Random | None]) -> dict[str, Any]:
    """Raw WebDataset samples -> ``{"codes": uint8 (N, 4, h, w), "key": [N keys]}``: each sample's window
    (``_window`` with its rng; None: centred, no flip) of its L, a, b code planes and its map, in one
    tensor (one shared-memory block per batch in a DataLoader worker).

    Workers hand over codes rather than the float batch: fresh shared memory costs about 1 ms per MB on
    first touch (page faults, measured), and the float32 / int64 batch is 6.25x the bytes of its codes."""
    decoded = [decode_sample(sample) for sample in samples]
    windows = [_window(d["key"], *d["seg"].shape, crop, flip, rng) for d, rng in zip(decoded, rngs)]
    shape = windows[0][2:4]
    for d, window in zip(decoded, windows):
        if window[2:4] != shape:
            raise ValueError(f"sample {d['key']} is {window[2]}x{window[3]}, the batch's first {shape[0]}x"
                             f"{shape[1]}: use a crop, or shards of one stored size")
    codes = _batch_tensor((len(decoded), 4, *shape), torch.uint8)
    codes_np = codes.numpy()
    for index, (d, (top, left, height, width, flipped)) in enumerate(zip(decoded, windows)):
        lab = d["lab"][:, top : top + height, left : left + width]
        labels = d["seg"][top : top + height, left : left + width]
        if flipped:
            lab, labels = lab[:, :, ::-1], labels[:, ::-1]
        codes_np[index, :3] = lab
        codes_np[index, 3] = labels
    return {"codes": codes, "key": [d["key"] for d in decoded]}


def unpack_batch(packed: dict[str, Any]) -> dict[str, Any]:
    """``pack_batch``'s codes -> the batch of the module docstring, in new (private) tensors. The float32
    operations are those of ``semcolor.scaling.lab8_to_unit``: L / 127.5 - 1 and (ab - 128) / 128."""
    codes = packed["codes"].numpy()
    count, _, height, width = codes.shape
    L = torch.empty((count, 1, height, width), dtype=torch.float32)
    ab = torch.empty((count, 2, height, width), dtype=torch.float32)
    seg = torch.empty((count, height, width), dtype=torch.int64)
    L_np, ab_np = L.numpy(), ab.numpy()
    np.divide(codes[:, :1], _L_CODE_SCALE, out=L_np)
    np.subtract(L_np, np.float32(1.0), out=L_np)
    np.subtract(codes[:, 1:3], _AB_CODE_OFFSET, out=ab_np)
    np.divide(ab_np, np.float32(AB_SCALE), out=ab_np)
    np.copyto(seg.numpy(), codes[:, 3])
    return {"L": L, "ab": ab, "seg": seg, "key": list(packed["key"])}


def decode_batch(samples: Sequence[dict[str, Any]], crop: int | None, flip: bool,
                 rngs: Sequence[random.Random | None]) -> dict[str, Any]:
    """Raw WebDataset samples -> one batch (module docstring): ``unpack_batch(pack_batch(...))``. Values
    equal ``augment``'s on every sample, bit for bit."""
    return unpack_batch(pack_batch(samples, crop, flip, rngs))


def augment(sample: dict[str, Any], crop: int | None, flip: bool,
            rng: random.Random | None) -> dict[str, Any]:
    """One decoded sample (``decode_sample``) -> tensors: crop (random with ``rng``, centre without) and
    optionally flip horizontally. ``decode_batch`` does the same for a whole batch, without the copies."""
    lab, seg = sample["lab"], sample["seg"]
    top, left, height, width, flipped = _window(sample["key"], *seg.shape, crop, flip, rng)
    lab = lab[:, top : top + height, left : left + width]
    seg = seg[top : top + height, left : left + width]
    if flipped:
        lab, seg = lab[:, :, ::-1], seg[:, ::-1]
    L_unit, ab_unit = lab8_to_unit(np.ascontiguousarray(np.moveaxis(lab, 0, -1)))
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

        def pack(samples: list[dict[str, Any]]) -> dict[str, Any]:
            rngs = [random.Random(sample_seed(config.seed, epoch, sample["__key__"])) if self.train else None
                    for sample in samples]
            return pack_batch(samples, config.crop, config.flip and self.train, rngs)

        stages: list[Any] = [wds.SimpleShardList(urls)]
        if config.workers > 0:
            stages.append(wds.split_by_worker)
        stages += [wds.tarfile_to_samples()]
        if share_samples:
            stages.append(_every_nth(self.rank, self.world_size))
        if self.train and config.shuffle_buffer > 0:
            stages.append(wds.shuffle(config.shuffle_buffer, initial=config.shuffle_buffer,
                                      rng=random.Random(f"{config.seed}:{epoch}:{self.rank}:buffer")))
        # workers send whole batches of codes (one message and one shared-memory block per batch);
        # __iter__ converts them to model units and re-batches them
        stages += [wds.batched(config.batch_size, collation_fn=pack, partial=True)]
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
        for packed in loader:
            chunk = unpack_batch(packed)
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
