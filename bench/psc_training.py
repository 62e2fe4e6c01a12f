"""Training throughput of one Pixelated Semantic Colorization step, at the demo's width and the paper's.

    python bench/psc_training.py [--rounds 3] [--threads 1] [--paper-batch 1] [--skip-paper]

Each setup is one full optimizer step of ``psc_<variant>`` (forward, L_sum, backward, gradient clipping,
Adam) on random inputs of the setup's crop size, weights data-dependently initialised first:

* ``demo_full`` / ``demo_seg_only``: params.yaml's ``train_psc`` model (width 1/16, g of 32 channels) and
  loader (batch 8, 64 px crops) - what ``make demo`` trains;
* ``paper_full``: width 1.0, g 8 x 128, 128 px inputs (configs/paper/psc_voc2012_aug.yaml) at
  ``--paper-batch`` (the paper's 32 does not fit a CPU's time; samples/s is per sample anyway).

Reported per setup: seconds per step (best of ``--rounds``, after one warm-up step), samples/s, the step's
floating-point operations (``torch.utils.flop_counter``; convolutions and matrix products only) and the
GFLOP/s they run at, beside the GFLOP/s of a 2048^3 float32 matmul measured in the same run
(``ratio_to_matmul``: how much of the machine's dense throughput the step uses). Timings on a shared machine
are noisy: compare ratios, not seconds. The last line printed is one JSON object with every measurement.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from semcolor.models import create_model

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def matmul_gflops(rounds: int, size: int = 2048) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(rounds))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _batch(batch: int, size: int, num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"L": torch.rand(batch, 1, size, size, generator=g) * 2 - 1,
            "ab": (torch.rand(batch, 2, size, size, generator=g) - 0.5) * 0.6,
            "seg": torch.randint(0, num_classes, (batch, size, size), generator=g)}


def measure(name: str, model_name: str, config: dict, batch: int, size: int, rounds: int) -> dict:
    torch.manual_seed(0)
    model = create_model(model_name, **config)
    data = _batch(batch, size, config["num_classes"])
    model.data_dependent_init(data)
    parameters = list(model.parameters())
    optimizer = torch.optim.Adam(parameters, lr=1e-3, betas=(0.95, 0.9995), foreach=True)  # as the loop does

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model.compute_losses(data)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(parameters, 5.0, foreach=True)
        optimizer.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step()  # also the warm-up
    seconds = min(_timed(step) for _ in range(rounds))
    flops = counter.get_total_flops()
    return {"setup": name, "model": model_name, "batch": batch, "size": size,
            "width": config.get("width", 1.0), "generator_channels": model.generator.channels,
            "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
            "seconds_per_step": round(seconds, 4), "samples_per_second": round(batch / seconds, 2),
            "gflop_per_sample": round(flops / batch / 1e9, 3), "gflops": round(flops / seconds / 1e9, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--paper-batch", type=int, default=1)
    parser.add_argument("--skip-paper", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = yaml.safe_load(PARAMS.read_text())["train_psc"]
    demo_model, loader = params["model"], params["loader"]
    seg_only = {**demo_model, **params["variants"]["seg_only"].get("config", {})}
    setups = [("demo_full", "psc_full", demo_model, loader["batch_size"], loader["crop"]),
              ("demo_seg_only", params["variants"]["seg_only"]["model"], seg_only, loader["batch_size"], loader["crop"])]
    if not args.skip_paper:
        paper = {"num_classes": 21, "width": 1.0, "num_mixtures": 10, "generator_layers": 8,
                 "generator_channels": 128, "aspp_rates": [6, 12, 18], "seg_weight": 100.0}
        setups.append(("paper_full", "psc_full", paper, args.paper_batch, 128))
    baseline = matmul_gflops(args.rounds)
    print(f"matmul 2048^3 float32: {baseline:.1f} GFLOP/s ({args.threads} thread(s))")
    results = []
    for name, model_name, config, batch, size in setups:
        row = measure(name, model_name, config, batch, size, args.rounds)
        row["ratio_to_matmul"] = round(row["gflops"] / baseline, 3)
        results.append(row)
        print(f"{name:14s} batch {batch:2d} x {size} px: {row['seconds_per_step']:.3f} s/step, "
              f"{row['samples_per_second']:.1f} samples/s, {row['gflop_per_sample']:.2f} GFLOP/sample, "
              f"{row['gflops']:.1f} GFLOP/s = {row['ratio_to_matmul']:.2f} x matmul")
    print(json.dumps({"matmul_gflops": round(baseline, 2), "threads": args.threads, "setups": results}))


if __name__ == "__main__":
    main()
