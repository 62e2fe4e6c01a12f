"""What the trained PSC checkpoints do on the first validation images, beside trivial baselines.

    python bench/psc_quality.py [--models models/psc_full.pt,...] [--images 150] [--sample-images 48]
                                [--temperature 1.0] [--grid reports/psc_quality.png]

For each checkpoint: segmentation (mIoU, pixel accuracy, cross-entropy; for embed/full/seg_only) against the
class prior (CE of the val class frequencies = their entropy, the best constant predictor) and the majority
class, and models/gridnet_gray.pt on the same images when present; the world oracle
(``baselines.world_oracle``: a perfect sampler of the synthetic world at the models' 1/4 resolution, the
reference for every sample figure below; ``--oracle-draws``); colorization from samples at
``--temperature`` (2 per image, per-image seeds) against the same model's fast path (the mixture mean of f):
per-image PSNR, colorfulness beside the real images', MS-SSIM between the two samples of each input.
Every figure comes from ``semcolor.evaluation.measures`` / ``semcolor.evaluation.metrics``; this script only loads and prints.
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from semcolor.evaluation import measures as ev
from semcolor.evaluation import metrics
from semcolor.data.loader import LoaderConfig, ShardBatches, read_manifest
from semcolor.training.checkpoint import load_checkpoint, model_from_checkpoint
from semcolor.data.sources.synthetic import WorldConfig
from semcolor.evaluation.world_oracle import oracle_ab

SHARDS = Path("data/shards/synthetic/128")


def load_val(shard_dir: Path, count: int) -> ev.EvalSet:
    batches = ShardBatches(shard_dir, "val", LoaderConfig(batch_size=count, crop=None, flip=False, workers=0), train=False)
    batch = next(iter(batches))
    return ev.EvalSet(batch["L"], batch["ab"], batch["seg"], list(batch["key"]))


def baselines(data: ev.EvalSet, num_classes: int) -> dict[str, float]:
    labels = data.seg.numpy()
    counts = np.bincount(labels[labels != metrics.IGNORE_INDEX].ravel(), minlength=num_classes).astype(float)
    prior = counts / counts.sum()
    entropy = float(-(prior[prior > 0] * np.log(prior[prior > 0])).sum())
    majority = int(np.argmax(counts))
    confusion = metrics.confusion_matrix(np.full_like(labels, majority), labels, num_classes)
    real_rgb = ev.to_rgb8(data.L, data.ab)
    return {"class_prior_entropy": entropy, "majority_class_miou": metrics.mean_iou(confusion),
            "majority_class_pixel_accuracy": float(prior[majority]),
            "real_colorfulness": float(np.mean([metrics.colorfulness(image) for image in real_rgb]))}


def world_oracle(data: ev.EvalSet, sampled: ev.EvalSet, draws: int) -> dict[str, float]:
    """The figures of a perfect sampler of the synthetic world at the models' 1/4 resolution: each image's
    colours drawn again from the world's own probabilities (``semcolor.evaluation.world_oracle``), through
    the shard path, 4 x 4 means; scored with the models' measures on the same images. ``sample_*`` and
    ``ms_ssim_between_samples``: its first two draws; ``fast_psnr``: the mean of all ``draws``."""
    params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))["sources"]["synthetic"]
    config = WorldConfig(**{key: tuple(value) if isinstance(value, list) else value for key, value in params.items()})
    pooled = []
    for index, key in enumerate(data.keys):
        split, number = key.rsplit("_", 1)
        own, redrawn = oracle_ab(config, split, int(number), draws, data.L.shape[-1])
        if not torch.equal(own, data.ab[index]):  # the oracle's shard path must be the shards' own
            raise SystemExit(f"{key}: the rendered world image does not match its shard (another world config?)")
        pooled.append(F.avg_pool2d(redrawn, 4))
    oracle = torch.stack(pooled)  # (N, draws, 2, S/4, S/4)
    count = len(sampled)
    first = ev.colorization_metrics(sampled, oracle[:count, 0])
    return {"draws": draws, "fast_psnr": ev.colorization_metrics(data, oracle.mean(1))["psnr"],
            "fast_psnr_on_sampled": ev.colorization_metrics(sampled, oracle[:count].mean(1))["psnr"],
            "sample_psnr": first["psnr"], "sample_colorfulness": first["colorfulness"],
            **ev.diversity_metrics(sampled, oracle[:count, :2], None)}


def batched(function, tensor: torch.Tensor, size: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([function(tensor[start : start + size], start) for start in range(0, tensor.shape[0], size)])


def measure(path: Path, data: ev.EvalSet, sampled: ev.EvalSet, num_classes: int, temperature: float) -> tuple[dict, np.ndarray | None]:
    payload = load_checkpoint(path)
    model = model_from_checkpoint(payload)
    figures: dict[str, float] = {}
    if getattr(model, "seg_top", None) is not None:
        logits = batched(lambda L, _: model.segment(L), data.L, 50)
        figures.update({f"seg_{k}": v for k, v in ev.segmentation_metrics(data, logits, num_classes).items()})
    config = model.config
    column = None
    if config.gen_weight > 0:
        fast = batched(lambda L, _: model.colorize_fast(L), data.L, 50)
        figures.update({f"fast_{k}": v for k, v in ev.colorization_metrics(data, fast).items() if k in ("psnr", "colorfulness")})
        started = time.perf_counter()
        samples = batched(lambda L, start: model.sample(L, k=2, temperature=temperature,
                                                         seeds=range(start, start + L.shape[0])), sampled.L, 8)
        figures["sample_seconds_per_image"] = (time.perf_counter() - started) / len(sampled)
        first = ev.colorization_metrics(sampled, samples[:, 0])
        figures.update({"sample_psnr": first["psnr"], "sample_colorfulness": first["colorfulness"],
                        "fast_psnr_on_sampled": ev.colorization_metrics(sampled, fast[: len(sampled)])["psnr"]})
        figures.update(ev.diversity_metrics(sampled, samples, None))
        grid = list(range(min(6, len(sampled))))
        size = data.L.shape[-1]
        column = np.concatenate([ev.to_rgb8(sampled.L[grid], ev.upsample_ab(fast[grid].float(), size)),
                                 ev.to_rgb8(sampled.L[grid], ev.upsample_ab(samples[grid, 0].float(), size)),
                                 ev.to_rgb8(sampled.L[grid], ev.upsample_ab(samples[grid, 1].float(), size))], axis=2)
    figures["final_train"] = {k: v for k, v in (load_checkpoint(path).get("last_losses") or {}).items()}
    return figures, column


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="models/psc_plain.pt,models/psc_embed.pt,models/psc_full.pt,models/psc_seg_only.pt")
    parser.add_argument("--images", type=int, default=150)
    parser.add_argument("--sample-images", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--grid", default="reports/psc_quality.png")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--oracle-draws", type=int, default=8,
                        help="world-oracle draws per image (its fast path averages them); 0: no oracle")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    num_classes = len(read_manifest(SHARDS)["class_names"])
    data = load_val(SHARDS, args.images)
    sampled = data.subset(range(min(args.sample_images, len(data))))
    result: dict[str, object] = {"images": len(data), "sample_images": len(sampled), "temperature": args.temperature,
                                 "baselines": baselines(data, num_classes)}
    if args.oracle_draws:
        if args.oracle_draws < 2:
            parser.error("--oracle-draws needs at least 2 (MS-SSIM between two draws)")
        result["baselines"]["world_oracle"] = oracle = world_oracle(data, sampled, args.oracle_draws)
        print("world_oracle", json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in oracle.items()}))
    gridnet = Path("models/gridnet_gray.pt")
    if gridnet.is_file():
        model = model_from_checkpoint(gridnet)
        logits = batched(lambda L, _: model(L), data.L, 50)
        result["gridnet_gray"] = {f"seg_{k}": v for k, v in ev.segmentation_metrics(data, logits, num_classes).items()}
    columns = [ev.to_rgb8(sampled.L[:6], torch.zeros_like(sampled.ab[:6])), ev.to_rgb8(sampled.L[:6], sampled.ab[:6])]
    columns = [np.concatenate(columns, axis=2)]
    for name in args.models.split(","):
        path = Path(name)
        if not path.is_file():
            print(f"skip {path}: not found")
            continue
        figures, column = measure(path, data, sampled, num_classes, args.temperature)
        result[path.stem] = figures
        print(path.stem, json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items() if k != "final_train"}))
        if column is not None:
            columns.append(column)
    if args.grid and len(columns) > 1:
        Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
        rows = [np.concatenate(list(c), axis=0) for c in columns]  # each column: 6 images stacked
        Image.fromarray(np.concatenate([np.pad(r, ((0, 0), (0, 4), (0, 0)), constant_values=255) for r in rows], axis=1)).save(args.grid)
    print(json.dumps(result, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v))


if __name__ == "__main__":
    main()
