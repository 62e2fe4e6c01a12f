"""A tiny colorizer and fixed batches for the training-loop tests, runnable as a script so that tests
can kill it mid-run (resume) or start it under torchrun (DDP equivalence).

    python -m tests.training_toy --checkpoint CK --steps N [--ddp] [--global-batch B] [--sleep S]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from semcolor.training.distributed import cleanup_distributed, init_distributed
from semcolor.training.loop import InMemoryBatches, TrainConfig, train


class ToyColorizer(nn.Module):
    def __init__(self, width: int = 8, dropout: float = 0.1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Dropout2d(dropout),
                                  nn.Conv2d(width, 2, 3, padding=1))

    def compute_losses(self, batch):
        prediction = self.body(batch["L"])
        return {"loss": F.mse_loss(prediction, batch["ab"])}


def make_batches(count: int = 6, batch: int = 8, size: int = 16, seed: int = 0, rank: int = 0, world: int = 1):
    """``count`` global batches of ``batch`` samples; under DDP each rank gets its contiguous share."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for index in range(count):
        L = torch.rand(batch, 1, size, size, generator=generator) * 2 - 1
        ab = torch.tanh(torch.cat([L.roll(1, -1), -L], dim=1)) * 0.5
        keys = [f"sample_{index}_{i}" for i in range(batch)]
        share = slice(rank * batch // world, (rank + 1) * batch // world)
        batches.append({"L": L[share], "ab": ab[share], "key": keys[share]})
    return InMemoryBatches(batches)


def build(seed: int = 0, dropout: float = 0.1) -> ToyColorizer:
    torch.manual_seed(seed)
    return ToyColorizer(dropout=dropout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds per step, so a test can kill mid-run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    context = init_distributed(torch.device("cpu"))
    model = build(dropout=args.dropout)
    batches = make_batches(batch=args.global_batch, rank=context.rank, world=context.world_size)
    if args.sleep:
        original = model.compute_losses

        def slow(batch):
            time.sleep(args.sleep)
            return original(batch)

        model.compute_losses = slow
    config = TrainConfig(steps=args.steps, lr=1e-2, ema_decay=0.9, checkpoint_every=args.checkpoint_every,
                         log_every=1, device="cpu", progress=False)
    train(model, "toy", {"width": 8}, batches, config, args.checkpoint, context=context)
    cleanup_distributed()


if __name__ == "__main__":
    main()
