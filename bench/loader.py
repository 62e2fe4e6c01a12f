"""Benchmark: samples/s of the training input pipeline (shards -> batches) against a per-file baseline,
and against one training step of the demo models, measured in the same run.

    python bench/loader.py [--images 240] [--image-size 480] [--workers 1] [--batches 12]

The baseline is what a plain map-style Dataset would do per sample: open the extracted JPEG and label PNG,
decode, resize (antialiased image, nearest label), convert sRGB -> Lab in float (the straightforward
path), crop and flip. The shard pipeline reads pre-converted Lab8 PNGs from tar shards (semcolor.loader).
Both use the same DataLoader worker count. Recipes: 128 (PixelCNN, 64 px crops as the demo trains) and
352 (U-Net, 352 crops of 360 px). Last line: one JSON object with the figures (ratio = shards / baseline).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semcolor.color import rgb8_to_lab  # noqa: E402
from semcolor.extract import safe_extract  # noqa: E402
from semcolor.loader import LoaderConfig, ShardBatches  # noqa: E402
from semcolor.models import create_model  # noqa: E402
from semcolor.shards import convert_source  # noqa: E402
from semcolor.sources.synthetic import Synthetic, WorldConfig, write_world_archive  # noqa: E402


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


def samples_per_second(iterable, batches: int, batch_size: int) -> float:
    iterator = iter(iterable)
    next(iterator)  # warm-up: worker start, first shard open
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        try:
            next(iterator)
        except StopIteration:
            break
        count += batch_size
    return count / (time.perf_counter() - start)


def train_step_rate(name: str, config: dict, crop: int, batch: int, steps: int = 4) -> float:
    torch.manual_seed(0)
    model = create_model(name, **config)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    data = {"L": torch.rand(batch, 1, crop, crop) * 2 - 1, "ab": (torch.rand(batch, 2, crop, crop) - 0.5) * 0.5,
            "seg": torch.randint(0, 9, (batch, crop, crop))}
    for index in range(steps + 1):
        if index == 1:
            start = time.perf_counter()
        loss = model.compute_losses(data)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return batch * steps / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--image-size", type=int, default=480, help="side of the generated source JPEGs, px (VOC photos are ~500x375)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batches", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="semcolor-bench-") as tmp:
        root = Path(tmp)
        archive = write_world_archive(WorldConfig(seed=1, num_train=args.images, num_val=8, image_size=args.image_size),
                                      root / "world.tar", progress=False)
        source = Synthetic(safe_extract(archive, root / "extracted", progress=False))
        recipes = {"128": (128, 64, 16), "352": (352, 352, 4)}  # shard size, crop, batch
        for name, (size, crop, batch) in recipes.items():
            stored = 360 if size == 352 else size
            shard_dir = convert_source(source, root / "shards" / name, size, samples_per_shard=32, workers=2,
                                       progress=False).parent
            loader = ShardBatches(shard_dir, "train", LoaderConfig(batch_size=batch, crop=crop, workers=args.workers, seed=0))
            baseline = torch.utils.data.DataLoader(PerFileDataset(source, stored, crop), batch_size=batch, shuffle=True,
                                                   num_workers=args.workers, generator=torch.Generator().manual_seed(0))
            figures[f"shards_sps_{name}"] = samples_per_second(loader, args.batches, batch)
            figures[f"baseline_sps_{name}"] = samples_per_second(baseline, args.batches, batch)
            figures[f"ratio_{name}"] = figures[f"shards_sps_{name}"] / figures[f"baseline_sps_{name}"]
            print(f"recipe {name}: shards {figures[f'shards_sps_{name}']:.1f} samples/s, per-file "
                  f"{figures[f'baseline_sps_{name}']:.1f} samples/s, ratio {figures[f'ratio_{name}']:.2f}", flush=True)
    demo = {
        "psc_full": ({"num_classes": 12, "width": 0.0625, "generator_layers": 4, "generator_channels": 32}, 64, 16),
        "sdc": ({"num_classes": 12, "width": 0.125}, 96, 8),
        "gridnet": ({"num_classes": 12, "width": 0.25}, 64, 8),
    }
    for name, (config, crop, batch) in demo.items():
        figures[f"train_sps_{name}"] = train_step_rate(name, config, crop, batch)
        print(f"training step {name} (demo size, 1 thread): {figures[f'train_sps_{name}']:.1f} samples/s", flush=True)
    figures["loader_over_training_psc"] = figures["shards_sps_128"] / figures["train_sps_psc_full"]
    figures["workers"] = args.workers
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
