"""Benchmark: samples/s of the training input pipeline (shards -> batches) against a per-file baseline,
and how many loader workers the paper-setup training step of each model needs, measured in the same run.

    python bench/loader.py [--images 320] [--image-size 480] [--workers 1] [--batches 16] [--rounds 3]
                           [--no-paper]

The baseline is what a plain map-style Dataset would do per sample: open the extracted JPEG and label PNG,
decode, resize (antialiased image, nearest label), convert sRGB -> Lab in float (the straightforward
path), crop and flip; torch's default collate. The shard pipeline reads pre-converted Lab8 codes from tar
shards (semcolor.data.loader). Both use the same DataLoader worker count and the same consumer, which reads
every value of every batch as a training step would (so shared-memory page faults are paid by both).
Recipes: 128 (PixelCNN, 64 px crops as the demo trains) and 352 (U-Net, 352 crops of 360 px).

Figures, best of ``--rounds`` interleaved rounds (a shared machine disturbs the best one least):
- ``shards_sps_<recipe>``, ``baseline_sps_<recipe>``: wall-clock samples/s through the DataLoader with
  ``--workers`` workers; ``ratio_<recipe>`` = shards / baseline (the aim: >= 5 at both sizes);
- ``shards_cpu_ms_<recipe>``, ``baseline_cpu_ms_<recipe>``: CPU milliseconds per sample of the whole
  pipeline in one process (decode, crop, conversion to model units), ``cpu_ratio_<recipe>`` their quotient:
  the same comparison, much less sensitive to other jobs on the machine; ``per_worker_sps_<recipe>`` =
  1000 / shards_cpu_ms: the samples/s one loader core delivers;
- ``disk_kib_per_sample_<recipe>``: the shard bytes per sample (tar headers included), and for the Lab
  member alone ``lab_kib_<encoding>_<recipe>`` / ``lab_decode_ms_<encoding>_<recipe>`` for the format-2
  .npy against format 1's level-1 PNG of the same codes (the disk-size-for-decode-time trade);
- ``train_sps_<model>``: one training step (forward, backward, Adam) at demo size, 1 thread;
- ``paper_train_sps_<model>``: the same at the paper setup (paper width, PSC 128 px, GridNet and the U-Net
  352 px crops) on this CPU, 1 thread, timed on ONE sample (the paper batches of 32 / 16 take minutes a
  step here; per-sample cost on a CPU hardly depends on the batch); ``workers_to_feed_<model>`` =
  ceil(paper_train_sps / per_worker_sps): loader workers per training core. On a GPU see bench/gpu.py.
Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semcolor.color import rgb8_to_lab  # noqa: E402
from semcolor.data.extract import safe_extract  # noqa: E402
from semcolor.data.loader import LoaderConfig, ShardBatches  # noqa: E402
from semcolor.models import create_model  # noqa: E402
from semcolor.data.loader import shard_paths  # noqa: E402
from semcolor.data.shard_settings import ShardSettings  # noqa: E402
from semcolor.data.shard_format import decode_npy, decode_png, encode_npy, encode_png  # noqa: E402
from semcolor.data.shard_reader import read_shard_samples  # noqa: E402
from semcolor.data.shards import convert_source  # noqa: E402
from semcolor.data.sources.synthetic import Synthetic, WorldConfig, write_world_archive  # noqa: E402

RECIPES = {"128": (128, 64, 16), "352": (352, 352, 4)}  # shard size, crop, batch
DEMO = {
    "psc_full": ({"num_classes": 12, "width": 0.0625, "generator_layers": 4, "generator_channels": 32}, 64, 16),
    "sdc": ({"num_classes": 12, "width": 0.125}, 96, 8),
    "gridnet": ({"num_classes": 12, "width": 0.25}, 64, 8),
}
# the paper setups of configs/paper/*.yaml: model config, crop, classes, and which shards feed it
PAPER = {
    "psc_full": ({"num_classes": 21, "width": 1.0, "generator_layers": 8, "generator_channels": 128}, 128, "128"),
    "gridnet": ({"num_classes": 60, "width": 1.0}, 352, "352"),
    "sdc": ({"num_classes": 60, "width": 1.0}, 352, "352"),
}


class PerFileDataset(torch.utils.data.Dataset):
    """The baseline: everything from the extracted files, per sample."""

    def __init__(self, source: Synthetic, size: int, crop: int | None):
        self.source, self.items = source, source.list_items("train")
        self.size, self.crop = size, crop

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        image = Image.open(item.paths[0]).convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        label = Image.open(item.paths[1]).resize((self.size, self.size), Image.Resampling.NEAREST)
        lab = rgb8_to_lab(np.asarray(image)).astype(np.float32)
        seg = np.asarray(label).astype(np.int64)
        rng = random.Random(index)
        if self.crop:
            top, left = rng.randint(0, self.size - self.crop), rng.randint(0, self.size - self.crop)
            lab, seg = lab[top : top + self.crop, left : left + self.crop], seg[top : top + self.crop, left : left + self.crop]
        if rng.random() < 0.5:
            lab, seg = lab[:, ::-1], seg[:, ::-1]
        lab = np.ascontiguousarray(lab.transpose(2, 0, 1))
        return {"L": torch.from_numpy(lab[:1] / 50.0 - 1.0), "ab": torch.from_numpy(lab[1:] / 128.0),
                "seg": torch.from_numpy(np.ascontiguousarray(seg))}


def consume(batch: dict) -> int:
    """Read every value of the batch, as a training step would; returns its sample count."""
    total = 0.0
    for name in ("L", "ab", "seg"):
        total += float(batch[name].sum())
    return len(batch["L"])


def samples_per_second(make: Callable[[], Iterable], batches: int) -> float:
    """Wall-clock samples/s over ``batches`` batches, after a warm-up batch (worker start, first shard)."""
    iterator = iter(make())
    consume(next(iterator))
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        try:
            count += consume(next(iterator))
        except StopIteration:
            break
    return count / (time.perf_counter() - start)


def cpu_ms_per_sample(make: Callable[[], Iterable], batches: int) -> float:
    """CPU milliseconds of this process per sample, the pipeline running in this process (no workers)."""
    iterator = iter(make())
    consume(next(iterator))
    start = time.process_time()
    count = 0
    for _ in range(batches):
        try:
            count += consume(next(iterator))
        except StopIteration:
            break
    return 1000 * (time.process_time() - start) / count


def lab_member_trade(shard_dir: Path, count: int = 32) -> dict[str, float]:
    """KiB and decode ms of the Lab member per encoding, on the first ``count`` training samples."""
    samples = [s for path in shard_paths(shard_dir, "train") for s in read_shard_samples(path)][:count]
    encoded = {"npy": [encode_npy(np.ascontiguousarray(np.moveaxis(s.lab8, -1, 0))) for s in samples],
               "png": [encode_png(s.lab8) for s in samples]}
    decoders = {"npy": decode_npy, "png": decode_png}
    figures = {}
    for name, blobs in encoded.items():
        best = math.inf
        for _ in range(3):
            start = time.process_time()
            for blob in blobs:
                decoders[name](blob)
            best = min(best, time.process_time() - start)
        figures[f"lab_kib_{name}"] = sum(map(len, blobs)) / len(blobs) / 1024
        figures[f"lab_decode_ms_{name}"] = 1000 * best / len(blobs)
    return figures


def train_step_rate(name: str, config: dict, crop: int, batch: int, steps: int = 4) -> float:
    """Samples/s of ``steps`` training steps (forward, losses, backward, Adam) after one warm-up step;
    ``steps=0``: the warm-up step alone is timed."""
    torch.manual_seed(0)
    model = create_model(name, **config)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    classes = config["num_classes"]
    data = {"L": torch.rand(batch, 1, crop, crop) * 2 - 1, "ab": (torch.rand(batch, 2, crop, crop) - 0.5) * 0.5,
            "seg": torch.randint(0, classes, (batch, crop, crop))}
    start = time.perf_counter()
    for index in range(steps + 1):
        if index == 1:
            start = time.perf_counter()
        loss = model.compute_losses(data)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return batch * max(steps, 1) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--image-size", type=int, default=480, help="side of the generated source JPEGs, px (VOC photos are ~500x375)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best is kept")
    parser.add_argument("--no-paper", action="store_true", help="skip the paper-setup training steps (~1 min)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="semcolor-bench-") as tmp:
        root = Path(tmp)
        archive = write_world_archive(WorldConfig(seed=1, num_train=args.images, num_val=8, image_size=args.image_size),
                                      root / "world.tar", progress=False)
        source = Synthetic(safe_extract(archive, root / "extracted", progress=False))
        for name, (size, crop, batch) in RECIPES.items():
            stored = 360 if size == 352 else size
            shard_dir = convert_source(source, root / "shards" / name, size, settings=ShardSettings(samples_per_shard=32), workers=2,
                                       progress=False).parent

            def shards(workers: int) -> ShardBatches:
                return ShardBatches(shard_dir, "train", LoaderConfig(batch_size=batch, crop=crop, workers=workers, seed=0))

            def per_file(workers: int) -> torch.utils.data.DataLoader:
                return torch.utils.data.DataLoader(PerFileDataset(source, stored, crop), batch_size=batch, shuffle=True,
                                                   num_workers=workers, generator=torch.Generator().manual_seed(0))

            wall = {"shards": 0.0, "baseline": 0.0}
            cpu = {"shards": math.inf, "baseline": math.inf}
            for _ in range(args.rounds):  # interleaved, so that a burst of load hits both alike
                for label, make in (("shards", shards), ("baseline", per_file)):
                    wall[label] = max(wall[label], samples_per_second(lambda: make(args.workers), args.batches))
                    cpu[label] = min(cpu[label], cpu_ms_per_sample(lambda: make(0), args.batches))
            figures[f"shards_sps_{name}"], figures[f"baseline_sps_{name}"] = wall["shards"], wall["baseline"]
            figures[f"ratio_{name}"] = wall["shards"] / wall["baseline"]
            figures[f"shards_cpu_ms_{name}"], figures[f"baseline_cpu_ms_{name}"] = cpu["shards"], cpu["baseline"]
            figures[f"cpu_ratio_{name}"] = cpu["baseline"] / cpu["shards"]
            figures[f"per_worker_sps_{name}"] = 1000 / cpu["shards"]
            shard_bytes = sum(path.stat().st_size for path in shard_dir.glob("train-*.tar"))
            figures[f"disk_kib_per_sample_{name}"] = shard_bytes / 1024 / args.images
            for key, value in lab_member_trade(shard_dir).items():
                figures[f"{key}_{name}"] = value
            print(f"recipe {name}: shards {wall['shards']:.1f} samples/s, per-file {wall['baseline']:.1f} samples/s "
                  f"({args.workers} worker(s)): ratio {figures[f'ratio_{name}']:.2f}; CPU per sample "
                  f"{cpu['shards']:.2f} vs {cpu['baseline']:.2f} ms: ratio {figures[f'cpu_ratio_{name}']:.2f}; "
                  f"{figures[f'disk_kib_per_sample_{name}']:.0f} KiB/sample on disk; Lab member .npy "
                  f"{figures[f'lab_kib_npy_{name}']:.0f} KiB decoded in {figures[f'lab_decode_ms_npy_{name}']:.3f} ms, "
                  f"as PNG {figures[f'lab_kib_png_{name}']:.0f} KiB in {figures[f'lab_decode_ms_png_{name}']:.3f} ms",
                  flush=True)
    for name, (config, crop, batch) in DEMO.items():
        figures[f"train_sps_{name}"] = train_step_rate(name, config, crop, batch)
        print(f"training step {name} (demo size, 1 thread): {figures[f'train_sps_{name}']:.1f} samples/s", flush=True)
    figures["loader_over_training_psc"] = figures["shards_sps_128"] / figures["train_sps_psc_full"]
    if not args.no_paper:
        for name, (config, crop, recipe) in PAPER.items():
            rate = train_step_rate(name, config, crop, batch=1, steps=0)
            per_worker = figures[f"per_worker_sps_{recipe}"]
            figures[f"paper_train_sps_{name}"] = rate
            figures[f"workers_to_feed_{name}"] = math.ceil(rate / per_worker)
            print(f"training step {name} (paper setup, {crop} px, 1 thread, CPU): {rate:.3f} samples/s; one loader "
                  f"worker gives {per_worker:.0f} samples/s: {figures[f'workers_to_feed_{name}']} worker(s) per "
                  "training core", flush=True)
    figures["workers"] = args.workers
    figures["load_average_1min"] = os.getloadavg()[0]
    print(json.dumps({k: round(v, 4) for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
