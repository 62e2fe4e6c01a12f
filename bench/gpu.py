"""GPU figures, in one run: U-Net 352 px inference latency and throughput, training samples/s of each
model at its paper setup with bf16 autocast, and the shard loader's feed rate beside them.

    python bench/gpu.py [--steps 10] [--latency-runs 50] [--loader-workers 1,2,4] [--no-loader] [--smoke]

Needs a CUDA device. Without one it prints a note saying that nothing was measured, the last line is
``{"gpu": false, ...}`` and it exits 0 (so ``make bench`` runs it everywhere). ``--smoke`` runs every
measurement on whatever device there is at toy sizes (1/16 widths, 64 px, 2 steps, a 64-image world), to
check the script itself where no GPU is at hand; its figures mean nothing.

- ``unet_latency_ms_{fp32,bf16}``: one 352x352 photo (batch 1), forward only, median over
  ``--latency-runs`` timed with CUDA events after warm-up (the paper reports 8 ms on a GeForce GT 730);
  ``unet_images_per_s_{fp32,bf16}``: batch 32, the same way.
- ``train_sps_<model>``: forward, losses, backward and Adam at the paper setup of configs/paper/*.yaml
  (paper width; PSC: 128 px, batch 32; GridNet and the U-Net: 352 crops, batch 16), bf16 autocast as the
  training loop uses on CUDA, median step time over ``--steps`` steps after 3 warm-up steps.
- ``loader_sps_<recipe>_w<k>``: samples/s of ``ShardBatches`` with k workers on a generated synthetic
  world (480 px JPEGs converted to the 128 and 360 px shards), each batch copied to the GPU;
  ``workers_to_feed_<model>`` = the fewest measured worker counts whose rate reaches the model's
  training rate (null if none does), and ``loader_per_worker_sps_<recipe>`` from one worker.
Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semcolor.models import create_model  # noqa: E402

SMOKE_WIDTH = {"width": 0.0625}
PAPER = {  # model config, crop, batch, shard recipe (configs/paper/*.yaml)
    "psc_full": ({"num_classes": 21, "width": 1.0, "generator_layers": 8, "generator_channels": 128}, 128, 32, "128"),
    "gridnet": ({"num_classes": 60, "width": 1.0}, 352, 16, "352"),
    "sdc": ({"num_classes": 60, "width": 1.0}, 352, 16, "352"),
}
RECIPES = {"128": (128, None), "352": (352, 352)}  # shard size, crop


def device_ms(fn, runs: int, device: torch.device, warmup: int = 5) -> float:
    """Median milliseconds of ``fn()``: CUDA events on the current stream on a GPU, wall time elsewhere."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            begin = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - begin))
    return statistics.median(times)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def unet_inference(device: torch.device, runs: int, smoke: bool) -> dict[str, float]:
    model = create_model("sdc", **SMOKE_WIDTH if smoke else {}).to(device).eval()
    model = model.to(memory_format=torch.channels_last)
    side = 64 if smoke else 352
    figures = {}
    for batch, key in ((1, "unet_latency_ms"), (2 if smoke else 32, "unet_images_per_s")):
        L = (torch.rand(batch, 1, side, side, device=device) * 2 - 1).contiguous(memory_format=torch.channels_last)
        seg = torch.randint(0, 60, (batch, side, side), device=device)
        for precision in ("fp32", "bf16"):
            def forward() -> None:
                with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                    model(L, seg)

            ms = device_ms(forward, runs if batch == 1 else max(5, runs // 5), device)
            figures[f"{key}_{precision}"] = ms if batch == 1 else 1000 * batch / ms
    return figures


def train_rate(name: str, config: dict, crop: int, batch: int, steps: int, device: torch.device) -> float:
    """Samples/s of paper-setup training steps with bf16 autocast (median step)."""
    torch.manual_seed(0)
    model = create_model(name, **config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    data = {"L": torch.rand(batch, 1, crop, crop, device=device) * 2 - 1,
            "ab": (torch.rand(batch, 2, crop, crop, device=device) - 0.5) * 0.5,
            "seg": torch.randint(0, config["num_classes"], (batch, crop, crop), device=device)}

    def step() -> None:
        with torch.autocast(device.type, torch.bfloat16):
            loss = model.compute_losses(data)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return 1000 * batch / device_ms(step, steps, device, warmup=3 if device.type == "cuda" else 1)


def loader_rates(workers: list[int], batches: int, device: torch.device, smoke: bool) -> dict[str, float]:
    from semcolor.extract import safe_extract
    from semcolor.loader import LoaderConfig, ShardBatches
    from semcolor.shard_settings import ShardSettings
    from semcolor.shards import convert_source
    from semcolor.sources.synthetic import Synthetic, WorldConfig, write_world_archive

    figures = {}
    with tempfile.TemporaryDirectory(prefix="semcolor-gpu-bench-") as tmp:
        root = Path(tmp)
        world = WorldConfig(seed=1, num_train=64 if smoke else 1024, num_val=8, image_size=480)
        archive = write_world_archive(world, root / "world.tar", progress=False)
        source = Synthetic(safe_extract(archive, root / "extracted", progress=False))
        for recipe, (size, crop) in RECIPES.items():
            shard_dir = convert_source(source, root / recipe, size, settings=ShardSettings(samples_per_shard=64),
                                       workers=min(8, os.cpu_count() or 1), progress=False).parent
            batch = 4 if smoke else 32 if recipe == "128" else 16
            for count in workers:
                loader = ShardBatches(shard_dir, "train", LoaderConfig(batch_size=batch, crop=crop, workers=count))
                iterator = iter(loader)
                next(iterator)
                start, seen = time.perf_counter(), 0
                for _ in range(batches):
                    try:
                        chunk = next(iterator)
                    except StopIteration:
                        break
                    for key in ("L", "ab", "seg"):
                        chunk[key].to(device, non_blocking=True)
                    seen += len(chunk["key"])
                synchronize(device)
                figures[f"loader_sps_{recipe}_w{count}"] = seen / (time.perf_counter() - start)
                print(f"loader {recipe} px, {count} worker(s): {figures[f'loader_sps_{recipe}_w{count}']:.0f} samples/s",
                      flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--latency-runs", type=int, default=50)
    parser.add_argument("--loader-workers", default="1,2,4", help="comma-separated worker counts")
    parser.add_argument("--loader-batches", type=int, default=24)
    parser.add_argument("--no-loader", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on any device: checks the script")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.latency_runs, args.loader_batches = 2, 3, 3
    elif not torch.cuda.is_available():
        note = ("no CUDA device here: bench/gpu.py measures GPU figures only, so nothing was measured. "
                "CPU figures: bench/unet.py (inference) and bench/loader.py (loader, CPU training steps).")
        print(note)
        print(json.dumps({"gpu": False, "note": note}))
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    figures: dict[str, object] = {
        "gpu": device.type == "cuda", "smoke": args.smoke, "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    if args.smoke:
        print("smoke run: toy sizes, the figures only show that the script works", flush=True)
    figures.update(unet_inference(device, args.latency_runs, args.smoke))
    print(f"U-Net 352 px: {figures['unet_latency_ms_fp32']:.2f} ms fp32, {figures['unet_latency_ms_bf16']:.2f} ms "
          f"bf16 per photo (paper: 8 ms on a GT 730); {figures['unet_images_per_s_bf16']:.0f} images/s bf16, "
          "batch 32", flush=True)
    for name, (config, crop, batch, _) in PAPER.items():
        if args.smoke:
            config, crop, batch = {**config, **SMOKE_WIDTH, **({"generator_channels": 16} if "generator_channels" in config else {})}, 64, 2
        figures[f"train_sps_{name}"] = train_rate(name, config, crop, batch, args.steps, device)
        print(f"training {name} ({'toy' if args.smoke else 'paper setup'}, {crop} px, batch {batch}, bf16): "
              f"{figures[f'train_sps_{name}']:.1f} samples/s", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if not args.no_loader:
        workers = [int(w) for w in args.loader_workers.split(",")]
        figures.update(loader_rates(workers, args.loader_batches, device, args.smoke))
        for recipe in RECIPES:
            figures[f"loader_per_worker_sps_{recipe}"] = figures[f"loader_sps_{recipe}_w{workers[0]}"] / max(workers[0], 1)
        for name, (_, _, _, recipe) in PAPER.items():
            enough = [w for w in workers if figures[f"loader_sps_{recipe}_w{w}"] >= figures[f"train_sps_{name}"]]
            figures[f"workers_to_feed_{name}"] = min(enough) if enough else None
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
